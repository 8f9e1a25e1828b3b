"""Fitting Neural-Experts networks to signals: manager pretraining, then the gated fit.

Everything here fits a :class:`~nxcodec.model.stack.ModelStack`: ``M`` networks, each to
its own signal (or section of one), in the same steps. The fit draws random
mini-batches of points, uses Adam with a cosine learning-rate decay, and spends its last
part on the experts alone (encoder and manager frozen) so that the routing the decoder
will use is settled. Every ``CHECK_EVERY`` steps the losses are inspected: a network
whose loss became NaN or jumped is put back to its last good state with half its
learning rate; the other networks go on, and a bad state never reaches a stream.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

from nxcodec.errors import NxcError
from nxcodec.fit.adam import StackAdam
from nxcodec.fit.losses import LossFn, balanced_label_loss, gated_mse
from nxcodec.model import NeuralExperts
from nxcodec.model.stack import ModelStack
from nxcodec.signals.base import psnr_from_mse

CHECK_EVERY = 25  # steps between looks at the losses (each look waits for the GPU)



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
    """What happened during one network's fit (for ``-v`` and the benchmarks)."""

    losses: list[float] = field(default_factory=list)
    restarts: int = 0
    iters_done: int = 0


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def point_sampler(gen: torch.Generator, device: torch.device,
                  lengths: torch.Tensor | None = None) -> Callable[[int, int, int], torch.Tensor]:
    """``draw(m, n, b)``: ``b`` random point indices below ``n`` for each of ``m`` networks.

    With ``lengths`` (one per network, for a stack of sections of different sizes padded
    to ``n``), network ``i``'s indices stay below ``lengths[i]``. On a GPU the indices come
    from a device generator seeded from ``gen`` (no copy per step); on the CPU from ``gen``
    itself, so a CPU encode is reproducible from its seed.
    """
    if lengths is not None and bool((lengths == lengths.max()).all()):
        lengths = None  # one length: the plain draw
    dgen = gen
    if device.type != "cpu":
        dgen = torch.Generator(device=device)
        dgen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
    if lengths is None:
        return lambda m, n, b: torch.randint(0, n, (m, b), generator=dgen, device=device)
    top = lengths.to(device=device, dtype=torch.float64).view(-1, 1)
    last = lengths.to(device).view(-1, 1) - 1
    return lambda m, n, b: torch.minimum((torch.rand((m, b), generator=dgen, device=device, dtype=torch.float64)
                                          * top).long(), last)


def take(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``values[i, idx[i]]`` for every network ``i``: ``(M, n, C)`` and ``(M, B)`` give ``(M, B, C)``."""
    return torch.take_along_dim(values, idx.unsqueeze(-1), dim=1)


def voronoi_labels(coords: torch.Tensor, k: int, gen: torch.Generator,
                   lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Label every point of each network with the nearest of ``k`` seed points drawn from its domain.

    A random partition into ``k`` connected cells of similar size: coherent enough for a
    small manager to learn, random enough to spread the experts over the whole domain.
    ``coords`` is ``(M, n, d)``; the labels are ``(M, n)``.
    """
    labels = []
    for c in coords:
        seeds = c[torch.randperm(c.shape[0], generator=gen)[:k].to(c.device)]
        labels.append(torch.cat([torch.cdist(part, seeds).argmin(dim=1) for part in c.split(1 << 16)]))
    return torch.stack(labels)


def pretrain_manager(stack: ModelStack, coords: torch.Tensor, iters: int, lr: float, batch: int,
                     gen: torch.Generator, lengths: torch.Tensor | None = None) -> None:
    """Train the managers alone towards random, balanced expert labels (a Voronoi partition).

    This spreads the experts over the domain before the gated fit; without it one expert
    tends to take everything. The reference draws an independent label per point; a
    manager small enough to be worth its bits cannot learn that, so the labels here are
    random cells instead. The expert encoder is frozen here, so its features are computed once.
    """
    k = stack.cfg.n_experts
    if k == 1 or iters <= 0:
        return
    m, n = coords.shape[:2]
    labels = voronoi_labels(coords, k, gen, lengths)
    with torch.no_grad():  # the expert encoder is frozen here: its features are computed once
        parts = [stack(coords[:, a : a + (1 << 16)], "encode") for a in range(0, n, 1 << 16)]
        g, h = torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)
    manager = stack.manager_paths()
    opt = StackAdam({p: t for p, t in stack.params.items() if p in manager})
    lr_all = torch.full((m,), lr, device=coords.device)
    draw = point_sampler(gen, coords.device, lengths)
    for _ in range(iters):
        idx = draw(m, n, min(batch, n))
        params = {p: t if p in manager else t.detach() for p, t in stack.params.items()}
        logits = stack((take(g, idx), take(h, idx)), "gate", params)
        balanced_label_loss(logits, torch.take_along_dim(labels, idx, dim=1)).sum().backward()
        opt.step(lr_all)
    for t in stack.params.values():
        t.grad = None


class _Guard:
    """Keeps each network's last good state and puts back the networks that went bad."""

    def __init__(self, stack: ModelStack, opt: StackAdam, max_restarts: int, logs: list[FitLog]) -> None:
        self.stack, self.opt, self.max_restarts, self.logs = stack, opt, max_restarts, logs
        self.best = torch.full((stack.size,), math.inf)
        self.lr_scale = torch.ones(stack.size, device=next(iter(stack.params.values())).device)
        self._save()

    def _save(self) -> None:
        self.params = {k: v.detach().clone() for k, v in self.stack.params.items()}
        self.moments = self.opt.state()

    def check(self, window: list[torch.Tensor]) -> None:
        """Look at the losses of the last steps ``(steps, M)``; restore the networks that diverged."""
        losses = torch.stack(window).float().cpu()
        finite = torch.isfinite(losses).all(dim=0)
        jumped = (losses > 20 * self.best + 1e-3).any(dim=0)
        bad = ~finite | jumped
        for i in bad.nonzero().flatten().tolist():
            self.logs[i].restarts += 1
            if self.logs[i].restarts > self.max_restarts:
                raise NxcError("fitting diverged repeatedly; try a lower --quality or another --seed")
            self.lr_scale[i] *= 0.5
            self.best[i] = math.inf  # the restored state is older: judge divergence afresh from it
        if bad.any():
            mask = bad.to(next(iter(self.params.values())).device)
            with torch.no_grad():
                for k, v in self.stack.params.items():
                    v[mask] = self.params[k][mask]
            self.opt.restore(self.moments, mask)
        good = ~bad
        self.best[good] = torch.minimum(self.best[good], losses[:, good].min(dim=0).values)
        for i in good.nonzero().flatten().tolist():
            self.logs[i].losses.extend(losses[:, i].tolist())
        self._save()


def fit_stack(stack: ModelStack, coords: torch.Tensor, target: torch.Tensor, settings: FitSettings,
              gen: torch.Generator, loss_fn: LossFn = gated_mse, lengths: torch.Tensor | None = None) -> list[FitLog]:
    """Fit network ``i`` of ``stack`` so that its routed prediction at ``coords[i]`` approximates ``target[i]``.

    ``coords`` is ``(M, n, d)`` and ``target`` ``(M, n, C)`` on the stack's device;
    ``loss_fn`` returns one loss per network. ``lengths`` (``(M,)``, optional) says how
    many leading points of each network's set are real when the sets were padded to ``n``.
    """
    m, n = coords.shape[:2]
    logs = [FitLog() for _ in range(m)]
    batch = min(settings.batch, n)
    pre = int(settings.iters * settings.pretrain_frac) if stack.cfg.n_experts > 1 else 0
    pretrain_manager(stack, coords, max(pre, settings.pretrain_min_iters), settings.pretrain_lr, batch, gen,
                     lengths)
    iters = settings.iters - pre
    freeze_at = int(iters * (1 - settings.experts_only_frac))
    shared = stack.shared_paths()
    opt = StackAdam(stack.params, {p: settings.manager_lr_frac for p in stack.manager_paths()})
    guard = _Guard(stack, opt, settings.max_restarts, logs)
    draw = point_sampler(gen, coords.device, lengths)
    bar = _progress(iters, settings.progress, settings.desc)
    window: list[torch.Tensor] = []
    for it in range(iters):
        t = it / max(iters - 1, 1)
        cosine = settings.final_lr_frac + (1 - settings.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))
        idx = draw(m, n, batch)
        preds, logits = stack(take(coords, idx))
        losses = loss_fn(preds, logits, take(target, idx))
        losses.sum().backward()
        opt.step(settings.lr * cosine * guard.lr_scale, shared if it >= freeze_at else set())
        window.append(losses.detach())
        if len(window) == CHECK_EVERY or it == iters - 1:
            guard.check(window)
            window = []
            if bar is not None:
                mean = float(min(log.losses[-1] if log.losses else math.inf for log in logs))
                bar.set_postfix(loss=f"{mean:.2e}", psnr=f"{psnr_from_mse(mean, 2.0):.2f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    for log in logs:
        log.iters_done = iters
    return logs


def fit(model: NeuralExperts, coords: torch.Tensor, target: torch.Tensor, settings: FitSettings,
        gen: torch.Generator, loss_fn: LossFn = gated_mse) -> FitLog:
    """Fit one network in place (a stack of one): ``coords`` ``(n, d)``, ``target`` ``(n, C)``."""
    stack = ModelStack([model])
    log = fit_stack(stack, coords.unsqueeze(0), target.unsqueeze(0), settings, gen, loss_fn)[0]
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(stack.params[name][0])
    return log
