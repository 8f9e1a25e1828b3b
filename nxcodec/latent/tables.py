"""Integer frequency tables of format versions 3 to 12 (bitstream/SPEC.md sections 9.5, 12, 15 and 18).

Every table sums to exactly 2**16 and is built from integers by one rule, so the range
coder sees the same probabilities on every machine. Latent residuals use one of a
version's fixed tables (a discrete Laplace per scale index: ``COARSE`` up to version 8,
``FINE`` from version 9; ``PHASED``, per scale and phase of a mean that is not an integer,
for the raster context of version 12); network weights use a two-sided geometric table per
tensor whose four parameters are in the stream.
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


    @cached_property
    def costs(self) -> tuple[np.ndarray, np.ndarray]:
        """Bits the coder spends on symbol ``k`` of table ``t``, ``16 - log2(frequency)``, at ``flat[base[t] + k]``:
        (flat, base), every table laid end to end (built once: an encoder counts with it at every trial)."""
        freqs = self.tables()
        base = np.concatenate([[0], np.cumsum([f.size for f in freqs])[:-1]]).astype(np.int64)
        return PREC - np.log2(np.concatenate(freqs)), base


COARSE = ScaleSet(SCALES, LOG2_BMIN)  # versions 3 to 8
FINE = ScaleSet(FINE_SCALES + SCALES, LOG2_BMIN - len(FINE_SCALES) / SCALES_PER_OCTAVE)  # version 9


# Version 12's raster context (SPEC.md 18) codes an integer latent y as k = y - round(mu) under a table for its scale
# index s (``FINE``'s) and for the phase j of its mean, mu - round(mu) in P(s) equal steps: P(s) = 32 below b = 1, halved
# per octave above, 1 from b = 16 (where a mean half a step off costs under 0.002 bit). With d = (j + 0.5) / P(s) - 0.5,
# the Laplace of scale b and mean d over unit bins has P(k) = P(1) theta**(k - 1) and P(-k) = P(-1) theta**(k - 1) for
# k >= 1; PHASE_RHO[s][j] is the rounded 65536 P(1) / P(0), and P(-1) / P(0) is PHASE_RHO[s][P(s) - 1 - j] (the
# mirror phase). Frozen as integers because they are normative; one phase (d = 0) gives FINE's own rho.
MAX_PHASES = 32


def phases(s: int) -> int:
    """P(s): the phases of the mean that scale index ``s`` of ``FINE`` has a table for."""
    return MAX_PHASES >> min(5, max(0, s - 14) >> 2)


PHASE_RHO = (
    (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 5, 10, 20, 40, 80, 163, 332, 677, 1389, 2879, 6116,
     13720, 35459),
    (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 6, 11, 19, 35, 64, 116, 210, 381, 694, 1269, 2337, 4361,
     8356, 16893, 38723),
    (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 5, 9, 14, 23, 38, 63, 104, 172, 285, 471, 780, 1296, 2164, 3646,
     6236, 10958, 20265, 41795),
    (0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 6, 9, 14, 21, 32, 48, 74, 113, 171, 261, 399, 609, 932, 1430, 2203, 3414,
     5343, 8498, 13880, 23764, 44646),
    (1, 1, 1, 2, 2, 3, 4, 6, 8, 12, 17, 24, 33, 48, 68, 96, 137, 195, 278, 397, 567, 810, 1160, 1664, 2396, 3466,
     5049, 7433, 11120, 17064, 27318, 47259),
    (5, 6, 7, 8, 11, 14, 18, 24, 32, 42, 56, 75, 101, 135, 182, 245, 330, 444, 599, 808, 1092, 1478, 2005, 2728,
     3726, 5116, 7078, 9898, 14059, 20445, 30856, 49628),
    (22, 24, 28, 33, 40, 50, 62, 78, 98, 124, 158, 201, 257, 328, 421, 539, 693, 890, 1146, 1477, 1908, 2468, 3202,
     4167, 5447, 7161, 9488, 12703, 17260, 23951, 34314, 51754),
    (79, 85, 94, 108, 126, 148, 177, 212, 256, 311, 379, 464, 568, 697, 858, 1057, 1304, 1611, 1995, 2474, 3075,
     3831, 4788, 6006, 7568, 9592, 12249, 15800, 20655, 27510, 37637, 53645),
    (231, 242, 263, 291, 328, 374, 431, 499, 582, 682, 802, 946, 1119, 1327, 1577, 1878, 2241, 2680, 3211, 3856,
     4642, 5603, 6786, 8250, 10077, 12379, 15318, 19130, 24178, 31054, 40782, 55314),
    (566, 587, 624, 675, 741, 822, 919, 1034, 1171, 1332, 1520, 1742, 2001, 2305, 2662, 3082, 3576, 4159, 4848,
     5664, 6637, 7799, 9196, 10886, 12947, 15482, 18639, 22626, 27758, 34521, 43719, 56777),
    (1205, 1237, 1295, 1376, 1479, 1604, 1753, 1927, 2129, 2363, 2633, 2944, 3301, 3712, 4186, 4731, 5361, 6090,
     6935, 7919, 9067, 10414, 12001, 13884, 16133, 18844, 22146, 26220, 31326, 37857, 46425, 58052),
    (2274, 2319, 2401, 2515, 2660, 2834, 3040, 3278, 3553, 3866, 4222, 4626, 5084, 5604, 6193, 6862, 7623, 8489,
     9479, 10611, 11914, 13416, 15158, 17190, 19575, 22397, 25767, 29837, 34817, 41015, 48889, 59158),
    (3881, 3938, 4042, 4189, 4374, 4598, 4860, 5162, 5507, 5897, 6336, 6829, 7383, 8003, 8698, 9478, 10354, 11339,
     12450, 13706, 15130, 16751, 18605, 20734, 23196, 26061, 29422, 33404, 38172, 43962, 51109, 60111),
    (6084, 6150, 6274, 6448, 6669, 6936, 7248, 7606, 8012, 8469, 8980, 9551, 10185, 10890, 11673, 12543, 13511,
     14589, 15791, 17136, 18644, 20341, 22257, 24430, 26909, 29751, 33033, 36854, 41342, 46674, 53089, 60931),
    (8879, 8952, 9089, 9284, 9532, 9831, 10182, 10583, 11037, 11546, 12113, 12742, 13437, 14205, 15052, 15987,
     17018, 18156, 19416, 20812, 22363, 24090, 26020, 28185, 30624, 33385, 36528, 40131, 44291, 49136, 54839,
     61633),
    (12202, 12279, 12424, 12630, 12895, 13215, 13591, 14020, 14506, 15048, 15651, 16317, 17050, 17856, 18740, 19710,
     20774, 21941, 23223, 24632, 26185, 27900, 29799, 31908, 34259, 36890, 39848, 43191, 46993, 51348, 56374,
     62232),
    (15943, 16020, 16167, 16377, 16648, 16977, 17363, 17805, 18305, 18862, 19480, 20162, 20910, 21729, 22624, 23602,
     24668, 25832, 27102, 28491, 30010, 31676, 33505, 35519, 37743, 40207, 42946, 46006, 49440, 53314, 57712,
     62742),
    (19963, 20038, 20182, 20389, 20658, 20984, 21368, 21809, 22306, 22861, 23477, 24153, 24895, 25705, 26587, 27547,
     28590, 29723, 30954, 32292, 33747, 35332, 37061, 38951, 41020, 43293, 45796, 48561, 51629, 55046, 58871,
     63176),
    (24146, 24419, 24935, 25677, 26643, 27836, 29271, 30970, 32968, 35307, 38047, 41265, 45065, 49589, 55028,
     61658),
    (28301, 28556, 29041, 29744, 30659, 31790, 33148, 34752, 36628, 38809, 41344, 44292, 47733, 51771, 56548,
     62254),
    (32344, 32578, 33027, 33678, 34529, 35582, 36845, 38332, 40064, 42069, 44381, 47048, 50129, 53702, 57868,
     62762),
    (36189, 36400, 36808, 37403, 38182, 39146, 40302, 41661, 43239, 45056, 47140, 49526, 52259, 55396, 59009,
     63193),
    (39845, 40575, 41982, 44074, 46916, 50640, 55460, 61714),
    (43125, 43774, 45030, 46898, 49429, 52720, 56930, 62303),
    (46093, 46663, 47774, 49427, 51661, 54547, 58202, 62803),
    (48746, 49244, 50218, 51670, 53626, 56141, 59300, 63229),
    (51259, 52957, 56372, 61830),
    (53300, 54771, 57726, 62402),
    (55079, 56348, 58894, 62888),
    (56622, 57712, 59897, 63301),
    (58305, 62065),
    (59397, 62603),
    (60333, 63059),
    (61131, 63445),
    (62543,),
    (63008,),
    (63403,),
    (63737,),
    (64020,),
    (64258,),
    (64460,),
    (64630,),
    (64773,),
    (64894,),
    (64995,),
    (65081,),
    (65153,),
    (65214,),
    (65265,),
    (65308,),
    (65344,),
    (65375,),
    (65400,),
    (65422,),
    (65440,),
    (65455,),
    (65468,),
    (65479,),
)


@dataclass(frozen=True)
class PhasedSet(ScaleSet):
    """Version 12's latent tables: one per scale index of ``FINE`` and phase of the mean, scale-major (table
    ``first[s] + j``). Each row is (theta, rho below, rho above, A)."""

    @cached_property
    def phase_counts(self) -> np.ndarray:
        """P(s) of every scale index."""
        return np.asarray([phases(s) for s in range(len(PHASE_RHO))], dtype=np.int64)

    @cached_property
    def first(self) -> np.ndarray:
        """The index of the first table of each scale."""
        return np.cumsum(self.phase_counts) - self.phase_counts

    def table(self, t: int) -> np.ndarray:
        return _phased_table(*self.rows[t])

    @cached_property
    def limits(self) -> np.ndarray:
        return np.asarray([a for *_, a in self.rows], dtype=np.int64)


def _phased_rows() -> tuple[tuple[int, int, int, int], ...]:
    rows = []
    for s, rho in enumerate(PHASE_RHO):
        theta, _, a = FINE.rows[s]
        rows += [(theta, rho[len(rho) - 1 - j], rho[j], a) for j in range(len(rho))]
    return tuple(rows)


@lru_cache(maxsize=None)
def _phased_table(theta: int, below: int, above: int, a: int) -> np.ndarray:
    """Residuals -A..A: G0 at 0, and on each side a geometric of ratio theta starting at G0 rho / 65536."""
    raw = np.concatenate([_geometric((G0 * below) >> 16, theta, a)[::-1], [G0], _geometric((G0 * above) >> 16, theta, a)])
    return normalise(raw, a)


PHASED = PhasedSet(_phased_rows(), FINE.log2_bmin)  # version 12's raster context


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
