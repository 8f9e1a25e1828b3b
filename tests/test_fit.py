"""The fitting loop: it learns, spreads the experts, and recovers from divergence."""

import math

import pytest
import torch
from conftest import real_image

from nxcodec.errors import NxcError
from nxcodec.fit.losses import gated_mse
from nxcodec.fit.train import FitSettings, fit, fit_stack
from nxcodec.model import NeuralExperts
from nxcodec.model.stack import ModelStack
from nxcodec.signals import for_name
from nxcodec.fit.presets import IMAGE_SHAPE


def problem():
    image = for_name("image")
    signal = image.from_array(real_image((32, 24)))
    cfg = IMAGE_SHAPE.config(3, 8)  # four experts
    return NeuralExperts(cfg), image.coords(signal.descriptor, 0, 32 * 24), image.targets(signal)


def mse(model, coords, target):
    return float(((model.predict(coords) - target) ** 2).mean())


def test_fit_reduces_the_error_and_uses_several_experts():
    torch.manual_seed(0)
    model, coords, target = problem()
    before = mse(model, coords, target)
    fit(model, coords, target, FitSettings(iters=200), torch.Generator().manual_seed(0))
    assert mse(model, coords, target) < before / 10
    assert len(model.forward_routed(coords)[1].unique()) >= 2


def test_nan_is_recovered_from_and_never_kept():
    torch.manual_seed(0)
    model, coords, target = problem()
    calls = {"n": 0}

    def flaky(preds, logits, tgt):
        calls["n"] += 1
        loss = gated_mse(preds, logits, tgt)
        return loss * float("nan") if calls["n"] in (50, 120) else loss

    before = mse(model, coords, target)
    log = fit(model, coords, target, FitSettings(iters=200), torch.Generator().manual_seed(0), loss_fn=flaky)
    assert log.restarts == 2
    assert all(math.isfinite(p.detach().sum().item()) for p in model.parameters())
    assert mse(model, coords, target) < before / 5


def test_a_diverging_network_of_a_stack_leaves_the_others_alone():
    torch.manual_seed(0)
    model, coords, target = problem()
    twin = NeuralExperts(model.cfg)
    stack = ModelStack([model, twin])
    xs, ys = torch.stack([coords, coords]), torch.stack([target, target.flip(0)])
    calls = {"n": 0}

    def first_breaks_once(preds, logits, tgt):
        calls["n"] += 1
        loss = gated_mse(preds, logits, tgt)
        return loss * torch.tensor([float("nan"), 1.0]) if calls["n"] == 60 else loss

    before = [mse(stack.model(i), coords, ys[i]) for i in range(2)]
    logs = fit_stack(stack, xs, ys, FitSettings(iters=200), torch.Generator().manual_seed(0), first_breaks_once)
    assert [log.restarts for log in logs] == [1, 0]
    for i in range(2):
        fitted = stack.model(i)
        assert all(math.isfinite(p.detach().sum().item()) for p in fitted.parameters())
        assert mse(fitted, coords, ys[i]) < before[i] / 5
    assert mse(stack.model(1), coords, ys[0]) > 2 * mse(stack.model(1), coords, ys[1])  # each fits its own


def test_persistent_divergence_is_a_clear_error():
    torch.manual_seed(0)
    model, coords, target = problem()

    def broken(preds, logits, tgt):
        return gated_mse(preds, logits, tgt) * float("inf")

    with pytest.raises(NxcError, match="diverged"):
        fit(model, coords, target, FitSettings(iters=300), torch.Generator().manual_seed(0), loss_fn=broken)


def test_networks_of_one_family_share_a_stack_exactly():
    """Different widths and first-layer frequencies, padded into one stack: each computes as its own network,
    learns only its own weights, and comes back out with its own shape."""
    from dataclasses import replace

    from nxcodec.model.stack import family

    torch.manual_seed(0)
    base = replace(IMAGE_SHAPE.config(3, 8), mgr_enc_depth=0)  # four experts, manager over the encoder features
    cfgs = [base, replace(base, enc_width=7, expert_width=5, mgr_width=3, w0_first=17)]
    assert family(cfgs[0]) == family(cfgs[1])
    models = [NeuralExperts(c) for c in cfgs]
    stack = ModelStack([models[0], models[1]])
    assert stack.cfgs == cfgs and stack.cfg.w0_first == 30
    coords = torch.rand(2, 300, 2) * 2 - 1
    preds, logits = stack(coords)
    for i, m in enumerate(models):
        p, lg = m.forward_all(coords[i])
        torch.testing.assert_close(preds[i], p, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(logits[i], lg, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(stack.predict(coords)[i], m.forward_routed(coords[i])[0], atol=1e-5, rtol=1e-4)
        assert {k: tuple(v.shape) for k, v in stack.coded_tensors(i).items()} == \
            {k: tuple(v.shape) for k, v in m.coded_tensors().items()}
    # the second network's data is shorter: its padded rows are never drawn, its padded weights stay zero
    target = torch.stack([torch.rand(300, 3), torch.cat([torch.rand(200, 3), torch.full((100, 3), 50.0)])])
    logs = fit_stack(stack, coords, target, FitSettings(iters=60), torch.Generator().manual_seed(0),
                     lengths=torch.tensor([300, 200]))
    assert all(math.isfinite(log.losses[-1]) and log.losses[-1] < 1.0 for log in logs)  # 50s would cost ~2500
    small = stack.coded_tensors(1)
    for name, path in stack.stream_names().items():
        padded = stack.params[path][1].detach().clone()
        padded[tuple(slice(0, n) for n in small[name].shape)] = 0
        assert padded.abs().max() == 0, name
    fitted = stack.model(1)
    assert fitted.cfg == cfgs[1]
    torch.testing.assert_close(fitted.forward_all(coords[1])[0], stack(coords)[0][1], atol=1e-5, rtol=1e-4)


def test_configs_of_different_families_cannot_share_a_stack():
    from dataclasses import replace

    cfg = IMAGE_SHAPE.config(3, 8)
    with pytest.raises(ValueError, match="family"):
        ModelStack([NeuralExperts(cfg), NeuralExperts(replace(cfg, expert_depth=1))])
