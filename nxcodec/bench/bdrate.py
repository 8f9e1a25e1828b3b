"""Comparing rate-distortion curves: Bjontegaard delta rate and delta PSNR (VCEG-M33, a cubic fit on log-rate, over
the overlap), and one codec's PSNR at another's rate on one image."""

from __future__ import annotations

import numpy as np


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Integral over [lo, hi] of the cubic that fits y(x) in least squares."""
    p = np.polyint(np.polyfit(x, y, 3))
    return float(np.polyval(p, hi) - np.polyval(p, lo))


def _check(rate: list[float], psnr: list[float], least: int = 4) -> tuple[np.ndarray, np.ndarray]:
    r, d = np.asarray(rate, dtype=float), np.asarray(psnr, dtype=float)
    if r.size != d.size:
        raise ValueError(f"{r.size} rates but {d.size} PSNRs")
    if r.size < least:
        raise ValueError(f"this needs at least {least} rate-distortion points per curve")
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


def psnr_at_rate(rate: list[float], psnr: list[float], at: float) -> float | None:
    """The PSNR of a codec's points (one image) at rate ``at``: linear in log-rate between the two points around
    it (the lower and higher rate nearest it; of points at the same rate, the best), so no curve is fitted; None
    outside the points' range, where it would be a guess."""
    r, d = _check(rate, psnr, least=1)
    if not r.min() <= at <= r.max():
        return None
    lo, hi = r[r <= at].max(), r[r >= at].min()
    d_lo, d_hi = d[r == lo].max(), d[r == hi].max()
    if lo == hi:
        return float(d_lo)
    t = (np.log(at) - np.log(lo)) / (np.log(hi) - np.log(lo))
    return float(d_lo + t * (d_hi - d_lo))
