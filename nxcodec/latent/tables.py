"""Integer frequency tables of format versions 3 to 9 (bitstream/SPEC.md sections 9.5, 12 and 15).

Every table sums to exactly 2**16 and is built from integers by one rule, so the range
coder sees the same probabilities on every machine. Latent residuals use one of a
version's fixed tables (a discrete Laplace per scale index: ``COARSE`` up to version 8,
``FINE`` from version 9); network weights use a two-sided geometric table per tensor
whose four parameters are in the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

PREC = 16
TOTAL = 1 << PREC
G0 = 1 << 30  # unnormalised frequency of the centre symbol
MAX_WEIGHT_ALPHABET = 4096
MAX_WEIGHT = 32767

# Scale index s stands for a Laplace scale b_s = 2**(s / 4 - 3) (0.125 .. 861). Per index:
# (theta, rho, A): the decay per step, the ratio of the frequencies of +-1 and 0 (both in
# 1/65536), and the largest residual magnitude. They are the rounded values of
# exp(-1/b), P(1)/P(0) of a Laplace of scale b integrated over unit bins, and
# min(2047, max(16, ceil(24 b))), frozen here as integers because they are normative.
SCALES = (
    (22, 611, 16), (79, 1173, 16), (229, 2051, 16), (563, 3319, 16), (1200, 5035, 16), (2268, 7230, 16),
    (3874, 9903, 16), (6075, 13014, 16), (8869, 16489, 16), (12192, 20230, 16), (15933, 24123, 17),
    (19953, 28057, 21), (24109, 31929, 24), (28267, 35654, 29), (32314, 39166, 34), (36162, 42421, 41),
    (39750, 45395, 48), (43041, 48076, 58), (46019, 50468, 68), (48681, 52582, 81), (51039, 54437, 96),
    (53111, 56054, 115), (54917, 57455, 136), (56484, 58663, 162), (57835, 59700, 192), (58997, 60589, 229),
    (59992, 61347, 272), (60842, 61993, 323), (61565, 62543, 384), (62181, 63008, 457), (62703, 63403, 544),
    (63145, 63737, 646), (63520, 64020, 768), (63836, 64258, 914), (64104, 64460, 1087), (64329, 64630, 1292),
    (64520, 64773, 1536), (64681, 64894, 1827), (64816, 64995, 2047), (64930, 65081, 2047), (65026, 65153, 2047),
    (65107, 65214, 2047), (65175, 65265, 2047), (65232, 65308, 2047), (65280, 65344, 2047), (65321, 65375, 2047),
    (65355, 65400, 2047), (65384, 65422, 2047), (65408, 65440, 2047), (65428, 65455, 2047), (65446, 65468, 2047),
    (65460, 65479, 2047),
)
N_SCALES = len(SCALES)
LOG2_BMIN = -3.0
SCALES_PER_OCTAVE = 4
# Version 9 (SPEC.md 15) puts six finer scales below these, by the same rule: b = 2**(s / 4 - 4.5) for its index
# s = 0 .. 57, its s + 6 being the index above. Below b = 1/8 a zero residual cost at least 0.027 bit, and a
# low-rate image is mostly zeros (kodim02 at quality 1: 58% of the latent bits); at the finest, 0.0007 bit.
FINE_SCALES = ((0, 0, 16), (0, 2, 16), (0, 11, 16), (0, 39, 16), (1, 115, 16), (5, 284, 16))


@dataclass(frozen=True)
class ScaleSet:
    """The latent tables of a format version: the (theta, rho, A) of every scale index, smallest scale first, and
    the log2 of that smallest scale."""

    rows: tuple[tuple[int, int, int], ...]
    log2_bmin: float

    @property
    def n(self) -> int:
        return len(self.rows)

    def table(self, s: int) -> np.ndarray:
        """The frequencies of residuals -A..A (index r + A) for scale index ``s``."""
        return _laplace_table(*self.rows[s])

    def tables(self) -> list[np.ndarray]:
        """Every latent table, in index order."""
        return [self.table(s) for s in range(self.n)]

    @cached_property
    def limits(self) -> np.ndarray:
        """A of every scale index (built once: the coder looks it up for every pass)."""
        return np.asarray([a for _, _, a in self.rows], dtype=np.int64)

    def residual_limit(self, s: np.ndarray | int) -> np.ndarray:
        """A: the largest residual magnitude a scale index allows."""
        return self.limits[s]


COARSE = ScaleSet(SCALES, LOG2_BMIN)  # versions 3 to 8
FINE = ScaleSet(FINE_SCALES + SCALES, LOG2_BMIN - len(FINE_SCALES) / SCALES_PER_OCTAVE)  # version 9


def normalise(raw: np.ndarray, centre: int) -> np.ndarray:
    """Frequencies from unnormalised weights: each at least 1, summing to exactly 2**16."""
    n = raw.size
    freq = 1 + (raw * (TOTAL - n)) // int(raw.sum())
    freq[centre] += TOTAL - int(freq.sum())
    return freq


def _geometric(first: int, decay: int, length: int) -> np.ndarray:
    """g[0] = first, g[d+1] = floor(g[d] * decay / 65536), for d < length (zeros once it reaches 0)."""
    g = np.zeros(length, dtype=np.int64)
    value = first
    for d in range(length):
        if value == 0:
            break
        g[d] = value
        value = (value * decay) >> 16
    return g


@lru_cache(maxsize=None)
def _laplace_table(theta: int, rho: int, a: int) -> np.ndarray:
    side = _geometric((G0 * rho) >> 16, theta, a)  # residuals 1..A
    raw = np.concatenate([side[::-1], [G0], side])
    return normalise(raw, a)


# Version 6 escapes (SPEC.md 12): a residual at a table's edge, +-A, stands for +-(A + e) with e >= 0 coded
# after its pass as its bit length k (0 .. ESCAPE_CLASSES - 1, uniform) and then the k - 1 bits below the
# leading one, in uniform chunks of at most ESCAPE_CHUNK bits (the high chunk first).
ESCAPE_CLASS_BITS = 4
ESCAPE_CLASSES = 1 << ESCAPE_CLASS_BITS
ESCAPE_CHUNK = 12
MAX_ESCAPE = (1 << (ESCAPE_CLASSES - 1)) - 1  # 32767: latents stay below 2**24 in magnitude


def uniform_table(bits: int) -> np.ndarray:
    """The table of ``2**bits`` equally likely symbols (``bits`` <= 12 keeps it within the coder's alphabet)."""
    return np.full(1 << bits, TOTAL >> bits, dtype=np.int64)


def escape_tables() -> list[np.ndarray]:
    """The bit-length table, then the uniform tables of 0 .. ESCAPE_CHUNK bits."""
    return [uniform_table(ESCAPE_CLASS_BITS)] + [uniform_table(b) for b in range(ESCAPE_CHUNK + 1)]


def escape_bits(e: np.ndarray) -> np.ndarray:
    """Bits an escape of ``e`` >= 0 costs: 4 for its bit length k, and k - 1 below its leading one."""
    return ESCAPE_CLASS_BITS + np.maximum(bit_length(e) - 1, 0)


def bit_length(e: np.ndarray) -> np.ndarray:
    """The number of bits of each non-negative integer (0 for 0)."""
    return np.frexp(np.asarray(e, dtype=np.int64))[1].astype(np.int64)  # exact: e = m 2**k with m in [0.5, 1)


def weight_table(lo: int, hi: int, mu: int, decay: int) -> np.ndarray:
    """Frequencies of the integers lo..hi of one tensor: a two-sided geometric peaked at ``mu``."""
    span = max(mu - lo, hi - mu)
    g = _geometric(G0, decay, span + 1)
    raw = g[np.abs(np.arange(lo, hi + 1, dtype=np.int64) - mu)]
    return normalise(raw, mu - lo)


def check_weight_prior(lo: int, hi: int, mu: int, decay: int) -> None:
    """Refuse parameters outside the spec's bounds (ValueError)."""
    if not -MAX_WEIGHT <= lo <= mu <= hi <= MAX_WEIGHT:
        raise ValueError("prior range must satisfy lo <= mu <= hi within +-32767")
    if hi - lo + 1 > MAX_WEIGHT_ALPHABET:
        raise ValueError(f"prior alphabet larger than {MAX_WEIGHT_ALPHABET}")
    if not 0 <= decay <= 65535:
        raise ValueError("decay must fit in 16 bits")
