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
