"""From decoded latents to pixels, in float numpy (SPEC.md section 9.7).

Every grid is brought to full resolution by repeated 2x upsampling with one learned
4-tap filter (mirrored for the odd phase, edges replicated), the grids are stacked as
per-pixel features, each pixel is routed to one expert MLP (ReLU hidden layers, affine
output), and an optional 3x3 residual refinement follows. Only this part is floating
point; its tolerance is discussed in the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nxcodec.latent.context import ONE, FixedLayer, fixed_mlp, manager_inputs, route

ROWS = 1 << 14  # pixels per block of the per-pixel networks (bounds memory)


@dataclass
class Synthesis:
    """The float networks of a stream, dequantized."""

    upsample: np.ndarray  # (4,) taps k0..k3 of the even phase
    experts: list[tuple[np.ndarray, np.ndarray]]  # per layer: weight (K, fan_in, fan_out), bias (K, fan_out)
    refine: list[tuple[np.ndarray, np.ndarray]]  # empty, or two layers: weight (out, in, 3, 3), bias (out,)
    manager: list[FixedLayer]  # empty when K = 1


def upsample2(x: np.ndarray, taps: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Double ``x`` along ``axis`` and keep the first ``size`` samples.

    Output ``2i`` is ``k0 x[i-2] + k1 x[i-1] + k2 x[i] + k3 x[i+1]`` and output ``2i+1`` is
    ``k3 x[i-1] + k2 x[i] + k1 x[i+1] + k0 x[i+2]``, indices clamped to the array.
    """
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    p = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(2, 2)], mode="edge")
    k0, k1, k2, k3 = (x.dtype.type(t) for t in taps)
    out = np.empty((*x.shape[:-1], 2 * n), dtype=x.dtype)
    out[..., 0::2] = k0 * p[..., 0:n] + k1 * p[..., 1 : n + 1] + k2 * p[..., 2 : n + 2] + k3 * p[..., 3 : n + 3]
    out[..., 1::2] = k3 * p[..., 1 : n + 1] + k2 * p[..., 2 : n + 2] + k1 * p[..., 3 : n + 3] + k0 * p[..., 4 : n + 4]
    return np.moveaxis(out[..., :size], -1, axis)


def features(grids: list[np.ndarray], taps: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """``(levels, rows, cols)`` in ``dtype``: grid l upsampled l times to the size of grid 0.

    Computed as a cascade (the coarsest grid is doubled, stacked under the next finer one,
    and the stack doubled again), which is the same arithmetic with fewer steps.
    """
    x = (grids[-1].astype(dtype) / dtype(ONE))[None]
    for g in grids[-2::-1]:
        x = upsample2(upsample2(x, taps, 1, g.shape[0]), taps, 2, g.shape[1])
        x = np.concatenate([(g.astype(dtype) / dtype(ONE))[None], x])
    return x


def mlp(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """An expert: ReLU hidden layers, affine output (``layers``: weight (fan_in, fan_out), bias (fan_out,))."""
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def _conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Zero-padded 3x3 convolution (cross-correlation) of ``(in, rows, cols)`` with ``(out, in, 3, 3)``.

    Computed in bands of rows, so the nine shifted copies of the input stay small.
    """
    c, h, wd = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    taps = w.reshape(w.shape[0], c, 9)
    out = np.empty((w.shape[0], h, wd), dtype=x.dtype)
    band = max(1, ROWS // wd)
    for r in range(0, h, band):
        n = min(band, h - r)
        cols = np.stack([p[:, r + dy : r + dy + n, dx : dx + wd] for dy in range(3) for dx in range(3)], axis=1)
        out[:, r : r + n] = np.tensordot(taps, cols, axes=([1, 2], [0, 1]))
    out += b[:, None, None]
    return out


def expert_choice(grids: list[np.ndarray], syn: Synthesis) -> np.ndarray:
    """The expert of every pixel (raster order), from the integer latents only."""
    rows, cols = grids[0].shape
    n_experts = syn.experts[0][0].shape[0]
    if n_experts == 1:
        return np.zeros(rows * cols, dtype=np.int64)
    out = np.empty(rows * cols, dtype=np.int64)
    for a in range(0, rows * cols, ROWS):
        r, c = np.divmod(np.arange(a, min(a + ROWS, rows * cols), dtype=np.int64), cols)
        out[a : a + r.size] = route(fixed_mlp(manager_inputs(grids, r, c), syn.manager))
    return out


def synthesize(grids: list[np.ndarray], syn: Synthesis, channels: int,
               dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Network outputs ``(rows * cols, channels)`` in raster order, and each pixel's expert.

    8-bit images are synthesized in binary32 (SPEC.md 9.7), 16-bit images and audio planes in binary64 (9.7,
    10.3): a 16-bit sample step is too fine for binary32's rounding to leave samples unchanged.
    """
    rows, cols = grids[0].shape
    n = rows * cols
    feats = features(grids, syn.upsample, dtype).reshape(len(grids), n)
    choice = expert_choice(grids, syn)
    experts = [[(w[k].astype(dtype), b[k].astype(dtype)) for w, b in syn.experts]
               for k in range(syn.experts[0][0].shape[0])]
    out = np.empty((n, channels), dtype=dtype)
    for a in range(0, n, ROWS):  # blocks of pixels, each routed to its expert
        block = np.ascontiguousarray(feats[:, a : a + ROWS].T)  # (pixels, levels)
        if len(experts) == 1:
            out[a : a + ROWS] = mlp(block, experts[0])
            continue
        which = choice[a : a + ROWS]
        for k, layers in enumerate(experts):
            sel = np.flatnonzero(which == k)
            if sel.size:
                out[a + sel] = mlp(block[sel], layers)
    if syn.refine:
        x = out.T.reshape(channels, rows, cols)
        (w1, b1), (w2, b2) = ((w.astype(dtype), b.astype(dtype)) for w, b in syn.refine)
        x = x + _conv3x3(np.maximum(_conv3x3(x, w1, b1), 0), w2, b2)
        out = x.reshape(channels, -1).T
    return out, choice
