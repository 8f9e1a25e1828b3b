"""Entropy coding of integer weights with constriction's range coder.

Each tensor's integers are coded under a discrete Laplace (two-sided geometric) prior
whose frequency table is built from four integers read from the stream, with integer
arithmetic only (bitstream/SPEC.md section 6). The table sums to exactly 2**24;
constriction derives its own coding table from it in binary64 arithmetic that is exact for
such tables (SPEC.md, "The coder's table"), so every machine codes the same probabilities.
The coder is constriction 0.5.0's range coder, which SPEC.md section 6 specifies to the
bit; pyproject.toml pins that release.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import constriction
import numpy as np

PRECISION_BITS = 24
TOTAL = 1 << PRECISION_BITS
MAX_SYMBOL = 32767  # |integer weight| and the prior's range stay within int16
MAX_ALPHABET = 1 << 16
_G0 = 1 << 30  # unnormalised frequency of the mode


@dataclass(frozen=True)
class LaplacePrior:
    """A two-sided geometric prior over the integers ``lo..hi``, peaked at ``mu``.

    The frequency of ``k`` decays by the factor ``decay / 65536`` per step away from ``mu``.
    """

    lo: int
    hi: int
    mu: int
    decay: int

    def __post_init__(self) -> None:
        if not -MAX_SYMBOL <= self.lo <= self.mu <= self.hi <= MAX_SYMBOL:
            raise ValueError("prior range must satisfy lo <= mu <= hi within int16")
        if self.hi - self.lo + 1 > MAX_ALPHABET:
            raise ValueError("prior alphabet too large")
        if not 0 <= self.decay <= 65535:
            raise ValueError("decay must fit in 16 bits")

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    def frequencies(self) -> np.ndarray:
        """Integer frequencies of ``lo..hi``: each at least 1, summing to exactly 2**24 (SPEC.md section 6)."""
        n = self.size
        span = max(self.mu - self.lo, self.hi - self.mu)
        g = _geometric(self.decay, _round_up(span + 1))[: span + 1]
        raw = g[np.abs(np.arange(self.lo - self.mu, self.hi - self.mu + 1, dtype=np.int64))]
        freq = 1 + (raw * (TOTAL - n)) // int(raw.sum())
        freq[self.mu - self.lo] += TOTAL - int(freq.sum())
        return freq

    def code_length_bits(self, symbols: np.ndarray) -> float:
        """Ideal code length of ``symbols`` under this prior (within a few bits of the coder)."""
        if symbols.size == 0:
            return 0.0
        freq = self.frequencies()
        return float(np.sum(PRECISION_BITS - np.log2(freq[symbols.astype(np.int64) - self.lo])))


def _round_up(length: int) -> int:
    """``length`` rounded up to a power of two (at least 256), so that cached sequences serve many tensors."""
    return max(256, 1 << (length - 1).bit_length())


@functools.lru_cache(maxsize=64)
def _geometric(decay: int, length: int) -> np.ndarray:
    """``g[0..length-1]`` of SPEC.md section 6: ``g[0] = 2**30``, ``g[d+1] = floor(g[d] * decay / 65536)``.

    Iterated floors have no closed form, so the geometric part is a loop, but it stops
    early: with ``m = 65536 - decay``, ``floor(g * decay / 65536) = g - ceil(g * m / 65536)``,
    which is ``g - 1`` once ``g * m <= 65536``; from there on the sequence counts down by one
    to zero and is filled in one step. A large decay (slow loop) meets long spans only in
    the few tensors that declare them, and the decoder bounds their total (``container``).
    The array is read-only (it is shared through the cache).
    """
    m = 65536 - decay
    out = []
    value = _G0
    while len(out) < length and value * m > 65536:
        out.append(value)
        value = (value * decay) >> 16
    g = np.zeros(length, dtype=np.int64)
    g[: len(out)] = out
    rest = length - len(out)
    if rest > 0 and value > 0:  # the arithmetic tail: value, value - 1, ..., 1, then zeros
        k = min(rest, value)
        g[len(out) : len(out) + k] = np.arange(value, value - k, -1, dtype=np.int64)
    g.flags.writeable = False
    return g


def fit_prior(symbols: np.ndarray) -> LaplacePrior:
    """The prior that codes ``symbols`` in the fewest bits, among a few decays near the MLE."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    if symbols.size == 0:
        return LaplacePrior(0, 0, 0, 0)
    lo, hi = int(symbols.min()), int(symbols.max())
    if lo < -MAX_SYMBOL or hi > MAX_SYMBOL or hi - lo + 1 > MAX_ALPHABET:
        raise ValueError("integer weights out of the coder's range; use a coarser step")
    mu = int(np.clip(np.round(np.median(symbols)), lo, hi))
    scale = max(float(np.mean(np.abs(symbols - mu))), 1e-3)
    best: LaplacePrior | None = None
    best_bits = math.inf
    for factor in (0.7, 0.85, 1.0, 1.2, 1.45):
        decay = int(np.clip(round(65536 * math.exp(-1.0 / (scale * factor))), 0, 65535))
        prior = LaplacePrior(lo, hi, mu, decay)
        bits = prior.code_length_bits(symbols)
        if bits < best_bits:
            best, best_bits = prior, bits
    assert best is not None
    return best


def _model(prior: LaplacePrior) -> "constriction.stream.model.Categorical":
    """The prior's table as constriction's categorical model (SPEC.md section 6, "The coder's table")."""
    return constriction.stream.model.Categorical(prior.frequencies().astype(np.float64), perfect=False)


def encode(tensors: list[np.ndarray], priors: list[LaplacePrior]) -> bytes:
    """Range-code each integer array under its prior, all into one payload."""
    encoder = constriction.stream.queue.RangeEncoder()
    for symbols, prior in zip(tensors, priors):
        flat = np.asarray(symbols, dtype=np.int64).ravel()
        if flat.size and prior.size > 1:
            encoder.encode((flat - prior.lo).astype(np.int32), _model(prior))
    return encoder.get_compressed().astype("<u4").tobytes()


def decode(payload: bytes, sizes: list[int], priors: list[LaplacePrior]) -> list[np.ndarray]:
    """Inverse of :func:`encode`: ``sizes[i]`` integers under ``priors[i]`` for each tensor."""
    if len(payload) % 4:
        raise ValueError("payload length is not a multiple of 4")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    out = []
    for size, prior in zip(sizes, priors):
        if size and prior.size > 1:
            out.append(decoder.decode(_model(prior), size).astype(np.int64) + prior.lo)
        else:
            out.append(np.full(size, prior.lo, dtype=np.int64))
    return out
