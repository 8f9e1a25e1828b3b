"""Interleaved rANS coder in integer numpy, normative in bitstream/SPEC.md ("rANS coder").

The coder codes symbols under integer frequency tables that sum to exactly 2**16, with
``lanes`` independent 32-bit states that take turns: symbol ``i`` uses lane ``i % lanes``.
Interleaving is what makes the decoder fast in numpy: the ``lanes`` symbols of one row are
decoded by a handful of array operations instead of ``lanes`` trips through Python.

Everything is integer arithmetic, so every machine reads and writes the same bytes.
Any defect in a stream raises :class:`CorruptStream`; bad arguments raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PREC = 16  # frequency tables sum to 2**PREC
TOTAL = 1 << PREC
L_LOW = 1 << 16  # lower bound of a state between symbols; states lie in [L_LOW, 2**32)
WORD_BITS = 16
WORD_MASK = (1 << WORD_BITS) - 1
SLOT_MASK = TOTAL - 1  # x & SLOT_MASK is the slot that picks the next decoded symbol
MAX_ALPHABET = 4096
MAX_LANES = 256


class CorruptStream(ValueError):
    """A stream that this coder cannot have written: too short, truncated, padded or altered."""


class Tables:
    """A list of frequency tables ("models"), checked and laid out for vectorised lookup.

    Model ``m`` is the integer array ``f_m`` with every entry >= 1 and sum exactly 2**16.
    Its cumulative table ``cdf_m[k] = f_m[0] + ... + f_m[k-1]`` is stored shifted by
    ``m * 2**16`` in one increasing array, ``keys``, so that one ``np.searchsorted`` finds the
    symbols of many lanes that use different models.
    """

    def __init__(self, freqs: Sequence[np.ndarray]) -> None:
        if len(freqs) == 0:
            raise ValueError("need at least one frequency table")
        checked = [_check_table(m, f) for m, f in enumerate(freqs)]
        sizes = np.array([f.size for f in checked], dtype=np.int64)
        self.n_models = len(checked)
        self.sizes = sizes  # alphabet size of each model
        self.base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)  # model m's first entry
        self.freq = np.concatenate(checked)  # f_m[s] at base[m] + s
        self.cdf = np.concatenate([np.cumsum(f) - f for f in checked])  # cdf_m[s] at base[m] + s
        model_of_entry = np.repeat(np.arange(self.n_models, dtype=np.int64), sizes)
        self.keys = self.cdf + model_of_entry * TOTAL  # strictly increasing over all entries
        # Indexed by the result j of searchsorted(keys, key, "right"), i.e. by entry j - 1:
        self.freq_after = np.concatenate([[0], self.freq])
        self.keys_after = np.concatenate([[0], self.keys])

    def check_models(self, models: np.ndarray) -> np.ndarray:
        """``models`` as a flat int64 array, or ValueError if an index is not a model."""
        models = np.asarray(models)
        if models.size and models.dtype.kind not in "iu":
            raise ValueError("model indices must be integers")
        models = models.reshape(-1).astype(np.int64)
        if models.size and (models.min() < 0 or models.max() >= self.n_models):
            raise ValueError(f"model index out of range 0..{self.n_models - 1}")
        return models


def _check_table(m: int, f: np.ndarray) -> np.ndarray:
    """Model ``m``'s table as int64, or ValueError naming what is wrong with it."""
    f = np.asarray(f)
    if f.ndim != 1 or f.dtype.kind not in "iu":
        raise ValueError(f"table {m}: must be a 1-d integer array")
    if not 1 <= f.size <= MAX_ALPHABET:
        raise ValueError(f"table {m}: size {f.size} not in 1..{MAX_ALPHABET}")
    if f.min() < 1 or f.max() > TOTAL:  # checked before the sum, which could overflow
        raise ValueError(f"table {m}: every frequency must be in 1..{TOTAL}")
    f = f.astype(np.int64)
    if int(f.sum()) != TOTAL:
        raise ValueError(f"table {m}: frequencies sum to {int(f.sum())}, not {TOTAL}")
    return f


def _check_lanes(lanes: int) -> int:
    """``lanes`` as an int, or ValueError if it is not an integer in 1..MAX_LANES."""
    if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)) or not 1 <= lanes <= MAX_LANES:
        raise ValueError(f"lanes must be an integer in 1..{MAX_LANES}")
    return int(lanes)


def encode(symbols: np.ndarray, models: np.ndarray, tables: Tables, lanes: int) -> bytes:
    """The stream that makes :class:`Decoder` return ``symbols`` given the same ``models``.

    ``symbols[i]`` is coded under table ``models[i]`` by lane ``i % lanes``. rANS is last in,
    first out, so rows are coded from the last to the first, and the words each row emits are
    put back in reading order at the end.
    """
    lanes = _check_lanes(lanes)
    models = tables.check_models(models)
    symbols = np.asarray(symbols)
    if symbols.size and symbols.dtype.kind not in "iu":
        raise ValueError("symbols must be integers")
    symbols = symbols.reshape(-1).astype(np.int64)
    if symbols.size != models.size:
        raise ValueError("symbols and models differ in length")
    if symbols.size and (symbols.min() < 0 or np.any(symbols >= tables.sizes[models])):
        raise ValueError("symbol outside its model's alphabet")
    entry = tables.base[models] + symbols
    freq = tables.freq[entry]
    cdf = tables.cdf[entry]
    limit = freq << 16  # a state >= f * 2**16 must emit a word before coding under f

    x = np.full(lanes, L_LOW, dtype=np.int64)
    chunks = []  # per row, from the last row to the first: the row's words in lane order
    n = symbols.size
    for start in range((n - 1) // lanes * lanes, -1, -lanes):  # each row's first index, last row first
        end = min(start + lanes, n)
        xs = x[: end - start]  # a view: the lanes this row uses
        f = freq[start:end]
        emit = xs >= limit[start:end]  # after one shift x < 2**16 <= f * 2**16: one word suffices
        if emit.any():
            chunks.append(xs[emit] & WORD_MASK)
            xs[emit] >>= 16
        q, r = np.divmod(xs, f)
        xs[:] = (q << 16) + r + cdf[start:end]
    words = np.concatenate(chunks[::-1]) if chunks else np.zeros(0, np.int64)
    return x.astype("<u4").tobytes() + words.astype("<u2").tobytes()


class Decoder:
    """Decodes a stream from :func:`encode` in passes of any length, then checks its end.

    Each :meth:`decode` call continues at the global symbol index where the previous one
    stopped (possibly in the middle of a row); :meth:`finish` checks the stream was exact.
    After a :class:`CorruptStream` the decoder's state is meaningless: drop it.
    """

    def __init__(self, data: bytes, tables: Tables, lanes: int) -> None:
        self.lanes = _check_lanes(lanes)
        self.tables = tables
        data = bytes(data)
        head = 4 * self.lanes
        if len(data) < head or (len(data) - head) % 2:
            raise CorruptStream("rANS stream too short or of odd length")
        self.x = np.frombuffer(data, "<u4", self.lanes).astype(np.int64)
        if np.any(self.x < L_LOW):
            raise CorruptStream("rANS initial state below 2**16")
        self.words = np.frombuffer(data, "<u2", offset=head).astype(np.int64)
        self.pos = 0  # next unread word
        self.count = 0  # global index of the next symbol

    def decode(self, models: np.ndarray) -> np.ndarray:
        """The next ``len(models)`` symbols, symbol ``j`` of this call under ``models[j]``."""
        models = self.tables.check_models(models)
        n = models.size
        lanes, x, words = self.lanes, self.x, self.words
        tables = self.tables
        find, freq_after, keys_after = tables.keys.searchsorted, tables.freq_after, tables.keys_after
        count_nonzero = np.count_nonzero
        offset = models * TOTAL  # slot + offset is the slot's key among Tables.keys
        found = np.empty(n, dtype=np.int64)  # the searchsorted results; they become the symbols at the end
        pos, n_words = self.pos, words.size
        start, lane = 0, self.count % lanes
        while start < n:
            end = min(start + lanes - lane, n)
            xs = x if lane == 0 and end - start == lanes else x[lane : lane + end - start]  # this row's lanes
            key = xs & SLOT_MASK
            key += offset[start:end]
            j = find(key, "right")  # entry j - 1: the largest cdf <= slot in its model
            found[start:end] = j
            xs >>= 16
            xs *= freq_after[j]
            key -= keys_after[j]
            xs += key  # x = f * (x >> 16) + slot - cdf
            need = xs < L_LOW
            k = count_nonzero(need)
            if k:  # lanes needing a word read the next words in increasing lane order
                if pos + k > n_words:
                    raise CorruptStream("rANS stream ends before its last symbol")
                xs[need] = (xs[need] << 16) | words[pos : pos + k]
                pos += k
            start, lane = end, 0
        self.pos = pos
        self.count += n
        return found - 1 - tables.base[models]

    def finish(self) -> None:
        """CorruptStream unless every lane is back at 2**16 and every word was read."""
        if np.any(self.x != L_LOW):
            raise CorruptStream("rANS final state is not 2**16")
        if self.pos != self.words.size:
            raise CorruptStream(f"rANS stream has {self.words.size - self.pos} unused words")
