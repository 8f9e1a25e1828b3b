"""Quantization-aware fine-tuning: fit with the weights rounded to their steps.

The forward pass sees ``w + stopgrad(round(w / s) * s - w)`` (straight-through rounding),
so each network learns weights that survive quantization; the float weights keep
receiving the gradient. Works on a stack: each network has its own steps.
"""

from __future__ import annotations

import math

import torch

from nxcodec.fit.adam import StackAdam
from nxcodec.fit.losses import LossFn, gated_mse
from nxcodec.fit.train import CHECK_EVERY, point_sampler, take
from nxcodec.model.stack import ModelStack
from nxcodec.quant import step_from_code


def stacked_steps(stack: ModelStack, codes: list[dict[str, int]]) -> dict[str, torch.Tensor]:
    """Module path -> the steps of every network, shaped to broadcast against the stacked tensor."""
    out = {}
    for name, path in stack.stream_names().items():
        p = stack.params[path]
        steps = torch.tensor([float(step_from_code(c[name])) for c in codes], dtype=p.dtype, device=p.device)
        out[path] = steps.view(-1, *[1] * (p.dim() - 1))
    return out


def fake_quantize(params: dict[str, torch.Tensor], steps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Straight-through rounded copies of the stacked tensors."""
    return {k: p + (torch.round(p / steps[k]) * steps[k] - p).detach() for k, p in params.items()}


def quantization_aware_fit(
    stack: ModelStack,
    coords: torch.Tensor,
    target: torch.Tensor,
    codes: list[dict[str, int]],
    iters: int,
    lr: float,
    batch: int,
    gen: torch.Generator,
    lengths: torch.Tensor | None = None,
    loss_fn: LossFn = gated_mse,
) -> None:
    """Fine-tune every network of ``stack`` in place for ``iters`` steps under straight-through rounding.

    A network whose loss turns non-finite goes back to where it started and stops.
    ``lengths`` and ``loss_fn`` as for :func:`~nxcodec.fit.train.fit_stack`.
    """
    if iters <= 0:
        return
    m, n = coords.shape[:2]
    batch = min(batch, n)
    steps = stacked_steps(stack, codes)
    opt = StackAdam(stack.params)
    start = {k: v.detach().clone() for k, v in stack.params.items()}
    active = torch.ones(m, device=coords.device)
    draw = point_sampler(gen, coords.device, lengths)
    window: list[torch.Tensor] = []
    for it in range(iters):
        idx = draw(m, n, batch)
        preds, logits = stack(take(coords, idx), "all", fake_quantize(stack.params, steps))
        losses = loss_fn(preds, logits, take(target, idx))
        losses.sum().backward()
        opt.step(lr * 0.5 * (1 + math.cos(math.pi * it / iters)) * active)
        window.append(losses.detach())
        if len(window) == CHECK_EVERY or it == iters - 1:
            bad = ~torch.isfinite(torch.stack(window)).all(dim=0)
            window = []
            if bad.any():
                with torch.no_grad():
                    for k, v in stack.params.items():
                        v[bad] = start[k][bad]
                        opt.exp_avg[k][bad] = 0.0
                        opt.exp_avg_sq[k][bad] = 0.0
                active[bad] = 0.0
