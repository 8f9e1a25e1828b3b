"""Quantization-aware fine-tuning: fit with the weights rounded to their steps.

The forward pass sees ``w + stopgrad(round(w / s) * s - w)`` (straight-through rounding),
so the network learns weights that survive quantization; the float weights keep
receiving the gradient.
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call

from nxcodec.fit.losses import gated_mse
from nxcodec.model import NeuralExperts
from nxcodec.quant import step_from_code


def fake_quantize(model: NeuralExperts, codes: dict[str, int]) -> dict[str, torch.Tensor]:
    """Module-path name -> straight-through rounded tensor, for ``functional_call``."""
    path = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for name, p in model.coded_tensors().items():
        s = float(step_from_code(codes[name]))
        out[path[id(p)]] = p + (torch.round(p / s) * s - p).detach()
    return out


def quantization_aware_fit(
    model: NeuralExperts,
    coords: torch.Tensor,
    target: torch.Tensor,
    codes: dict[str, int],
    iters: int,
    lr: float,
    batch: int,
    gen: torch.Generator,
) -> None:
    """Fine-tune ``model`` in place for ``iters`` steps under straight-through rounding."""
    if iters <= 0:
        return
    n = coords.shape[0]
    batch = min(batch, n)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for it in range(iters):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * it / iters))
        idx = torch.randint(0, n, (batch,), generator=gen, device="cpu").to(coords.device)
        preds, logits = functional_call(model, fake_quantize(model, codes), (coords[idx],))
        loss = gated_mse(preds, logits, target[idx])
        if not torch.isfinite(loss):
            model.load_state_dict(start)
            return
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
