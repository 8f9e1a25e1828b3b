import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nxcodec import entropy
from nxcodec.entropy import TOTAL, LaplacePrior, fit_prior

int_arrays = arrays(np.int64, st.integers(0, 400), elements=st.integers(-3000, 3000))


@settings(max_examples=60, deadline=None)
@given(st.lists(int_arrays, min_size=1, max_size=4))
def test_round_trip_of_any_integers(tensors):
    priors = [fit_prior(t) for t in tensors]
    payload = entropy.encode(tensors, priors)
    decoded = entropy.decode(payload, [t.size for t in tensors], priors)
    for a, b in zip(tensors, decoded):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(st.integers(-200, 0), st.integers(0, 200), st.integers(0, 65535), st.data())
def test_frequency_table_is_exact(lo, hi, decay, data):
    mu = data.draw(st.integers(lo, hi))
    f = LaplacePrior(lo, hi, mu, decay).frequencies()
    assert f.sum() == TOTAL
    assert f.min() >= 1
    assert f.argmax() == mu - lo


def test_coded_size_is_close_to_ideal_and_to_entropy():
    rng = np.random.default_rng(1)
    q = np.rint(rng.laplace(0, 5, 20000)).astype(np.int64)
    prior = fit_prior(q)
    payload = entropy.encode([q], [prior])
    ideal = prior.code_length_bits(q)
    assert len(payload) * 8 <= ideal + 64
    _, counts = np.unique(q, return_counts=True)
    p = counts / counts.sum()
    empirical = -(p * np.log2(p)).sum() * q.size
    assert ideal < empirical * 1.02


def test_constant_tensor_costs_nothing():
    q = np.full(100, 7)
    prior = fit_prior(q)
    assert prior.size == 1
    assert entropy.encode([q], [prior]) == b""
    np.testing.assert_array_equal(entropy.decode(b"", [100], [prior])[0], q)


def test_prior_rejects_bad_ranges():
    with pytest.raises(ValueError):
        LaplacePrior(5, 3, 4, 100)
    with pytest.raises(ValueError):
        LaplacePrior(-40000, 0, 0, 100)
    with pytest.raises(ValueError):
        fit_prior(np.array([0, 70000]))


def spec_frequencies(p: LaplacePrior) -> np.ndarray:
    """SPEC.md section 6, step by step (the loop the vectorised table must reproduce bit for bit)."""
    n, span = p.size, max(p.mu - p.lo, p.hi - p.mu)
    g, value = [], 1 << 30
    for _ in range(span + 1):
        g.append(value)
        value = value * p.decay // 65536
    raw = np.array([g[abs(k - p.mu)] for k in range(p.lo, p.hi + 1)], dtype=np.int64)
    f = 1 + raw * (TOTAL - n) // int(raw.sum())
    f[p.mu - p.lo] += TOTAL - int(f.sum())
    return f


def test_vectorised_tables_equal_the_spec_loop_bit_for_bit():
    rng = np.random.default_rng(3)
    cases = [(-32767, 32767, 0, 65535), (-32767, 32767, 32767, 65535), (-32767, 32767, -32767, 1), (0, 0, 0, 0),
             (-5, 5, 0, 0), (-100, 100, 0, 65534), (-3, 60000 - 32767, 0, 65000)]
    cases += [(-2000, 2000, 17, d) for d in (0, 1, 2, 1000, 30000, 60000, 65000, 65500, 65530, 65535)]
    for _ in range(150):
        lo = int(rng.integers(-32767, 32768))
        hi = int(rng.integers(lo, min(32767, lo + 3000) + 1))
        decay = int(rng.choice([rng.integers(0, 65536), 65536 - rng.integers(1, 3000), 65536 - rng.integers(1, 30)]))
        cases.append((lo, hi, int(rng.integers(lo, hi + 1)), decay))
    for lo, hi, mu, decay in cases:
        p = LaplacePrior(lo, hi, mu, decay)
        expected = spec_frequencies(p)
        np.testing.assert_array_equal(p.frequencies(), expected)
        np.testing.assert_array_equal(p.frequencies(), expected)  # again, from the cache


def test_a_maximal_table_is_fast():
    import time

    t0 = time.perf_counter()
    for decay in (65535, 65534, 65000):
        assert LaplacePrior(-32767, 32767, 0, decay).frequencies().sum() == TOTAL
    assert time.perf_counter() - t0 < 0.5
