"""Rounding the float synthesis weights to their steps with error feedback (GPTQ), numpy only.

Rounding each weight to its nearest step ignores that a layer's inputs are correlated: the
error of one rounded weight can be mostly undone by nudging the weights of the inputs that
move with it before they are rounded in turn. Given the second moment ``H = X^T X / N`` of a
layer's inputs ``X`` (what :func:`input_moments` measures on the fitted image), the rows of
the weight matrix are rounded one after another and each row's error is spread over the rows
not yet rounded through the Cholesky factor of ``H^-1`` (Frantar et al., "GPTQ", ICLR 2023),
which keeps the layer's outputs closer to the float ones than nearest rounding does. The
coded integers are as the decoder always reads them; only the encoder's choice changes.
"""

from __future__ import annotations

import numpy as np

from nxcodec.latent.context import ONE
from nxcodec.latent.synthesis import ROWS, features, mlp

DAMP = 0.01  # added to H's diagonal, as a part of its mean: keeps H invertible where inputs are (nearly) dependent


def round_with_feedback(w: np.ndarray, step: float, moment: np.ndarray) -> np.ndarray:
    """``w`` (fan_in, fan_out) as integer multiples of ``step``, chosen so that ``X w`` moves least for inputs whose
    second moment is ``moment`` (fan_in, fan_in). With uncorrelated inputs this is nearest rounding."""
    scale = float(np.mean(np.diag(moment)))
    if not scale > 0:
        return np.rint(w / step).astype(np.int64)
    h = moment + DAMP * scale * np.eye(len(moment))
    try:
        u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: row i spreads row i's error over rows i+1..
    except np.linalg.LinAlgError:
        return np.rint(w / step).astype(np.int64)
    rest = w.astype(np.float64) / step
    q = np.empty_like(rest)
    for i in range(len(rest)):
        q[i] = np.rint(rest[i])
        err = (rest[i] - q[i]) / u[i, i]
        rest[i + 1 :] -= np.outer(u[i, i + 1 :], err)
    return q.astype(np.int64)


def as_matrix(name: str, w: np.ndarray) -> np.ndarray:
    """A synthesis weight as the (fan_in, fan_out) matrices of its layer: (K, fan_in, fan_out) for the experts;
    a 3x3 convolution's (out, in, 3, 3) as (1, in x 9, out), its inputs being 3x3 patches (:func:`_patches`)."""
    if name.startswith("refine."):
        return w.reshape(w.shape[0], -1).T[None]
    return w


def from_matrix(name: str, q: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """:func:`as_matrix` undone."""
    if name.startswith("refine."):
        return q[0].T.reshape(shape)
    return q


def _layers(weights: dict[str, np.ndarray], prefix: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(weight name, weight, bias) of the layers named ``prefix<j>``, in stream order, as float64."""
    return [(n, weights[n].astype(np.float64), weights[n[: -len("weight")] + "bias"].astype(np.float64))
            for n in weights if n.startswith(prefix) and n.endswith(".weight")]


def _routes(weights: dict[str, np.ndarray], grids: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    """The expert of each pixel as the float manager picks it (one expert: all zero)."""
    manager = [(w, b) for _, w, b in _layers(weights, "manager.")]
    if not manager:
        return np.zeros(rows * cols, dtype=np.int64)
    r, c = np.divmod(np.arange(rows * cols), cols)
    inputs = np.stack([g[r >> l, c >> l] for l, g in enumerate(grids)], axis=1) / ONE
    return np.argmax(mlp(inputs, manager), axis=1)


def _patches(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of ``x`` (channels, rows, cols) as zero-padded 3x3 patches, ((b - a) x cols, channels x 9), in
    the order of a 3x3 weight's (in, 3, 3)."""
    c, h, w = x.shape
    p = np.pad(x[:, max(a - 1, 0) : b + 1], ((0, 0), (1 if a == 0 else 0, 1 if b == h else 0), (1, 1)))
    cols = np.stack([p[:, dy : dy + b - a, dx : dx + w] for dy in range(3) for dx in range(3)], axis=1)
    return cols.reshape(c * 9, -1).T


def input_moments(weights: dict[str, np.ndarray], latents: list[np.ndarray], channels: int
                  ) -> dict[str, np.ndarray]:
    """For each float synthesis weight (the experts' layers, the refinement's), the second moment of its layer's
    inputs over the image, ``(K, fan_in, fan_in)`` (one per expert, over the pixels routed to it; one for a
    refinement layer), as the float networks see the fitted latents ``latents`` (latent units, finest first).

    Whole-image arrays are binary32, as the decoder's (the moments are sums in binary64 over blocks of pixels):
    this adds about what one decoding of the image takes to the coder's memory."""
    grids = [lat * ONE for lat in latents]
    rows, cols = grids[0].shape
    n = rows * cols
    feats = features(grids, weights["upsample"], np.float32).reshape(len(grids), n)
    experts = _layers(weights, "experts.")
    k_count = experts[0][1].shape[0]
    which = _routes(weights, grids, rows, cols)
    out: dict[str, np.ndarray] = {name: np.zeros((k_count, w.shape[1], w.shape[1])) for name, w, _ in experts}
    counts = np.bincount(which, minlength=k_count)
    synthesized = np.empty((n, channels), dtype=np.float32)
    for a in range(0, n, ROWS):
        block = feats[:, a : a + ROWS].T.astype(np.float64)
        for k in range(k_count):
            sel = np.flatnonzero(which[a : a + ROWS] == k)
            x = block[sel]
            for i, (name, w, b) in enumerate(experts):
                out[name][k] += x.T @ x
                x = x @ w[k] + b[k]
                if i < len(experts) - 1:
                    x = np.maximum(x, 0)
            synthesized[a + sel] = x
    for name, _, _ in experts:
        out[name] /= np.maximum(counts, 1)[:, None, None]
    x = synthesized.T.reshape(channels, rows, cols)
    band = max(1, ROWS // cols)
    for i, (name, w, b) in enumerate(_layers(weights, "refine.")):
        moment, y = np.zeros((w[0].size, w[0].size)), np.empty((w.shape[0], rows, cols), dtype=np.float32)
        for a in range(0, rows, band):
            p = _patches(x, a, min(a + band, rows)).astype(np.float64)
            moment += p.T @ p
            y[:, a : a + band] = (p @ as_matrix(name, w)[0] + b).T.reshape(w.shape[0], -1, cols)
        out[name] = moment[None] / n
        x = np.maximum(y, 0)
    return out
