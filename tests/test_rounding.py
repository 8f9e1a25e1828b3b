"""Rounding the synthesis weights with error feedback: what it minimises, the input moments it uses, and image
streams coded with it."""

from __future__ import annotations

import numpy as np
import pytest

from nxcodec.fit import latent_code, rounding
from nxcodec.fit.latent import LatentModel
from nxcodec.latent import stream
from nxcodec.latent.synthesis import features, mlp
from nxcodec.signals import for_name


def test_uncorrelated_inputs_round_to_the_nearest_step():
    w = np.random.default_rng(0).normal(size=(6, 5))
    for moment in (np.eye(6), np.diag([1.0, 2, 3, 4, 5, 6]), np.zeros((6, 6))):
        assert np.array_equal(rounding.round_with_feedback(w, 0.3, moment), np.rint(w / 0.3))


def test_correlated_inputs_keep_the_layer_output_closer_than_nearest_rounding():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 3)) @ rng.normal(size=(3, 8)) + 0.1 * rng.normal(size=(4000, 8))
    w, step = rng.normal(size=(8, 4)), 0.25
    q = rounding.round_with_feedback(w, step, x.T @ x / len(x))
    nearest = np.rint(w / step)
    assert q.dtype == np.int64 and not np.array_equal(q, nearest)
    err = np.mean((x @ (w - q * step)) ** 2)
    assert err < 0.5 * np.mean((x @ (w - nearest * step)) ** 2)


def _network(rng, levels, width, channels, experts=1, refine=4):
    """Random float weights of a synthesis (and manager, with several experts), as ``coded_tensors`` names them."""
    w = {"upsample": np.array([-0.0234375, 0.2265625, 0.8671875, -0.0703125])}
    if experts > 1:
        w.update({"manager.0.weight": rng.normal(size=(levels, 4)), "manager.0.bias": rng.normal(size=4),
                  "manager.out.weight": rng.normal(size=(4, experts)), "manager.out.bias": np.zeros(experts)})
    dims = [levels, width, channels]
    for j, (a, b) in zip(("0", "out"), zip(dims, dims[1:])):
        w[f"experts.{j}.weight"] = rng.normal(size=(experts, a, b)) / np.sqrt(a)
        w[f"experts.{j}.bias"] = rng.normal(size=(experts, b)) * 0.1
    w["refine.0.weight"] = rng.normal(size=(refine, channels, 3, 3)) * 0.2
    w["refine.0.bias"] = rng.normal(size=refine) * 0.1
    w["refine.1.weight"] = rng.normal(size=(channels, refine, 3, 3)) * 0.2
    w["refine.1.bias"] = np.zeros(channels)
    return w


def _patches(x):
    """Every pixel's zero-padded 3x3 patch of ``x`` (channels, rows, cols), written plainly."""
    c, h, wd = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    return np.array([[p[k, r + dy, s + dx] for k in range(c) for dy in range(3) for dx in range(3)]
                     for r in range(h) for s in range(wd)])


def test_input_moments_are_the_layers_input_second_moments(monkeypatch):
    rng = np.random.default_rng(2)
    rows, cols, channels = 13, 11, 3
    latents = [rng.normal(size=(-(-rows >> l), -(-cols >> l))) for l in range(3)]
    w = _network(rng, 3, 5, channels)
    monkeypatch.setattr(rounding, "ROWS", 40)  # blocks and bands of a few rows
    got = rounding.input_moments(w, latents, channels)
    x = features([lat * 256 for lat in latents], w["upsample"], np.float64).reshape(3, -1).T
    h = np.maximum(x @ w["experts.0.weight"][0] + w["experts.0.bias"][0], 0)
    out = h @ w["experts.out.weight"][0] + w["experts.out.bias"][0]
    p0 = _patches(out.T.reshape(channels, rows, cols))
    hidden = np.maximum(p0 @ w["refine.0.weight"].reshape(4, -1).T + w["refine.0.bias"], 0)
    p1 = _patches(hidden.T.reshape(4, rows, cols))
    want = {"experts.0.weight": x, "experts.out.weight": h, "refine.0.weight": p0, "refine.1.weight": p1}
    assert set(got) == set(want)
    for name, inputs in want.items():  # to binary32's precision, the whole-image arrays' type
        moment = inputs.T @ inputs / len(inputs)
        np.testing.assert_allclose(got[name][0], moment, rtol=1e-5, atol=1e-6 * np.abs(moment).max())


def test_each_expert_gets_the_moments_of_the_pixels_routed_to_it():
    rng = np.random.default_rng(3)
    rows, cols = 16, 16
    latents = [rng.normal(size=(-(-rows >> l), -(-cols >> l))) for l in range(3)]
    w = _network(rng, 3, 4, 1, experts=3)
    got = rounding.input_moments(w, latents, 1)["experts.0.weight"]
    grids = [lat * 256 for lat in latents]
    x = features(grids, w["upsample"], np.float64).reshape(3, -1).T
    r, c = np.divmod(np.arange(rows * cols), cols)
    inputs = np.stack([g[r >> l, c >> l] for l, g in enumerate(grids)], axis=1) / 256
    which = np.argmax(mlp(inputs, [(w["manager.0.weight"], w["manager.0.bias"]),
                                   (w["manager.out.weight"], w["manager.out.bias"])]), axis=1)
    assert len(set(which)) > 1
    for k in range(3):
        sel = x[which == k]
        want = sel.T @ sel / max(len(sel), 1)
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_coded_images_decode_to_what_the_coder_measured():
    """A stream whose synthesis was rounded with feedback decodes like any other: to the coder's own samples."""
    rng = np.random.default_rng(4)
    original = rng.integers(0, 256, size=(32, 24, 3), dtype=np.uint8)
    d = for_name("image").from_array(original).descriptor
    cfg = stream.LatentConfig(levels=3, arm_width=4, arm_layers=2, n_experts=1, mgr_width=0, syn_width=6,
                              syn_layers=1, refine_width=4, lanes_log2=0)
    model = LatentModel(cfg, 1, (32, 24), 3, seed=0)
    weights = {n: t.detach().numpy() for n, t in model.coded_tensors(0).items()}
    latents = [rng.normal(size=lat.shape[1:]) * 2 for lat in model.latents]
    best = latent_code.code_image(d, cfg, weights, latents, original, 1e-3, None)
    assert np.array_equal(stream.decode(best.data)[1], best.samples)
    assert best.cost == pytest.approx(best.mse + 1e-3 * 8 * len(best.data) / (32 * 24))
