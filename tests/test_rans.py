"""The interleaved rANS coder: round trips, byte-exactness against a scalar reference written
straight from the spec, code length, and that every defect in a stream raises CorruptStream."""

from __future__ import annotations

import ast
from bisect import bisect_right
from itertools import accumulate
from pathlib import Path

import numpy as np
import pytest

from nxcodec.latent import rans
from nxcodec.latent.rans import CorruptStream, Decoder, Tables, encode

# ---------------------------------------------------------------------------------------
# A scalar reference coder: plain Python ints, one symbol at a time, from the spec's text.


def ref_encode(symbols: list[int], models: list[int], freqs: list[list[int]], lanes: int) -> bytes:
    cdfs = [[0, *accumulate(f)][:-1] for f in freqs]
    x = [1 << 16] * lanes
    emitted = []
    for i in reversed(range(len(symbols))):
        lane, m, s = i % lanes, models[i], symbols[i]
        f, c = freqs[m][s], cdfs[m][s]
        if x[lane] >= f << 16:
            emitted.append(x[lane] & 0xFFFF)
            x[lane] >>= 16
        x[lane] = (x[lane] // f) * (1 << 16) + x[lane] % f + c
    emitted.reverse()
    return b"".join(v.to_bytes(4, "little") for v in x) + b"".join(w.to_bytes(2, "little") for w in emitted)


def ref_decode(data: bytes, models: list[int], freqs: list[list[int]], lanes: int) -> list[int]:
    """The symbols, or CorruptStream; checks the end of the stream like Decoder.finish."""
    cdfs = [[0, *accumulate(f)][:-1] for f in freqs]
    if len(data) < 4 * lanes or (len(data) - 4 * lanes) % 2:
        raise CorruptStream("short")
    x = [int.from_bytes(data[4 * k : 4 * k + 4], "little") for k in range(lanes)]
    if min(x) < 1 << 16:
        raise CorruptStream("initial state")
    words = [int.from_bytes(data[p : p + 2], "little") for p in range(4 * lanes, len(data), 2)]
    read = 0
    out = []
    for i, m in enumerate(models):
        lane = i % lanes
        slot = x[lane] & 0xFFFF
        s = bisect_right(cdfs[m], slot) - 1  # the largest k with cdf[k] <= slot
        x[lane] = freqs[m][s] * (x[lane] >> 16) + slot - cdfs[m][s]
        if x[lane] < 1 << 16:
            if read == len(words):
                raise CorruptStream("words exhausted")
            x[lane] = (x[lane] << 16) | words[read]
            read += 1
        out.append(s)
    if any(v != 1 << 16 for v in x) or read != len(words):
        raise CorruptStream("end")
    return out


# ---------------------------------------------------------------------------------------
# Tables and data.


def random_table(rng: np.random.Generator) -> np.ndarray:
    """A valid table of a random kind: uniform-ish, peaky, extreme (one big entry), or n = 1."""
    kind = rng.integers(4)
    if kind == 3:
        return np.array([1 << 16])
    n = int(rng.integers(2, 300 if kind < 2 else 40))
    if kind == 2:
        f = np.ones(n, dtype=np.int64)
        f[rng.integers(n)] += (1 << 16) - n
        return f
    p = rng.dirichlet(np.full(n, 1.0 if kind == 0 else 0.05))
    return 1 + rng.multinomial((1 << 16) - n, p)


def random_data(rng: np.random.Generator, freqs: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Model indices, and symbols drawn half from their model and half uniformly (rare ones too)."""
    models = rng.integers(len(freqs), size=n)
    symbols = np.empty(n, dtype=np.int64)
    for m, f in enumerate(freqs):
        sel = np.flatnonzero(models == m)
        drawn = rng.choice(f.size, sel.size, p=f / f.sum())
        uniform = rng.integers(f.size, size=sel.size)
        symbols[sel] = np.where(rng.random(sel.size) < 0.5, drawn, uniform)
    return symbols, models


def decode_all(data: bytes, models: np.ndarray, tables: Tables, lanes: int, cuts=()) -> np.ndarray:
    dec = Decoder(data, tables, lanes)
    bounds = [0, *cuts, models.size]
    out = np.concatenate([dec.decode(models[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    dec.finish()
    return out


# ---------------------------------------------------------------------------------------
# Round trips and the reference.


@pytest.mark.parametrize("lanes", [1, 3, 32, 64])
@pytest.mark.parametrize("seed", range(3))
def test_round_trip(lanes, seed):
    rng = np.random.default_rng(seed * 100 + lanes)
    freqs = [random_table(rng) for _ in range(int(rng.integers(1, 8)))]
    tables = Tables(freqs)
    for n in (0, 1, lanes - 1, lanes, lanes + 1, int(rng.integers(500, 5000))):
        symbols, models = random_data(rng, freqs, max(n, 0))
        data = encode(symbols, models, tables, lanes)
        np.testing.assert_array_equal(decode_all(data, models, tables, lanes), symbols)


@pytest.mark.parametrize("lanes", [1, 3, 32, 64])
def test_uneven_passes_equal_one_call(lanes):
    rng = np.random.default_rng(lanes)
    freqs = [random_table(rng) for _ in range(6)]
    tables = Tables(freqs)
    symbols, models = random_data(rng, freqs, 2001)
    data = encode(symbols, models, tables, lanes)
    whole = decode_all(data, models, tables, lanes)
    np.testing.assert_array_equal(whole, symbols)
    for _ in range(5):  # cuts anywhere, repeated cuts give empty passes, and passes shorter than a row
        cuts = sorted(rng.integers(0, symbols.size + 1, size=int(rng.integers(1, 40))))
        np.testing.assert_array_equal(decode_all(data, models, tables, lanes, cuts), whole)
    one_by_one = Decoder(data, tables, lanes)
    out = [one_by_one.decode(models[i : i + 1]) for i in range(200)]
    out.append(one_by_one.decode(models[200:]))
    one_by_one.finish()
    np.testing.assert_array_equal(np.concatenate(out), symbols)


@pytest.mark.parametrize("lanes", [1, 2, 5, 32, 64])
def test_matches_scalar_reference(lanes):
    rng = np.random.default_rng(7 + lanes)
    freqs = [random_table(rng) for _ in range(5)] + [np.array([1 << 16])]
    tables = Tables(freqs)
    plain = [f.tolist() for f in freqs]
    for n in (0, 1, lanes + 3, 2500):
        symbols, models = random_data(rng, freqs, n)
        data = encode(symbols, models, tables, lanes)
        assert data == ref_encode(symbols.tolist(), models.tolist(), plain, lanes)
        assert ref_decode(data, models.tolist(), plain, lanes) == symbols.tolist()


def test_single_symbol_tables_cost_nothing():
    tables = Tables([np.array([1 << 16]), np.array([1 << 16], dtype=np.int32)])
    models = np.arange(1000) % 2
    for lanes in (1, 3, 64):
        data = encode(np.zeros(1000, np.int64), models, tables, lanes)
        assert data == ((1 << 16).to_bytes(4, "little")) * lanes
        np.testing.assert_array_equal(decode_all(data, models, tables, lanes), np.zeros(1000))


def test_empty_stream_layout():
    tables = Tables([np.full(4, 1 << 14)])
    data = encode(np.zeros(0, np.int64), np.zeros(0, np.int64), tables, 5)
    assert data == bytes.fromhex("00000100") * 5
    decode_all(data, np.zeros(0, np.int64), tables, 5)


def test_known_bytes():
    """A tiny stream worked by hand: one lane, f = [1, 65535], symbols 0 then 1.

    Reverse order: symbol 1 (f = 65535, c = 1): x = 65536 -> 65536 // 65535 * 65536 + 1 + 1 = 65538.
    Symbol 0 (f = 1, c = 0): 65538 >= 1 * 65536 emits 0x0002, x = 1 -> 1 * 65536 + 0 + 0 = 65536.
    """
    tables = Tables([np.array([1, 65535])])
    data = encode(np.array([0, 1]), np.array([0, 0]), tables, 1)
    assert data == bytes.fromhex("00000100" "0200")
    np.testing.assert_array_equal(decode_all(data, np.array([0, 0]), tables, 1), [0, 1])


@pytest.mark.parametrize("lanes", [1, 32])
def test_size_close_to_ideal(lanes):
    rng = np.random.default_rng(11)
    freqs = [random_table(rng) for _ in range(8)]
    tables = Tables(freqs)
    models = rng.integers(len(freqs), size=20000)
    symbols = np.empty(models.size, dtype=np.int64)
    for m, f in enumerate(freqs):
        symbols[models == m] = rng.choice(f.size, np.count_nonzero(models == m), p=f / (1 << 16))
    ideal_bits = -np.log2(tables.freq[tables.base[models] + symbols] / (1 << 16)).sum()
    size = len(encode(symbols, models, tables, lanes))
    # Each lane's final state carries 16..32 bits of which 16 are fixed, so the stream is
    # at most 4 bytes a lane over the ideal length, plus the coder's small rounding loss.
    assert size <= ideal_bits / 8 * 1.002 + 4 * lanes + 4
    assert size >= ideal_bits / 8 * 0.998 + 2 * lanes - 4


# ---------------------------------------------------------------------------------------
# Defects.


def _stream(lanes=3, n=400, seed=0):
    rng = np.random.default_rng(seed)
    freqs = [random_table(rng) for _ in range(4)]
    tables = Tables(freqs)
    symbols, models = random_data(rng, freqs, n)
    return encode(symbols, models, tables, lanes), models, tables, freqs


def _decode_or_corrupt(data, models, tables, lanes, cuts=()):
    """The decoded symbols, or None if the stream was found corrupt; no other exception passes."""
    try:
        return decode_all(data, models, tables, lanes, cuts).tolist()
    except CorruptStream:
        return None


@pytest.mark.parametrize("lanes", [1, 3, 32])
def test_every_truncation_and_padding_raises(lanes):
    data, models, tables, _ = _stream(lanes, n=150 if lanes == 1 else 400)
    for cut in range(len(data)):
        with pytest.raises(CorruptStream):
            decode_all(data[:cut], models, tables, lanes, cuts=[models.size // 3])
    for extra in (b"\x00", b"\x00\x00", b"\x12\x34\x56\x78", b"\x00" * 7):
        with pytest.raises(CorruptStream):
            decode_all(data + extra, models, tables, lanes)
    with pytest.raises(CorruptStream):  # asks for more symbols than were coded
        decode_all(data, np.concatenate([models, models[:5]]), tables, lanes)


@pytest.mark.parametrize("lanes", [1, 3, 32])
def test_bit_flips_raise_only_corrupt_stream_and_agree_with_reference(lanes):
    data, models, tables, freqs = _stream(lanes, n=120 if lanes == 1 else 300, seed=lanes)
    plain = [f.tolist() for f in freqs]
    rng = np.random.default_rng(100 + lanes)
    raised = 0
    for trial in range(100):
        bad = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        got = _decode_or_corrupt(bytes(bad), models, tables, lanes, cuts=[int(rng.integers(models.size))])
        try:
            want = ref_decode(bytes(bad), models.tolist(), plain, lanes)
        except CorruptStream:
            want = None
        assert got == want
        raised += got is None
    assert raised >= 90


def test_initial_state_below_range_raises():
    data, models, tables, _ = _stream(lanes=3)
    bad = data[:4] + (65535).to_bytes(4, "little") + data[8:]
    with pytest.raises(CorruptStream):
        Decoder(bad, tables, 3)


def test_garbage_raises_only_corrupt_stream():
    rng = np.random.default_rng(5)
    freqs = [random_table(rng) for _ in range(6)]
    tables = Tables(freqs)
    for trial in range(200):
        lanes = int(rng.choice([1, 2, 3, 32, 64, 256]))
        data = rng.bytes(int(rng.integers(0, 1200)))
        models = rng.integers(len(freqs), size=int(rng.integers(0, 800)))
        cuts = sorted(rng.integers(0, models.size + 1, size=3))
        _decode_or_corrupt(data, models, tables, lanes, cuts)


def test_corrupt_stream_is_a_value_error():
    assert issubclass(CorruptStream, ValueError)


# ---------------------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize(
    "table",
    [
        [],
        [1 << 15, 1 << 15, 0],
        [1 << 15, (1 << 15) - 1],
        [1 << 15, (1 << 15) + 1],
        [1 << 17, -(1 << 16)],
        [1.0 * (1 << 16)],
        [[1 << 16]],
        [16] * 4097,
        np.array([1 << 15, 1 << 15, 2**64 - 1], dtype=np.uint64),
    ],
)
def test_bad_table_raises_value_error(table):
    with pytest.raises(ValueError):
        Tables([np.full(2, 1 << 15), np.asarray(table)])


def test_largest_alphabet_is_allowed():
    f = np.full(4096, 16)
    tables = Tables([f])
    symbols = np.arange(4096)
    data = encode(symbols, np.zeros(4096, np.int64), tables, 7)
    np.testing.assert_array_equal(decode_all(data, np.zeros(4096, np.int64), tables, 7), symbols)


def test_bad_arguments_raise_value_error():
    tables = Tables([np.full(4, 1 << 14), np.array([1 << 16])])
    with pytest.raises(ValueError):
        Tables([])
    with pytest.raises(ValueError):
        encode(np.array([0]), np.array([2]), tables, 1)  # no model 2
    with pytest.raises(ValueError):
        encode(np.array([0]), np.array([-1]), tables, 1)
    with pytest.raises(ValueError):
        encode(np.array([1]), np.array([1]), tables, 1)  # model 1 has one symbol
    with pytest.raises(ValueError):
        encode(np.array([-1]), np.array([0]), tables, 1)
    with pytest.raises(ValueError):
        encode(np.array([0, 1]), np.array([0]), tables, 1)
    with pytest.raises(ValueError):
        encode(np.array([0.0]), np.array([0]), tables, 1)
    for lanes in (0, 257, True, 2.0):
        with pytest.raises(ValueError):
            encode(np.array([0]), np.array([0]), tables, lanes)
        with pytest.raises(ValueError):
            Decoder(bytes(4 * 300), tables, lanes)
    dec = Decoder(encode(np.array([0]), np.array([0]), tables, 1), tables, 1)
    with pytest.raises(ValueError):
        dec.decode(np.array([5]))


def test_module_imports_only_numpy_and_has_no_floats():
    tree = ast.parse(Path(rans.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "collections.abc", "numpy"}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, float)]
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not {"float", "float32", "float64", "log2", "log", "sqrt"} & names
