"""SPEC.md section 6, implemented again from its text alone, against what the codec writes.

Everything below (the frequency table, the coder's table, the range coder) follows the
spec's words with Python integers, independently of ``nxcodec.entropy``: it must decode
the payloads that constriction writes under random priors, rebuild them bit for bit, and
decode the payload of the conformance streams to the integers nxcodec's decoder gives.
"""

from __future__ import annotations

import bisect
import struct
from pathlib import Path

import numpy as np
import pytest

from nxcodec import container, entropy
from nxcodec.entropy import LaplacePrior
from nxcodec.model.config import ModelConfig, tensor_shapes

CONFORMANCE = Path(__file__).resolve().parents[1] / "bitstream" / "conformance"
MASK64 = (1 << 64) - 1


def spec_frequencies(lo: int, hi: int, mu: int, decay: int) -> list[int]:
    """Section 6, "Frequency tables": ``f[k]`` for ``k = lo .. hi``."""
    n = hi - lo + 1
    span = max(mu - lo, hi - mu)
    g = [1 << 30]
    for _ in range(span):
        g.append(g[-1] * decay // 65536)
    raw = [g[abs(k - mu)] for k in range(lo, hi + 1)]
    s = sum(raw)
    f = [1 + r * ((1 << 24) - n) // s for r in raw]
    f[mu - lo] += (1 << 24) - sum(f)
    return f


def coder_cdf(f: list[int]) -> list[int]:
    """Section 6, "The coder's table": ``c[0..n]`` with ``c[i] = i + floor(C[i] (2^24 - n) / 2^24)``, ``c[n] = 2^24``."""
    n = len(f)
    c, total = [], 0
    for i in range(n):
        c.append(i + (total * ((1 << 24) - n) >> 24))
        total += f[i]
    return c + [1 << 24]


class SpecDecoder:
    """Section 6, "Range decoder": 64-bit state, 32-bit words, precision 24."""

    def __init__(self, payload: bytes) -> None:
        assert len(payload) % 4 == 0
        self.words = list(struct.unpack(f"<{len(payload) // 4}I", payload))
        self.pos = 0
        self.lower, self.range = 0, MASK64
        self.point = (self.next_word() << 32) | self.next_word()

    def next_word(self) -> int:
        """The next word of the payload, 0 past its end."""
        word = self.words[self.pos] if self.pos < len(self.words) else 0
        self.pos += 1
        return word

    def decode(self, cdf: list[int]) -> int:
        scale = self.range >> 24
        quantile = ((self.point - self.lower) & MASK64) // scale
        if quantile >= 1 << 24:
            raise ValueError("invalid payload")
        s = bisect.bisect_right(cdf, quantile, 0, len(cdf) - 1) - 1
        self.lower = (self.lower + scale * cdf[s]) & MASK64
        self.range = scale * (cdf[s + 1] - cdf[s])
        if self.range < 1 << 32:
            self.lower = (self.lower << 32) & MASK64
            self.range <<= 32
            self.point = ((self.point << 32) & MASK64) | self.next_word()
        return s


class SpecEncoder:
    """Section 6, "Range encoder", including the carry handling and the final words."""

    def __init__(self) -> None:
        self.lower, self.range = 0, MASK64
        self.inverted: tuple[int, int] | None = None  # (held-back words, first of them)
        self.out: list[int] = []

    def encode(self, s: int, cdf: list[int]) -> None:
        scale = self.range >> 24
        new_range = scale * (cdf[s + 1] - cdf[s])
        new_lower = (self.lower + scale * cdf[s]) & MASK64
        if self.inverted and (new_lower + new_range) & MASK64 > new_lower:
            count, first = self.inverted
            if new_lower < self.lower:
                self.out += [first + 1] + [0] * (count - 1)
            else:
                self.out += [first] + [0xFFFFFFFF] * (count - 1)
            self.inverted = None
        self.lower, self.range = new_lower, new_range
        if self.range < 1 << 32:
            self.range <<= 32
            word = self.lower >> 32
            self.lower = (self.lower << 32) & MASK64
            if self.inverted:
                self.inverted = (self.inverted[0] + 1, self.inverted[1])
            elif (self.lower + self.range) & MASK64 > self.lower:
                self.out.append(word)
            else:
                self.inverted = (1, word)

    def finish(self) -> bytes:
        out = list(self.out)
        if self.range != MASK64:
            point = (self.lower + (1 << 32) - 1) & MASK64
            if self.inverted:
                count, first = self.inverted
                out += [first] + [0xFFFFFFFF] * (count - 1) if point >= self.lower else [first + 1] + [0] * (count - 1)
            out.append(point >> 32)
            if ((self.lower + self.range) & MASK64) >> 32 == point >> 32:
                out.append(0)
        return struct.pack(f"<{len(out)}I", *out)


def spec_decode(payload: bytes, sizes: list[int], priors: list[tuple[int, int, int, int]]) -> list[list[int]]:
    """A section's integers, tensor by tensor (section 6, "The payload")."""
    dec = SpecDecoder(payload)
    out = []
    for size, (lo, hi, mu, decay) in zip(sizes, priors):
        if hi == lo:
            out.append([lo] * size)
            continue
        cdf = coder_cdf(spec_frequencies(lo, hi, mu, decay))
        out.append([lo + dec.decode(cdf) for _ in range(size)])
    return out


def spec_encode(tensors: list[list[int]], priors: list[tuple[int, int, int, int]]) -> bytes:
    enc = SpecEncoder()
    for symbols, (lo, hi, mu, decay) in zip(tensors, priors):
        if hi > lo:
            cdf = coder_cdf(spec_frequencies(lo, hi, mu, decay))
            for k in symbols:
                enc.encode(k - lo, cdf)
    return enc.finish()


def random_prior(rng: np.random.Generator) -> LaplacePrior:
    kind = rng.integers(4)
    if kind == 0:  # tiny alphabets, where the coder's table differs most from f
        lo = int(rng.integers(-3, 1))
        hi = lo + int(rng.integers(1, 4))
    elif kind == 3:  # very wide
        lo = int(rng.integers(-32767, -20000))
        hi = min(32767, lo + int(rng.integers(30000, 65536)))
    else:
        lo = int(rng.integers(-300, 0))
        hi = int(rng.integers(1, 300))
    mu = int(rng.integers(lo, hi + 1))
    decay = int(rng.choice([0, 1, 30000, 60000, 65000, 65535, int(rng.integers(0, 65536))]))
    return LaplacePrior(lo, hi, mu, decay)


def symbols_under(prior: LaplacePrior, rng: np.random.Generator, size: int) -> np.ndarray:
    """Symbols drawn from the prior, with each end of the range once (the rarest symbols)."""
    f = np.asarray(spec_frequencies(prior.lo, prior.hi, prior.mu, prior.decay), dtype=np.float64)
    draw = rng.choice(prior.size, size=size, p=f / f.sum()) + prior.lo
    draw[: 2] = prior.lo, prior.hi
    return rng.permutation(draw)


def test_the_table_is_section_6s_and_the_coders_table_is_as_specified():
    assert spec_frequencies(-1, 1, 0, 0) == [1, (1 << 24) - 2, 1]
    assert coder_cdf([1, (1 << 24) - 2, 1]) == [0, 1, (1 << 24) - 2, 1 << 24]  # codes [1, 2^24 - 3, 2]
    rng = np.random.default_rng(0)
    for _ in range(30):
        p = random_prior(rng)
        assert spec_frequencies(p.lo, p.hi, p.mu, p.decay) == p.frequencies().tolist()


def test_spec_decoder_decodes_and_spec_encoder_rebuilds_what_constriction_writes():
    rng = np.random.default_rng(12)
    for trial in range(12):
        priors = [random_prior(rng) for _ in range(int(rng.integers(1, 6)))]
        tensors = [symbols_under(p, rng, int(rng.integers(2, 300))) for p in priors]
        payload = entropy.encode(tensors, priors)
        entries = [(p.lo, p.hi, p.mu, p.decay) for p in priors]
        decoded = spec_decode(payload, [len(t) for t in tensors], entries)
        assert decoded == [t.tolist() for t in tensors], f"trial {trial}"
        assert spec_encode([t.tolist() for t in tensors], entries) == payload, f"trial {trial}"


def test_empty_and_single_symbol_payloads_match():
    prior = LaplacePrior(-2, 2, 0, 40000)
    assert entropy.encode([np.zeros(0, dtype=np.int64)], [prior]) == b"" == spec_encode([[]], [(-2, 2, 0, 40000)])
    for k in range(-2, 3):
        payload = entropy.encode([np.array([k])], [prior])
        assert payload == spec_encode([[k]], [(-2, 2, 0, 40000)])
        assert spec_decode(payload, [1], [(-2, 2, 0, 40000)]) == [[k]]


def test_a_payload_the_coder_cannot_have_written_is_refused():
    with pytest.raises(ValueError, match="invalid payload"):
        SpecDecoder(b"\xff" * 8).decode(coder_cdf([1, (1 << 24) - 1]))


def sections(data: bytes):
    """Section 1's layout: each section's config, table entries and payload."""
    desc_len = struct.unpack_from("<H", data, 6)[0]
    pos = 8 + desc_len
    (n_sections,) = struct.unpack_from("<H", data, pos)
    pos += 2
    for _ in range(n_sections):
        cfg = ModelConfig(*struct.unpack_from("<BBBBHHHBBHBHBB", data, pos))
        pos += 19
        shapes = list(tensor_shapes(cfg).values())
        entries = []
        for _ in shapes:
            _, lo, hi, mu, decay = struct.unpack_from("<BhhhH", data, pos)
            entries.append((lo, hi, mu, decay))
            pos += 9
        (length,) = struct.unpack_from("<I", data, pos)
        yield [int(np.prod(s)) for s in shapes], entries, data[pos + 4 : pos + 4 + length]
        pos += 4 + length
    assert pos == len(data) - 4


@pytest.mark.parametrize("name", ["v1/gray_k2_mgrenc_13x11.nxc", "stereo_k2_3windows_8khz.nxc"])
def test_spec_decoder_decodes_conformance_streams_like_nxcodec(name):
    data = (CONFORMANCE / name).read_bytes()
    ours = [[qt.ints.ravel().tolist() for qt in s.tensors.values()] for s in container.read(data).sections]
    theirs = [spec_decode(payload, sizes, entries) for sizes, entries, payload in sections(data)]
    assert theirs == ours
    assert [spec_encode(t, e) for t, (_, e, _) in zip(theirs, sections(data))] == [p for *_, p in sections(data)]
