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
from nxcodec.signals.image import IMAGE_SHAPE


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
