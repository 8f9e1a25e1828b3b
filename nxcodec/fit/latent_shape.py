"""Encoding shapes as format version 8: a truncated signed distance on 3-D latent grids, and an occupancy map.

The occupancy map (``nxcodec.latent.occupancy``) marks the cells the surface may cross;
only the latents at their corners are fitted and coded, and the field in the other cells
is a constant inside or outside. Shapes of one grid size are fitted side by side
(:class:`ShapeModel`, the latent model of ``nxcodec.fit.latent`` with a volume's grids):
each step draws a batch of the training samples (on the surface, near it, in the
occupied cells), interpolates every grid at them as the decoder does, routes and
synthesizes, and pays the gate-weighted absolute error plus lambda times the latents'
bits (per KB).

Coding goes through the decoder's own modules and the image coder's precision and
dead-zone search, scored by the decoded field's error on the samples; a size target
(``--kb``) is never exceeded. Where the preset's context models are the size of the
decoder's built-in ones (``nxcodec.latent.builtin``), those are used, frozen, and not coded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn.functional as F

from nxcodec.errors import NxcError
from nxcodec.fit import presets
from nxcodec.fit.latent import LatentModel, LatentSchedule, _kmeans_labels, expert_loss, optimise
from nxcodec.fit.latent_code import Candidate, OverTarget, code_in_parallel, code_shape, coding_workers
from nxcodec.latent import builtin, tables
from nxcodec.latent import occupancy as occupancy_map
from nxcodec.latent import shape as latent_shape
from nxcodec.latent.context import COARSE_OFFSETS_3D, SAME_OFFSETS_3D
from nxcodec.latent.occupancy import Occupancy
from nxcodec.latent.shape import ShapeLatentDescriptor
from nxcodec.latent.stream import FLAG_BUILTIN_CONTEXT, LatentConfig
from nxcodec.signals.base import Signal

if TYPE_CHECKING:
    from nxcodec.codec import EncodeOptions, EncodeResult
    from nxcodec.signals.base import Modality

BATCH_CPU = 1 << 14  # training samples per step
BATCH_GPU = 1 << 17
EVAL_POINTS = 1 << 15  # samples the coding choices are scored on
STACK_LATENTS_CPU = 1 << 21  # shapes fitted together: latents of the finest grids in one stack
STACK_LATENTS_GPU = 1 << 25
INIT_SCALE = 2.0  # latents start at this many units x the truncated distance (0: at zero)


class ShapeModel(LatentModel):
    """The latents and networks of ``M`` shapes with grids of ``2**grid_log2 + 1`` vertices per axis."""

    scales = tables.COARSE  # version 8: the built-in context models were fitted to these tables

    def __init__(self, cfg: LatentConfig, m: int, grid_log2: int, seed: int = 0) -> None:
        super().__init__(cfg, m, ((1 << grid_log2) + 1,) * 3, 1, seed)
        self._index_cache: dict = {}

    def _passes(self, size: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self._indices(size, device)[:2]

    def _first_layers(self, coarser: torch.Tensor | None, size: tuple[int, ...], idx_a: torch.Tensor,
                      idx_b: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """As :meth:`LatentModel._first_layers`, with the first layers as 3x3x3 convolutions: the same sums,
        without gathering 27 or 41 values per latent."""
        _, _, parent_a, parent_b = self._indices(size, idx_a.device)
        if coarser is None:
            coarse_a, coarse_b = (torch.zeros(self.m, len(i), self.nets[k][0][0].shape[-1], device=idx_a.device)
                                  for i, k in ((idx_a, "arm_a"), (idx_b, "arm_b")))
        else:
            coarse_a = self._conv(coarser, "arm_a", COARSE_OFFSETS_3D, 0).index_select(1, parent_a)
            coarse_b = self._conv(coarser, "arm_b", COARSE_OFFSETS_3D, len(SAME_OFFSETS_3D)).index_select(1, parent_b)

        def pass_b(grid: torch.Tensor) -> torch.Tensor:
            return self._conv(grid, "arm_b", SAME_OFFSETS_3D, 0).index_select(1, idx_b) + coarse_b

        return coarse_a, pass_b

    def _conv(self, grid: torch.Tensor, key: str, offsets: tuple, first: int) -> torch.Tensor:
        """(M, positions, width): ``sum over offsets d of grid[i + d] * W[first + j(d)]`` at every position ``i``
        of ``grid`` (M, n, n, n), zero outside, with ``W`` the first-layer weight of ``key``."""
        w = self.nets[key][0][0][:, first : first + len(offsets)]  # (M, len(offsets), width)
        width = w.shape[-1]
        taps = torch.tensor([(a + 1) * 9 + (b + 1) * 3 + (c + 1) for a, b, c in offsets], device=grid.device)
        kernel = torch.zeros(self.m, width, 27, device=grid.device, dtype=w.dtype).index_copy(2, taps, w.transpose(1, 2))
        out = F.conv3d(grid.unsqueeze(0), kernel.view(self.m * width, 1, 3, 3, 3), padding=1, groups=self.m)
        return out.view(self.m, width, -1).transpose(1, 2)

    def _indices(self, size: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
        """Flat indices of the pass A and B positions of a grid of ``size`` and of their parents in the coarser."""
        key = (size, str(device))
        if key not in self._index_cache:
            idx_a, idx_b = LatentModel._passes(size, device)
            coarse = tuple(-(-n // 2) for n in size)

            def parent(idx: torch.Tensor) -> torch.Tensor:
                i, j, k = idx // (size[1] * size[2]), idx // size[2] % size[1], idx % size[2]
                return ((i // 2) * coarse[1] + j // 2) * coarse[2] + k // 2

            self._index_cache[key] = (idx_a, idx_b, parent(idx_a), parent(idx_b))
        return self._index_cache[key]

    def point_features(self, grids: list[torch.Tensor], points: torch.Tensor) -> torch.Tensor:
        """(M, n, levels): every grid interpolated trilinearly at ``points`` (M, n, 3), as the decoder does."""
        where = points.flip(-1)[:, None, None]  # grid_sample reads (x, y, z) as (last, middle, first) axis
        return torch.stack([F.grid_sample(g[:, None], where, mode="bilinear", padding_mode="border",
                                          align_corners=True).flatten(1) for g in grids], dim=-1)

    def manager_inputs(self, grids: list[torch.Tensor], points: torch.Tensor) -> torch.Tensor:
        """(M, n, levels): each grid's value at the lowest corner of the cell holding each point."""
        parts = []
        for g in grids:
            n = g.shape[1]
            cell = ((points.double() + 1) * ((n - 1) / 2)).floor().clamp(0, n - 2).long()
            flat = (cell[..., 0] * n + cell[..., 1]) * n + cell[..., 2]
            parts.append(torch.gather(g.reshape(self.m, -1), 1, flat))
        return torch.stack(parts, dim=-1)



def start_from_distance(model: ShapeModel, distance: list) -> None:
    """Set every grid to ``INIT_SCALE`` x the truncated distance at its vertices (``distance[j](points)`` for
    shape ``j``): the fit starts from the shape rather than from zero."""
    with torch.no_grad():
        for lat in model.latents:
            n = lat.shape[1]
            axis = np.linspace(-1.0, 1.0, n)
            vertices = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
            for j, fn in enumerate(distance):
                lat[j] = torch.from_numpy(INIT_SCALE * fn(vertices).reshape(n, n, n)).to(lat)


def fit_shapes(model: ShapeModel, points: torch.Tensor, targets: torch.Tensor, lam: float | list[float],
               schedule: LatentSchedule, batch: int, seed: int = 0) -> list[float]:
    """Fit ``model`` to samples ``points`` (M, N, 3) with truncated distances ``targets`` (M, N, 1).

    Loss per shape: the mean absolute error on a batch + lambda * latent kilobytes. With
    K > 1 experts the manager first learns regions of space (k-means of the points).
    """
    gen = torch.Generator().manual_seed(seed)
    labels = _kmeans_labels(points, model.cfg.n_experts, gen) if model.cfg.n_experts > 1 else None
    lams = torch.as_tensor(lam, dtype=torch.float32, device=points.device).expand(model.m)
    n = points.shape[1]

    def step(mode: str, pretrain: bool):
        idx = torch.randint(0, n, (min(batch, n),), generator=gen).to(points.device)
        p, t = points[:, idx], targets[:, idx]
        grids, bits = model.quantized_latents(mode)
        preds, logits, field = model.synthesize(grids, p)
        l1 = (field - t).abs().mean(dim=(1, 2))
        part_labels = None if labels is None else labels[:, idx]
        loss = l1 + lams * bits / 8000 + expert_loss(preds, logits, t, part_labels, pretrain, 1)
        return loss, lambda: f"L1 {float(l1.mean()):.4f} {float(bits.mean()) / 8000:.2f} KB"

    return optimise(model, schedule, step, seed)


def config_for(preset: presets.ShapeLatentPreset) -> LatentConfig:
    """The stream's config for ``preset``: the built-in context models when it asks for them and they fit."""
    k = preset.n_experts
    arm = (preset.arm_width, 2)
    flags = FLAG_BUILTIN_CONTEXT if preset.builtin_context and arm == (builtin.WIDTH, builtin.LAYERS) else 0
    return LatentConfig(levels=min(preset.levels, preset.grid_log2 + 1), arm_width=arm[0], arm_layers=arm[1],
                        n_experts=k, mgr_width=preset.mgr_width if k > 1 else 0, syn_width=preset.syn_width,
                        syn_layers=preset.syn_layers, refine_width=0, lanes_log2=lanes_for(preset.grid_log2),
                        flags=flags)


def lanes_for(grid_log2: int) -> int:
    """log2 of the coder's lanes: about one lane per 32768 latents, at most 64."""
    latents = ((1 << grid_log2) + 1) ** 3 * 8 // 7
    return int(np.clip(math.floor(math.log2(max(latents / 32768, 1))), 0, 6))


@dataclass
class _Coded:
    best: Candidate
    float_l1: float
    cfg: LatentConfig


def with_truncation(signal: Signal, trunc: float) -> Signal:
    """``signal`` with the preset's truncation in its descriptor: the targets, the occupancy map and the stream
    follow it (the samples' distances are shared)."""
    return Signal(replace(signal.descriptor, trunc=trunc), signal.data)


def occupied_samples(points: torch.Tensor, targets: torch.Tensor, occupancy: Occupancy, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training samples in occupied cells, shuffled (a stack of shapes then keeps the first of each)."""
    keep = np.flatnonzero(occupancy.lookup(points.numpy())[0])
    keep = np.random.default_rng(seed).permutation(keep)
    return points[keep], targets[keep]


def stack_shapes(modality: Modality, signals_: list[Signal], cfg: LatentConfig, preset: presets.ShapeLatentPreset,
                 seed: int, device: torch.device) -> tuple[ShapeModel, torch.Tensor, torch.Tensor, list[Occupancy]]:
    """Shapes of one grid size ready to be fitted side by side: a model whose coded latents are those around each
    shape's occupancy map and start from its distance, and as many training samples in occupied cells per shape
    ((M, n, 3) points and (M, n, 1) targets on ``device``); with the maps."""
    occupancies = [occupancy_map.from_distance(lambda p, s=s: modality.signed_distance(s, p),
                                               min(preset.occupancy_log2, preset.grid_log2), s.descriptor.trunc)
                   for s in signals_]
    samples = [occupied_samples(*modality.training_points(s), occ, seed) for s, occ in zip(signals_, occupancies)]
    n = min(len(p) for p, _ in samples)
    points = torch.stack([p[:n] for p, _ in samples]).to(device)
    targets = torch.stack([t[:n] for _, t in samples]).to(device)
    model = ShapeModel(cfg, len(signals_), preset.grid_log2, seed=seed)
    masks = [occ.latent_masks(preset.grid_log2, cfg.levels) for occ in occupancies]
    model.keep = [torch.from_numpy(np.stack([m[level].ravel() for m in masks])).float().to(device)
                  for level in range(cfg.levels)]
    if INIT_SCALE:
        start_from_distance(model, [lambda p, s=s: modality.truncated_distance(s, p) for s in signals_])
    return model.to(device), points, targets, occupancies


def encode_shapes(modality: Modality, signals_: list[Signal], opts: EncodeOptions) -> list[EncodeResult]:
    """Encode meshes as version 8 streams; shapes of one grid size are fitted side by side."""
    from nxcodec.codec import EncodeResult, device_name, resolve_device

    t0 = time.perf_counter()
    device = resolve_device(opts.device)
    table = presets.SHAPE_LATENT_PRESETS
    preset = presets.choose_latent_preset(table, opts.quality, opts.rate)
    results: list = [None] * len(signals_)
    presets.step_down(table, preset, opts.rate, list(range(len(signals_))),
                      lambda todo, p: _encode_group(modality, signals_, todo, p, opts, device, results), "shape")
    seconds = (time.perf_counter() - t0) / len(signals_)
    out = []
    for coded, signal in zip(results, signals_):
        mesh = latent_shape.reconstruct(coded.best.image)
        metrics = {**modality.metrics(signal.data, mesh), "sdf_l1": coded.best.mse}  # the candidate's error is L1
        out.append(EncodeResult(
            data=coded.best.data, rate=modality.rate(signal.descriptor, len(coded.best.data)),
            rate_unit=modality.rate_unit, metrics=metrics, float_metrics={"sdf_l1": coded.float_l1},
            encode_seconds=seconds, device=device_name(device), configs=[coded.cfg],
            n_params=sum(t.ints.size for t in coded.best.image.tensors.values()),
        ))
    return out


def _encode_group(modality, signals_: list, todo: list[int], preset: presets.ShapeLatentPreset, opts,
                  device: torch.device, results: list) -> list[tuple[int, float | None]]:
    """Fit and code the shapes ``todo`` with one preset; those over the size target, each with its overshoot.
    A coding over the target is trimmed only at the lowest quality: above it, a fit at a lower quality loses
    less than the dead zones and coarser networks that trimming reaches for."""
    cfg = opts.config if isinstance(opts.config, LatentConfig) else config_for(preset)
    side = (1 << preset.grid_log2) + 1
    per = max(1, (STACK_LATENTS_GPU if device.type == "cuda" else STACK_LATENTS_CPU) // side**3)
    iters = opts.iters if opts.iters is not None else preset.iters
    batch = BATCH_GPU if device.type == "cuda" else BATCH_CPU
    missed = []
    for g, a in enumerate(range(0, len(todo), per)):
        idx = todo[a : a + per]
        group = [with_truncation(signals_[i], preset.trunc) for i in idx]
        model, points, targets, occupancies = stack_shapes(modality, group, cfg, preset, opts.seed, device)
        # No warm-up race: the latents start from the distance itself, not from a random draw worth racing.
        schedule = LatentSchedule(iters=iters, progress=opts.progress, desc="fit shape" + (f" {g + 1}" if g else ""),
                                  race=())
        fit_shapes(model, points, targets, preset.lam, schedule, batch, seed=opts.seed)
        rng = np.random.default_rng(opts.seed)
        pick = torch.from_numpy(rng.choice(points.shape[1], min(EVAL_POINTS, points.shape[1]), replace=False))
        with torch.no_grad():
            grids, _ = model.quantized_latents("ste")
            floats = model.synthesize(grids, points[:, pick.to(device)])[2]
        jobs = []
        for j, i in enumerate(idx):
            d = ShapeLatentDescriptor(group[j].descriptor, preset.grid_log2)
            bits = None if opts.rate is None else modality.bits_allowed(signals_[i].descriptor, opts.rate)
            jobs.append((d, cfg, {n: w.detach().cpu().numpy() for n, w in model.coded_tensors(j).items()},
                         [lat[j].detach().cpu().numpy().astype(np.float64) for lat in model.latents], occupancies[j],
                         points[j, pick.to(device)].cpu().numpy(),
                         targets[j, pick.to(device), 0].cpu().numpy().astype(np.float64), preset.lam, bits,
                         preset.quality == min(presets.SHAPE_LATENT_PRESETS)))
        workers = opts.coding_workers or coding_workers(len(jobs), model.latents[0][0].numel())
        for j, (i, job, best) in enumerate(zip(idx, jobs, code_in_parallel(jobs, workers, code_shape))):
            t, bits = job[6], job[8]
            if isinstance(best, OverTarget):
                missed.append((i, best.bits / bits))
                continue
            if isinstance(best, NxcError):
                missed.append((i, None))
                continue
            float_l1 = float((floats[j, :, 0].cpu().double() - torch.from_numpy(t)).abs().mean())
            results[i] = _Coded(best, float_l1, cfg)
    return missed
