"""The modified discrete cosine transform of latent audio streams (SPEC.md section 10.3).

A clip of ``n`` samples with hop ``N`` has ``T = ceil(n / N) + 1`` frames. Frame ``f``
covers the samples ``(f - 1) N .. (f + 1) N - 1`` (zero outside the clip) under the sine
window, and has ``N`` coefficients::

    X[f, k] = sqrt(2 / N) * sum_n w[n] x[(f - 1) N + n] cos(pi / N (n + 1/2 + N / 2)(k + 1/2))

With this window and scale the transform is orthonormal (time-domain aliasing cancels
between neighbouring frames), so a squared error on the coefficients is the same squared
error on the samples. Both directions are computed with one FFT of length ``2N`` per frame.
:class:`Inverse` runs frame block by frame block, keeping the half frame that overlaps
the next block, so a decoder's memory is bounded by its block, not by the clip.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MIN_HOP_LOG2 = 6
MAX_HOP_LOG2 = 12


def frame_count(samples: int, hop: int) -> int:
    """T: the frames that cover ``samples`` samples."""
    return -(-samples // hop) + 1


@lru_cache(maxsize=8)
def _twiddles(hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.arange(2 * hop)
    k = np.arange(hop)
    window = np.sin(np.pi * (n + 0.5) / (2 * hop))
    pre = np.exp(-1j * np.pi * n / (2 * hop))
    post = np.exp(-1j * np.pi * (0.5 + hop / 2) * (k + 0.5) / hop) * np.sqrt(2.0 / hop)
    return window, pre, post


def forward(x: np.ndarray, hop: int, first: int = 0, stop: int | None = None) -> np.ndarray:
    """Coefficients ``(frames, hop)`` of frames ``first .. stop - 1`` of the clip ``x`` (1-D, float)."""
    total = frame_count(len(x), hop)
    stop = total if stop is None else stop
    start = (first - 1) * hop
    padded = np.zeros((stop - first + 1) * hop)
    lo, hi = max(start, 0), min(stop * hop, len(x))
    if hi > lo:
        padded[lo - start : hi - start] = x[lo:hi]
    frames = np.lib.stride_tricks.sliding_window_view(padded, 2 * hop)[::hop]
    window, pre, post = _twiddles(hop)
    spectrum = np.fft.fft(frames * window * pre, axis=1)[:, :hop]
    return np.real(spectrum * post)


class Inverse:
    """Overlap-add synthesis, one block of frames at a time, in clip order."""

    def __init__(self, hop: int) -> None:
        self.hop = hop
        self.tail = np.zeros(hop)
        self.started = False

    def push(self, coefficients: np.ndarray) -> np.ndarray:
        """The samples completed by the next frames ``(frames, hop)``: ``frames * hop`` of them
        (``hop`` fewer for the first block, whose first half frame lies before the clip)."""
        hop = self.hop
        window, pre, post = _twiddles(hop)
        spec = np.zeros((coefficients.shape[0], 2 * hop), dtype=np.complex128)
        spec[:, :hop] = coefficients / post * (2.0 / hop)
        frames = np.real(np.fft.ifft(spec, axis=1) * (2 * hop) / pre) * window
        out = np.zeros((coefficients.shape[0] + 1) * hop)
        for i, frame in enumerate(frames):
            out[i * hop : i * hop + 2 * hop] += frame
        out[:hop] += self.tail
        self.tail = out[-hop:].copy()
        done = out[:-hop]
        if not self.started:
            self.started = True
            done = done[hop:]
        return done
