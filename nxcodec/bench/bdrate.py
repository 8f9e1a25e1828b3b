"""Bjontegaard delta rate and delta PSNR (VCEG-M33): a cubic fit on log-rate, over the overlap."""

from __future__ import annotations

import numpy as np


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Integral over [lo, hi] of the cubic that fits y(x) in least squares."""
    p = np.polyint(np.polyfit(x, y, 3))
    return float(np.polyval(p, hi) - np.polyval(p, lo))


def _check(rate: list[float], psnr: list[float]) -> tuple[np.ndarray, np.ndarray]:
    r, d = np.asarray(rate, dtype=float), np.asarray(psnr, dtype=float)
    if r.size != d.size or r.size < 4:
        raise ValueError("a BD measure needs at least 4 rate-distortion points per curve")
    if np.any(r <= 0):
        raise ValueError("rates must be positive")
    return r, d


def bd_rate(rate_ref: list[float], psnr_ref: list[float], rate_test: list[float], psnr_test: list[float]) -> float:
    """Average rate difference of the test curve against the reference, in percent, at equal PSNR.

    Negative means the test codec needs fewer bits. NaN when the PSNR ranges do not overlap.
    """
    r1, d1 = _check(rate_ref, psnr_ref)
    r2, d2 = _check(rate_test, psnr_test)
    lo, hi = max(d1.min(), d2.min()), min(d1.max(), d2.max())
    if hi <= lo:
        return float("nan")
    avg = (_integral(d2, np.log(r2), lo, hi) - _integral(d1, np.log(r1), lo, hi)) / (hi - lo)
    return float((np.exp(avg) - 1) * 100)


def bd_psnr(rate_ref: list[float], psnr_ref: list[float], rate_test: list[float], psnr_test: list[float]) -> float:
    """Average PSNR difference (dB) of the test curve against the reference at equal rate."""
    r1, d1 = _check(rate_ref, psnr_ref)
    r2, d2 = _check(rate_test, psnr_test)
    l1, l2 = np.log(r1), np.log(r2)
    lo, hi = max(l1.min(), l2.min()), min(l1.max(), l2.max())
    if hi <= lo:
        return float("nan")
    return float((_integral(l2, d2, lo, hi) - _integral(l1, d1, lo, hi)) / (hi - lo))
