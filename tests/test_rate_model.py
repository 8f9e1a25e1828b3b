"""The audio rate model: predicted bits of a plane at a lambda, and the lambda for a number of bits."""
import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from nxcodec.fit import rate_model


def direct_bits(c: np.ndarray, lam: float) -> float:
    energy = uniform_filter(c**2, size=3, mode="nearest")
    return float(np.sum(np.maximum(0.0, 0.5 * np.log2(np.maximum(energy, 1e-300) / lam))))


@pytest.mark.parametrize("lam", [1e-6, 1e-4, 1e-2])
def test_the_histogram_gives_the_water_filling_bits(lam):
    c = np.random.default_rng(1).laplace(0, 0.02, (40, 64)) * np.linspace(0.1, 3, 64)
    model = rate_model.PlaneRate(c)
    assert model.counts.sum() == c.size
    assert model.bits(lam) == pytest.approx(direct_bits(c, lam), rel=0.01)


def test_bits_fall_as_lambda_rises_and_silence_costs_nothing():
    c = np.random.default_rng(2).normal(0, 0.05, (32, 32))
    model = rate_model.PlaneRate(c)
    bits = [model.bits(lam) for lam in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)]
    assert all(a > b for a, b in zip(bits, bits[1:]))
    assert rate_model.PlaneRate(np.zeros((8, 8))).bits(1e-6) == 0.0


def test_one_lambda_for_several_planes_meets_their_bits_and_favours_the_loud_one():
    rng = np.random.default_rng(3)
    loud, quiet = rate_model.PlaneRate(rng.normal(0, 0.3, (64, 64))), rate_model.PlaneRate(rng.normal(0, 0.003, (64, 64)))
    lam = rate_model.lambda_for_bits([loud, quiet], 20000.0)
    assert loud.bits(lam) + quiet.bits(lam) == pytest.approx(20000.0, rel=1e-3)
    assert loud.bits(lam) > 3 * quiet.bits(lam)
    assert rate_model.lambda_for_bits([loud], -1.0) == pytest.approx(rate_model.LAMBDA_RANGE[1])
    assert rate_model.lambda_for_bits([loud], 1e12) == pytest.approx(rate_model.LAMBDA_RANGE[0])
