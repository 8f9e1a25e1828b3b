"""Fitting a Neural-Experts network to one signal: manager pretraining, then the gated fit.

The fit draws random mini-batches of points, uses Adam with a cosine learning-rate decay,
and spends its last part on the experts alone (encoder and manager frozen) so that the
routing the decoder will use is settled. A NaN or a jump in the loss restores the last
good state and halves the learning rate; it never reaches a stream.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

from nxcodec.errors import NxcError
from nxcodec.fit.losses import balanced_label_loss, gated_mse
from nxcodec.model import NeuralExperts
from nxcodec.signals.base import psnr_from_mse


@dataclass
class FitSettings:
    """How long and how hard to fit."""

    iters: int = 2000
    lr: float = 1e-3  # measured: 2e-3 is unstable for the wider networks of the higher qualities
    batch: int = 1 << 14  # measured: at equal time, twice the steps of 2**15 points fit better
    pretrain_frac: float = 0.1
    pretrain_min_iters: int = 300
    pretrain_lr: float = 5e-3
    manager_lr_frac: float = 0.1  # a slower manager keeps one expert from taking everything
    experts_only_frac: float = 0.2
    final_lr_frac: float = 0.05
    max_restarts: int = 6
    progress: bool = False
    desc: str = "fit"


@dataclass
class FitLog:
    """What happened during a fit (for ``-v`` and the benchmarks)."""

    losses: list[float] = field(default_factory=list)
    restarts: int = 0
    iters_done: int = 0


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def voronoi_labels(coords: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Label every point with the nearest of ``k`` seed points drawn from the domain.

    A random partition into ``k`` connected cells of similar size: coherent enough for a
    small manager to learn, random enough to spread the experts over the whole domain.
    """
    seeds = coords[torch.randperm(coords.shape[0], generator=gen)[:k].to(coords.device)]
    return torch.cat([torch.cdist(c, seeds).argmin(dim=1) for c in coords.split(1 << 16)])


def pretrain_manager(
    model: NeuralExperts, coords: torch.Tensor, iters: int, lr: float, batch: int, gen: torch.Generator
) -> None:
    """Train the manager alone towards random, balanced expert labels (a Voronoi partition).

    This spreads the experts over the domain before the gated fit; without it one expert
    tends to take everything. The reference draws an independent label per point; a
    manager small enough to be worth its bits cannot learn that, so the labels here are
    random cells instead. The expert encoder is frozen here, so its features are computed
    once.
    """
    k = model.cfg.n_experts
    if k == 1 or iters <= 0:
        return
    n = coords.shape[0]
    labels = voronoi_labels(coords, k, gen)
    with torch.no_grad():
        enc = [model.encode(coords[i : i + batch]) for i in range(0, n, batch)]
        g = torch.cat([e[0] for e in enc])
        h = torch.cat([e[1] for e in enc])
    opt = torch.optim.Adam(model.manager_parameters(), lr=lr)
    for _ in range(iters):
        idx = torch.randint(0, n, (min(batch, n),), generator=gen, device="cpu").to(coords.device)
        loss = balanced_label_loss(model.gate_logits(g[idx], h[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def fit(
    model: NeuralExperts,
    coords: torch.Tensor,
    target: torch.Tensor,
    settings: FitSettings,
    gen: torch.Generator,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = gated_mse,
) -> FitLog:
    """Fit ``model`` so that its routed prediction at ``coords`` approximates ``target``."""
    log = FitLog()
    n = coords.shape[0]
    batch = min(settings.batch, n)
    pre = int(settings.iters * settings.pretrain_frac) if model.cfg.n_experts > 1 else 0
    pretrain_manager(model, coords, max(pre, settings.pretrain_min_iters), settings.pretrain_lr, batch, gen)
    iters = settings.iters - pre
    freeze_at = int(iters * (1 - settings.experts_only_frac))
    manager = model.manager_parameters()
    shared = [*model.encoder.parameters(), *manager]
    others = [p for p in model.parameters() if all(p is not m for m in manager)]
    opt = torch.optim.Adam([{"params": others, "scale": 1.0}, {"params": manager, "scale": settings.manager_lr_frac}])
    lr_scale = 1.0
    good_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    best = math.inf
    bar = _progress(iters, settings.progress, settings.desc)
    it = 0
    while it < iters:
        t = it / max(iters - 1, 1)
        cosine = settings.final_lr_frac + (1 - settings.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))
        for group in opt.param_groups:
            group["lr"] = settings.lr * lr_scale * cosine * group["scale"]
        idx = torch.randint(0, n, (batch,), generator=gen, device="cpu").to(coords.device)
        preds, logits = model.forward_all(coords[idx])
        loss = loss_fn(preds, logits, target[idx])
        value = float(loss.detach())
        if not math.isfinite(value) or value > 20 * best + 1e-3:
            log.restarts += 1
            if log.restarts > settings.max_restarts:
                raise NxcError("fitting diverged repeatedly; try a lower --quality or another --seed")
            model.load_state_dict(good_state[0])
            opt.load_state_dict(good_state[1])
            lr_scale *= 0.5
            best = math.inf  # the restored state is older: judge divergence afresh from it
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if it >= freeze_at:
            for p in shared:
                p.grad = None
        opt.step()
        best = min(best, value)
        log.losses.append(value)
        if it % 100 == 0:
            good_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
        if bar is not None:
            bar.update(1)
            if it % 20 == 0:
                bar.set_postfix(loss=f"{value:.2e}", psnr=f"{psnr_from_mse(value, 2.0):.2f}")
        it += 1
    if bar is not None:
        bar.close()
    log.iters_done = iters
    return log
