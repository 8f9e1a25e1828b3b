"""Fitting latent-grid signals (images, audio planes; shapes subclass it) in torch, side by side.

``M`` signals of one size are fitted together: every parameter has a leading dimension
of ``M``. The forward pass mirrors the decoder exactly in structure (the decode order of
``nxcodec.latent.context``, the same upsampling, routing inputs and synthesis) but runs in
float so it can be trained; the final coding goes through the decoder's own fixed-point
modules. In two passes each latent is quantized as the residual from its mean, rounded;
with version 12's raster context (images) each latent is rounded itself and its bits
counted under a Laplace whose mean need not be an integer, as Cool-chic's.

Schedule (``LatentSchedule``): a warm-up race in two rounds (three initialisations of each
signal, then the best two warmed up further; the best goes on); a relaxed phase (soft rounding plus
Gaussian noise, both annealed, as C3 and Cool-chic; rate from the Laplace integrated over
unit bins; the networks' gradients clipped per signal); then a straight-through phase
with hard rounding at a low learning rate. With K > 1 experts the manager is first
trained alone to predict balanced labels (k-means of the colours), then the loss is the
gate-weighted error of each expert (Neural Experts) plus the error of the routed, refined
image. Latents are fitted by Adam; networks by Adam or, as Cool-chic 5, by SOAP
(``LatentSchedule.optimizer``; the image presets choose).
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from nxcodec.fit.matmul import stack_matmul
from nxcodec.fit.soap import StackSOAP
from nxcodec.host_memory import keep_freed_memory
from nxcodec.latent import builtin, tables
from nxcodec.latent.context import N_CONTEXT_RASTER, OFFSETS, RASTER_OFFSETS, TILE, context_sizes, level_sizes
from nxcodec.latent.stream import LatentConfig

if TYPE_CHECKING:
    from nxcodec.fit.presets import LatentPreset

BICUBIC = (-0.0234375, 0.2265625, 0.8671875, -0.0703125)  # the even phase of 2x bicubic (a = -0.75)
HIDDEN_MAX = 4096.0
MU_MAX = 1024.0


@dataclass
class LatentSchedule:
    """How long and how hard to fit (named phases, as fractions of ``iters``)."""

    iters: int = 2000
    lr: float = 1e-2  # networks (image presets at 2000 iterations: 5e-3 +2.7%, 2e-2 -0.7%, 4e-2 +4.6% in cost)
    context_lr: float | None = None  # the context models' (None: ``lr``)
    # Latents need far larger steps than the networks (0.05: -2 dB at 400 its); image presets take 0.1 (presets.py)
    latent_lr: float = 0.3
    ste_frac: float = 0.15  # final straight-through phase with hard rounding
    ste_lr: float = 1e-4
    ste_latent_lr: float | None = None  # the latents' learning rate in that phase (None: ``ste_lr``; 0: held)
    manager_pretrain_frac: float = 0.05
    soft_rounding: bool = True  # C3's soft rounding with noise, temperature annealed, instead of plain noise
    temperature: tuple[float, float] = (0.35, 0.08)
    noise: tuple[float, float] | None = (0.22, 0.15)  # Gaussian noise std, start and end; None: uniform, width 1
    clip: float | None = 0.1  # gradient norm limit of each signal's networks (not its latents), as Cool-chic
    # The warm-up race, in rounds of (candidates, each one's warm-up as a part of ``iters``): the first round
    # warms up that many initialisations of each signal, each later round goes on with the best ones of the round
    # before, and the best of the last is fitted on. Its iterations are taken from the fit's. (Image presets at 2000
    # iterations: half the race -0.2% in cost, none +0.9%; bench/results/schedule_2000it_cpu.jsonl.)
    race: tuple[tuple[int, float], ...] = ((3, 0.05), (2, 0.08))
    decay: bool = True  # cosine decay of the learning rates through the relaxed phase
    lr_floor: float = 0.1  # where the cosine decay ends, as a part of each starting learning rate
    # How the networks are fitted: "adam"; "soap", their weight matrices by SOAP (Adam in the eigenbasis of
    # Shampoo's preconditioner, nxcodec.fit.soap) as Cool-chic 5; "soap-synthesis", SOAP for the synthesis only.
    # Latents, biases and filter taps always get Adam.
    optimizer: str = "adam"
    progress: bool = False
    desc: str = "fit"

    @classmethod
    def for_preset(cls, preset: "LatentPreset", iters: int, **changes) -> "LatentSchedule":
        """The schedule ``preset`` fits with (its optimiser and latents' learning rates) for ``iters`` iterations,
        with ``changes`` to its fields."""
        own = {"optimizer": preset.optimizer}
        if preset.latent_lr is not None:
            own["latent_lr"] = preset.latent_lr
        if preset.ste_latent_iters is not None and iters > preset.ste_latent_iters:
            own["ste_latent_lr"] = changes.get("ste_lr", cls.ste_lr) * preset.ste_latent_iters / iters
        return cls(iters=iters, **{**own, **changes})

    def held_at_end(self) -> "LatentSchedule":
        """This schedule with its temperature and noise held at their final values, no race and no manager
        pretraining: for a fit that goes on from where this one stopped."""
        noise = None if self.noise is None else (self.noise[1], self.noise[1])
        return replace(self, temperature=(self.temperature[1], self.temperature[1]), noise=noise, race=(),
                       manager_pretrain_frac=0.0)

    def held_at_start(self) -> "LatentSchedule":
        """This schedule with its temperature, noise and learning rates held at their starting values and no
        straight-through phase: a race's warm-up, so the winner goes on into the fit without a jump."""
        noise = None if self.noise is None else (self.noise[0], self.noise[0])
        return replace(self, temperature=(self.temperature[0], self.temperature[0]), noise=noise, decay=False,
                       ste_frac=0.0, race=())


def _mlp_params(m: int, fan_in: int, width: int, layers: int, out: int, gen: torch.Generator,
                lead: tuple[int, ...] = (), zero_out: bool = False) -> list[list[torch.Tensor]]:
    """[weight, bias] per layer, each with leading dims ``(m, *lead)``; He-uniform init."""
    params = []
    dims = [fan_in] + [width] * layers + [out]
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        bound = math.sqrt(6.0 / a) if i < len(dims) - 2 else math.sqrt(1.0 / a)
        w = (torch.rand(m, *lead, a, b, generator=gen) * 2 - 1) * bound
        if zero_out and i == len(dims) - 2:
            w.zero_()
        params.append([w, torch.zeros(m, *lead, b)])
    return params


def context_model_params(m: int, fan_in: int, cfg: LatentConfig, gen: torch.Generator) -> list[list[torch.Tensor]]:
    """A context model's [weight, bias] per layer for ``fan_in`` inputs: its output starts with the mean at 0 and the
    scale mid-range (about b = 1)."""
    layers = _mlp_params(m, fan_in, cfg.arm_width, cfg.arm_layers, 2, gen, zero_out=True)
    layers[-1][1][..., 1] = 12.0
    return layers


def _mlp(x: torch.Tensor, layers: list[list[torch.Tensor]], relu_max: float | None = None) -> torch.Tensor:
    """Per-image MLP: ``x`` (M, ..., N, fan_in), weights (M, ..., fan_in, out)."""
    for i, (w, b) in enumerate(layers):
        x = stack_matmul(x, w) + b.unsqueeze(-2)
        if i < len(layers) - 1:
            x = x.clamp(0, relu_max) if relu_max else torch.relu(x)
    return x


def few_kernels(t: torch.Tensor) -> bool:
    """Whether to gather neighbours by an unfold rather than a slice per neighbour: on a GPU, whose fit of a Kodak
    image launched 5,600 kernels an iteration (bench/results/fit_speed_h200), about 800 of them the slices'
    backward (a zeroed grid, a copy and an add each). On a CPU the slices measured faster (four 256x256 crops,
    bench/results/fit_speed_cpu: 208 ms an iteration with slices, 229 with unfolds)."""
    return t.is_cuda


@functools.lru_cache(maxsize=None)
def _same_in_block(device: torch.device) -> torch.Tensor:
    """Where each same-grid context offset sits in the 5x5 block an unfold gathers (at ``(dy + 2) * 5 + dx + 2``),
    on ``device``: made once, not copied to the GPU at every gather."""
    return torch.tensor([(dy + 2) * 5 + dx + 2 for dy, dx in OFFSETS[2][1]], device=device)


def upsample2(x: torch.Tensor, taps: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Torch twin of :func:`nxcodec.latent.synthesis.upsample2` for ``x`` (M, ...), taps (M, 4).

    Where :func:`few_kernels`, both outputs of each input sample come from the window of five edge-padded samples
    around it (an unfold), times a (5, 2) matrix of the taps."""
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    p = torch.cat([x[..., :1].expand(*x.shape[:-1], 2), x, x[..., -1:].expand(*x.shape[:-1], 2)], dim=-1)
    if few_kernels(x):
        zero = torch.zeros_like(taps[:, :1])
        # column 0: output 2i = k0 p[i] + ... + k3 p[i + 3]; column 1: output 2i + 1 = k3 p[i + 1] + ... + k0 p[i + 4]
        mix = torch.stack([torch.cat([taps, zero], 1), torch.cat([zero, taps.flip(1)], 1)], dim=-1)  # (M, 5, 2)
        out = p.unfold(-1, 5, 1) @ mix.view(-1, *([1] * (x.dim() - 2)), 5, 2)  # (..., n, 2)
    else:
        k = [taps[:, i].view(-1, *([1] * (x.dim() - 1))) for i in range(4)]
        even = k[0] * p[..., 0:n] + k[1] * p[..., 1 : n + 1] + k[2] * p[..., 2 : n + 2] + k[3] * p[..., 3 : n + 3]
        odd = k[3] * p[..., 1 : n + 1] + k[2] * p[..., 2 : n + 2] + k[1] * p[..., 3 : n + 3] + k[0] * p[..., 4 : n + 4]
        out = torch.stack([even, odd], dim=-1)
    return out.reshape(*x.shape[:-1], 2 * n)[..., :size].movedim(-1, dim)


def soft_round(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """A differentiable stand-in for rounding that tends to it as ``temperature`` goes to 0 (Agustsson & Theis)."""
    base = torch.floor(x)
    frac = x - base - 0.5
    return base + 0.5 + torch.tanh(frac / temperature) / (2 * math.tanh(0.5 / temperature))


def laplace_bits(r: torch.Tensor, log2_scale: torch.Tensor) -> torch.Tensor:
    """Bits of residuals ``r`` under a zero-mean Laplace of scale ``2**log2_scale`` integrated over unit bins.

    Outside the centre bin the probability is ``0.5 exp(-(|r| - 0.5) / b) (1 - exp(-1 / b))``, taken in the log
    so that a residual far out in the tail still costs more at a smaller scale: a floor on the probability would
    cut the scale's gradient there, and the context model would never learn to widen a scale whose table such
    residuals escape at a high cost."""
    b = torch.exp2(log2_scale)
    a = r.abs()
    inner = a.clamp(max=0.5)  # each branch is evaluated everywhere: keep the unused one finite
    centre_bits = -torch.log2(1 - 0.5 * torch.exp(-(0.5 - inner) / b) - 0.5 * torch.exp(-(0.5 + inner) / b))
    tail_bits = 1 + ((a - 0.5) / b - torch.log(-torch.expm1(-1 / b))) / math.log(2)
    return torch.where(a < 0.5, centre_bits, tail_bits)


@functools.lru_cache(maxsize=None)
def _residual_limits(scales: tables.ScaleSet, device: torch.device) -> torch.Tensor:
    """The largest residual magnitude per scale index: the table's edge plus the largest escape (version 6 on)."""
    return torch.tensor(scales.limits + tables.MAX_ESCAPE, dtype=torch.float32, device=device)


def plain_rounding(y: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents rounded themselves, as the raster context codes them: the values a decoder sees, and the values whose
    bits are counted (``mode`` as :meth:`LatentModel._quantize`'s: soft rounding plus noise, noise, or hard rounding
    with a straight-through gradient)."""
    if mode.startswith("soft"):
        temperature, _, sigma = mode[4:].partition(":")
        t = float(temperature)
        noise = torch.randn_like(y) * float(sigma) if sigma else torch.rand_like(y) - 0.5
        noisy = soft_round(y, t) + noise
        return soft_round(noisy, t), noisy
    if mode == "noise":
        r = y + torch.rand_like(y) - 0.5
        return r, r
    q = y + (torch.round(y) - y).detach()
    return q, q


def _raster_context(value: torch.Tensor) -> torch.Tensor:
    """(M, h, w, 12): each latent's neighbours at ``RASTER_OFFSETS`` in its grid, zero outside the grid or its
    tile."""
    h, w = value.shape[1:]
    p = F.pad(value, (3, 2, 2, 0))
    same = torch.stack([p[:, 2 + a : 2 + a + h, 3 + b : 3 + b + w] for a, b in RASTER_OFFSETS], -1)
    r, c = torch.arange(h, device=value.device).view(-1, 1) % TILE, torch.arange(w, device=value.device).view(1, -1) % TILE
    inside = torch.stack([(r + a >= 0) & (c + b >= 0) & (c + b < TILE) for a, b in RASTER_OFFSETS], -1)
    return same * inside.to(same)


class LatentModel(torch.nn.Module):
    """The latents and networks of ``M`` signals of one size, in float.

    ``shape`` is the finest grid: an image's (height, width), or a volume's three sides
    (shapes, whose synthesis is :class:`nxcodec.fit.latent_shape.ShapeModel`'s).
    """

    scales = tables.FINE  # the latent tables the streams are coded with (images and audio: versions 9 and 11)

    def __init__(self, cfg: LatentConfig, m: int, shape: tuple[int, ...], channels: int, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.m, self.shape, self.channels = cfg, m, tuple(shape), channels
        self.dims = len(shape)
        self.height, self.width = shape[0], shape[1]
        self.sizes = level_sizes(self.shape, cfg.levels)
        gen = torch.Generator().manual_seed(seed)
        self.latents = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(m, *size)) for size in self.sizes)
        # Each signal's networks see its latents times this gain (folded into their first layers when coded): a fit
        # whose latents are large (audio's transform start) keeps the networks' hidden values near 1, where Adam's
        # steps, about the learning rate whatever the input, do not throw them about.
        self.register_buffer("input_gain", torch.ones(m))
        # Which latents are coded, per grid (M, positions) in {0, 1} on the latents' device; None: all. Version 7
        # shapes code only those around occupied cells, the others are 0 and cost nothing.
        self.keep: list[torch.Tensor] | None = None
        n_a, n_b = context_sizes(self.dims)
        self.nets: dict[str, list[list[torch.Tensor]]] = (
            {"arm": context_model_params(m, N_CONTEXT_RASTER, cfg, gen)} if cfg.raster_context else
            {"arm_a": context_model_params(m, n_a, cfg, gen), "arm_b": context_model_params(m, n_b, cfg, gen)})
        self.nets["experts"] = _mlp_params(m, cfg.levels, cfg.syn_width, cfg.syn_layers, channels, gen,
                                           (cfg.n_experts,))
        if cfg.n_experts > 1:
            self.nets["manager"] = _mlp_params(m, cfg.levels, cfg.mgr_width, 1, cfg.n_experts, gen)
        if self.dims == 2:
            self.upsample = torch.nn.Parameter(torch.tensor(BICUBIC).repeat(m, 1))
        if cfg.refine_width:
            r, c = cfg.refine_width, channels
            w1 = (torch.rand(m, r, c, 3, 3, generator=gen) * 2 - 1) * math.sqrt(6.0 / (9 * c))
            self.refine = torch.nn.ParameterList([torch.nn.Parameter(w1), torch.nn.Parameter(torch.zeros(m, r)),
                                                  torch.nn.Parameter(torch.zeros(m, c, r, 3, 3)),
                                                  torch.nn.Parameter(torch.zeros(m, c))])
        self.register_nets()
        if cfg.builtin_context:  # the decoder's built-in models, frozen (shapes: their input gain stays 1)
            fixed = builtin.values()
            for k in builtin.NETWORKS:
                for j, pair in enumerate(self.nets[k]):
                    name = f"{k}.{j}" if j < len(self.nets[k]) - 1 else f"{k}.out"
                    for t, part in zip(pair, ("weight", "bias")):
                        with torch.no_grad():
                            t.copy_(torch.from_numpy(fixed[f"{name}.{part}"]).expand_as(t))
                        t.requires_grad_(False)

    # --- the coded tensors, by the stream's names -------------------------------------------
    def coded_tensors(self, i: int) -> dict[str, torch.Tensor]:
        """Image ``i``'s network tensors by stream name (SPEC.md 9.3), as float tensors: views of the parameters,
        but the first layers' weights, which are copies with ``input_gain`` folded in."""
        out: dict[str, torch.Tensor] = {}
        for key in ("arm_a", "arm_b", "arm", "manager", "experts"):
            if key in builtin.NETWORKS and self.cfg.builtin_context:
                continue
            if key == "experts" and self.dims == 2:
                out["upsample"] = self.upsample[i]
            if key not in self.nets:
                continue
            layers = self.nets[key]
            for j, (w, b) in enumerate(layers):
                name = f"{key}.{j}" if j < len(layers) - 1 else f"{key}.out"
                out[f"{name}.weight"], out[f"{name}.bias"] = (w[i] * self.input_gain[i] if j == 0 else w[i]), b[i]
        if self.cfg.refine_width:
            for j, name in enumerate(("refine.0.weight", "refine.0.bias", "refine.1.weight", "refine.1.bias")):
                out[name] = self.refine[j][i]
        return out

    # --- forward ----------------------------------------------------------------------------
    def _arm(self, key: str, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log2 scale of each latent from its context ``ctx`` (M, n, inputs)."""
        return self._arm_from_first(key, stack_matmul(ctx, self.nets[key][0][0]))

    def _arm_from_first(self, key: str, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_arm` given the context times the first layer's weight (M, n, width), before its bias."""
        layers = self.nets[key]
        out = h * self.input_gain.view(-1, *[1] * (h.dim() - 1)) + layers[0][1].unsqueeze(-2)
        if len(layers) > 1:
            out = _mlp(out.clamp(0, HIDDEN_MAX), layers[1:], HIDDEN_MAX)
        mu = out[..., 0].clamp(-MU_MAX, MU_MAX)
        log2_scale = self.scales.log2_bmin + out[..., 1].clamp(0, self.scales.n - 1) / tables.SCALES_PER_OCTAVE
        return mu, log2_scale

    @staticmethod
    def _shifted(padded: torch.Tensor, pad: int, offset: tuple[int, ...], size: tuple[int, ...],
                 stride: int = 1) -> torch.Tensor:
        """``padded[:, pad + stride * offset + i]`` for every position ``i`` of ``size`` (one slice per axis)."""
        return padded[(slice(None), *(slice(pad + stride * o, pad + stride * o + n) for o, n in zip(offset, size)))]

    # On 2-D grids on a GPU (few_kernels) the contexts are gathered by one unfold (im2col) instead of a slice per
    # offset: the same values, one kernel backward (col2im) instead of a zeroed grid, a copy and an add per offset.
    def _coarse_context(self, coarser: torch.Tensor | None, size: tuple[int, ...]) -> torch.Tensor:
        """(M, *size, n): the coarser grid ``P[i // 2 + a]`` around each parent, zero outside."""
        coarse, _ = OFFSETS[self.dims]
        if coarser is None:
            return torch.zeros(self.m, *size, len(coarse))
        up = F.pad(coarser, (1, 1) * self.dims)
        for axis in range(1, self.dims + 1):
            up = up.repeat_interleave(2, axis)  # up[i] = P[i // 2 - 1]
        if self.dims == 2 and few_kernels(up):  # COARSE_OFFSETS: the 3x3 block in raster order, up[i + 2ky, j + 2kx]
            cols = F.unfold(up[:, None, : size[0] + 4, : size[1] + 4], 3, dilation=2)  # (M, 9, positions)
            return cols.transpose(1, 2).reshape(self.m, *size, len(coarse))
        return torch.stack([self._shifted(up, 2, a, size, 2) for a in coarse], dim=-1)

    def _same_context(self, grid: torch.Tensor) -> torch.Tensor:
        _, same = OFFSETS[self.dims]
        p = F.pad(grid, (2, 2) * self.dims)
        if self.dims == 2 and few_kernels(p):  # of the 5x5 block around each position, the offsets' in their order
            cols = F.unfold(p[:, None], 5)  # (M, 25, positions): p[i + ky, j + kx] at ky * 5 + kx
            picked = cols.index_select(1, _same_in_block(grid.device))
            return picked.transpose(1, 2).reshape(self.m, *grid.shape[1:], len(same))
        return torch.stack([self._shifted(p, 2, d, grid.shape[1:]) for d in same], dim=-1)

    @staticmethod
    def _passes(size: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat indices of the pass A and pass B positions of a grid of ``size``, in raster order."""
        flat = torch.arange(math.prod(size), device=device)
        parity = torch.zeros_like(flat)
        rest = flat
        for n in reversed(size):
            parity, rest = parity + rest % n, rest // n
        is_a = parity % 2 == 0
        return flat[is_a], flat[~is_a]

    def _first_layers(self, coarser: torch.Tensor | None, size: tuple[int, ...], idx_a: torch.Tensor,
                      idx_b: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """The context models' first layers (before their bias) at one grid: pass A's, and a function that gives
        pass B's from the grid holding the pass A latents. Gathers every context, then multiplies."""
        n = math.prod(size)
        coarse = self._coarse_context(coarser, size).to(self.latents[0]).reshape(self.m, n, -1)

        def pass_b(grid: torch.Tensor) -> torch.Tensor:
            same = self._same_context(grid).reshape(self.m, n, -1)
            return stack_matmul(torch.cat([same[:, idx_b], coarse[:, idx_b]], dim=-1), self.nets["arm_b"][0][0])

        return stack_matmul(coarse[:, idx_a], self.nets["arm_a"][0][0]), pass_b

    def matrix_views(self) -> dict[int, tuple[int, int]]:
        """(rows, columns) of every weight that is a matrix per signal (and expert), by ``id``: what SOAP
        preconditions. A 3x3 convolution's matrix is (outputs, inputs x 9)."""
        views = {id(w): (w.shape[-2], w.shape[-1]) for layers in self.nets.values() for w, _ in layers}
        if self.cfg.refine_width:
            for w in (self.refine[0], self.refine[2]):
                views[id(w)] = (w.shape[1], w[0, 0].numel())
        return views

    def register_nets(self) -> None:
        """Make every tensor of ``self.nets`` a parameter of this module (tensors that already are stay the same
        objects). A subclass that replaces one of the networks calls it again."""
        self._registered = torch.nn.ParameterList(
            t if isinstance(t, torch.nn.Parameter) else torch.nn.Parameter(t)
            for layers in self.nets.values() for layer in layers for t in layer)
        it = iter(self._registered)
        self.nets = {k: [[next(it), next(it)] for _ in layers] for k, layers in self.nets.items()}

    def quantized_latents(self, mode: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The latents as the decoder sees them, built in decode order (finest first in the list), and each
        signal's latent bits."""
        if self.cfg.raster_context:
            return self._raster_latents(mode)
        bits = torch.zeros(self.m, device=self.latents[0].device)
        out: list[torch.Tensor] = [None] * self.cfg.levels  # type: ignore[list-item]
        coarser = None
        for level in range(self.cfg.levels - 1, -1, -1):
            y = self.latents[level]
            size = tuple(y.shape[1:])
            idx_a, idx_b = self._passes(size, y.device)
            flat = y.reshape(self.m, -1)
            first_a, first_b = self._first_layers(coarser, size, idx_a, idx_b)
            mu, log2_scale = self._arm_from_first("arm_a", first_a)
            y_a, b_a = self._quantize(flat[:, idx_a], mu, log2_scale, mode)
            if self.keep is not None:
                keep = self.keep[level]
                y_a, b_a = y_a * keep[:, idx_a], b_a * keep[:, idx_a]
            grid = torch.zeros_like(flat).index_copy(1, idx_a, y_a)
            mu, log2_scale = self._arm_from_first("arm_b", first_b(grid.view(self.m, *size)))
            y_b, b_b = self._quantize(flat[:, idx_b], mu, log2_scale, mode)
            if self.keep is not None:
                y_b, b_b = y_b * keep[:, idx_b], b_b * keep[:, idx_b]
            grid = grid.index_copy(1, idx_b, y_b).view(self.m, *size)
            bits = bits + b_a.sum(1) + b_b.sum(1)
            out[level] = coarser = grid
        return out, bits

    def _raster_latents(self, mode: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`quantized_latents` with the raster context: every latent rounded itself (:func:`plain_rounding`)
        and its bits counted under the Laplace the context model predicts from the latents before it in its tile
        and the coarser grid. Every context is known once a grid is rounded, so a fit evaluates a grid at once;
        only a decoder goes step by step."""
        bits = torch.zeros(self.m, device=self.latents[0].device)
        out: list[torch.Tensor] = [None] * self.cfg.levels  # type: ignore[list-item]
        coarser = None
        for level in range(self.cfg.levels - 1, -1, -1):
            y = self.latents[level]
            h, w = y.shape[1:]
            value, coded = plain_rounding(y, mode)
            ctx = torch.cat([_raster_context(value), self._coarse_context(coarser, (h, w)).to(y)], -1)
            mu, log2_scale = self._arm("arm", ctx.reshape(self.m, h * w, -1))
            bits = bits + laplace_bits(coded.reshape(self.m, -1) - mu, log2_scale).sum(1)
            out[level] = coarser = value
        return out, bits

    def _quantize(self, y: torch.Tensor, mu: torch.Tensor, log2_scale: torch.Tensor, mode: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean-shifted quantization: ``round(y - mu) + mu``, with noise in place of rounding in the
        noise phase; in the hard phase the residual is clamped to the coder's range, escapes included."""
        v = y - mu
        if mode.startswith("soft"):  # "soft<temperature>[:<Gaussian noise std>]": soft rounding plus noise (uniform
            # without a std); the decoder-side value rounds the noisy one softly again
            temperature, _, sigma = mode[4:].partition(":")
            t = float(temperature)
            noise = torch.randn_like(v) * float(sigma) if sigma else torch.rand_like(v) - 0.5
            noisy = soft_round(v, t) + noise
            return soft_round(noisy, t) + mu, laplace_bits(noisy, log2_scale)
        if mode == "noise":
            r = v + torch.rand_like(v) - 0.5
        else:  # hard rounding, straight-through gradient
            index = torch.round((log2_scale - self.scales.log2_bmin) * tables.SCALES_PER_OCTAVE).long()
            limit = _residual_limits(self.scales, v.device)[index.clamp(0, self.scales.n - 1)]
            r = v + (torch.maximum(torch.minimum(torch.round(v), limit), -limit) - v).detach()
        return r + mu, laplace_bits(r, log2_scale)

    def features(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """(M, levels, H, W): every grid upsampled to full size (the decoder's cascade)."""
        x = grids[-1].unsqueeze(1)
        for g in grids[-2::-1]:
            x = upsample2(upsample2(x, self.upsample, 2, g.shape[1]), self.upsample, 3, g.shape[2])
            x = torch.cat([g.unsqueeze(1), x], dim=1)
        return x

    def manager_inputs(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """(M, pixels, levels): each grid's value at (row >> l, col >> l)."""
        h, w = self.height, self.width
        parts = [g.repeat_interleave(1 << l, 1).repeat_interleave(1 << l, 2)[:, :h, :w] for l, g in enumerate(grids)]
        return torch.stack(parts, dim=-1).reshape(self.m, h * w, -1)

    def point_features(self, grids: list[torch.Tensor], *where: torch.Tensor) -> torch.Tensor:
        """(M, P, L): the features of every sample (an image's pixels, in raster order)."""
        return self.features(grids).flatten(2).transpose(1, 2)

    def synthesize(self, grids: list[torch.Tensor], *where: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-expert outputs (M, K, P, C), manager logits (M, P, K) or None, and the routed, refined signal
        (M, P, C), at every pixel (or, for a model with no grid of samples, at ``where``)."""
        gain = self.input_gain.view(-1, 1, 1)
        preds = _mlp((self.point_features(grids, *where) * gain).unsqueeze(1), self.nets["experts"])  # (M, K, P, C)
        if self.cfg.n_experts > 1:
            logits = _mlp(self.manager_inputs(grids, *where) * gain, self.nets["manager"], HIDDEN_MAX)
            onehot = F.one_hot(logits.argmax(-1), self.cfg.n_experts).to(preds).transpose(1, 2).unsqueeze(-1)
            routed = (preds * onehot).sum(1)
        else:
            logits, routed = None, preds[:, 0]
        return preds, logits, self._refine(routed)

    def _refine(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.refine_width:
            return x
        m, c, h, w = self.m, self.channels, self.height, self.width
        img = x.transpose(1, 2).reshape(1, m * c, h, w)
        w1, b1, w2, b2 = self.refine
        t = torch.relu(F.conv2d(img, w1.reshape(-1, c, 3, 3), b1.reshape(-1), padding=1, groups=m))
        t = F.conv2d(t, w2.reshape(-1, self.cfg.refine_width, 3, 3), b2.reshape(-1), padding=1, groups=m)
        return (img + t).reshape(m, c, h * w).transpose(1, 2)


def _kmeans_labels(target: torch.Tensor, k: int, gen: torch.Generator, iters: int = 10) -> torch.Tensor:
    """(M, pixels) balanced-ish labels: k-means of each image's colours (the paper's colour pretraining)."""
    m, n, _ = target.shape
    idx = torch.randint(0, n, (m, k), generator=gen).to(target.device)
    centres = torch.gather(target, 1, idx.unsqueeze(-1).expand(-1, -1, target.shape[-1]))
    for _ in range(iters):
        labels = torch.cdist(target, centres).argmin(-1)
        onehot = F.one_hot(labels, k).to(target)
        centres = (onehot.transpose(1, 2) @ target) / onehot.sum(1).clamp_min(1).unsqueeze(-1)
    return labels


def fit(model: LatentModel, target: torch.Tensor, lam: float | list[float], schedule: LatentSchedule,
        seed: int = 0) -> list[float]:
    """Fit ``model`` to ``target`` (M, pixels, C) in [-1, 1]; returns the last loss of each image.

    Loss per image: MSE on [0, 1] samples + lambda * latent bits per pixel (``lam``: one
    lambda, or one per image). With K > 1 experts the manager first learns colour regions
    (k-means labels), then each expert's error is weighted by its gate.
    """
    if schedule.race and schedule.race[0][0] > 1:
        schedule = _race(model, target, lam, schedule, seed)
    gen = torch.Generator().manual_seed(seed)
    pixels = model.height * model.width
    labels = _kmeans_labels(target, model.cfg.n_experts, gen) if model.cfg.n_experts > 1 else None
    lams = torch.as_tensor(lam, dtype=torch.float32, device=target.device).expand(model.m)

    def step(mode: str, pretrain: bool) -> tuple[torch.Tensor, str]:
        grids, bits = model.quantized_latents(mode)
        preds, logits, image = model.synthesize(grids)
        mse = ((image - target) ** 2).mean(dim=(1, 2)) / 4  # on [0, 1] samples
        loss = mse + lams * bits / pixels + expert_loss(preds, logits, target, labels, pretrain, 2, 0.25)

        def status() -> str:
            psnr = -10 * math.log10(max(float(mse.mean()), 1e-12))
            return f"{psnr:.2f} dB {float(bits.mean()) / pixels:.3f} bpp"

        return loss, status

    return optimise(model, schedule, step, seed)


def _race(model: LatentModel, target: torch.Tensor, lam: float | list[float], schedule: LatentSchedule,
          seed: int) -> LatentSchedule:
    """Run the warm-up race of ``schedule.race`` on every signal (the first candidate is ``model``'s own start),
    put each signal's winner into ``model``, and return the schedule left for it.

    Cool-chic's warm-up race: a fit's outcome depends on its start, and a short warm-up tells the good starts
    apart; a second round on the best few judges them later, when fewer are left. Warm-ups hold the schedule's
    starting temperature, noise and learning rates, so the winner goes on into the fit without a jump (a warm-up
    annealed to its end, then heated again, left J 35% higher on bach, four seeds, and 4% on kodim23). Candidates
    are warmed up one after another and keep only their parameters between rounds (not their optimiser states), so
    the race adds a few copies of the parameters to the fit's memory.
    """
    cands: list[list[torch.Tensor]] = []  # per candidate: its parameters, for every signal
    losses: list[torch.Tensor] = []
    used = 0
    for r, (n, frac) in enumerate(schedule.race):
        warm = int(schedule.iters * frac)
        if warm == 0:
            continue
        warmup = replace(schedule.held_at_start(), iters=warm, desc=f"{schedule.desc} race {r + 1}",
                         manager_pretrain_frac=schedule.manager_pretrain_frac if not cands else 0.0)
        if not cands:  # the first round: fresh starts
            starts = [None] * n
        else:  # the n best so far of each signal, by rank
            order = torch.stack(losses).argsort(0)[:n]  # (n, M)
            starts = [[torch.stack([cands[order[k, s]][j][s] for s in range(model.m)]) for j in range(len(cands[0]))]
                      for k in range(min(n, len(cands)))]
        cands, losses = [], []
        for k, start in enumerate(starts):
            cand = model if k == 0 else type(model)(model.cfg, model.m, model.shape, model.channels,
                                                     seed=seed + k).to(target.device)
            cand.input_gain.copy_(model.input_gain)
            if start is not None:
                with torch.no_grad():
                    for own, p in zip(cand.parameters(), start):
                        own.copy_(p)
            losses.append(torch.tensor(fit(cand, target, lam, warmup, seed + k + 100 * r), device=target.device))
            cands.append([p.detach().clone() for p in cand.parameters()])
            used += warm
    if not cands:  # a fit too short for any warm-up
        return replace(schedule, race=())
    best = torch.stack(losses).argmin(0)
    with torch.no_grad():
        for j, own in enumerate(model.parameters()):
            own.copy_(torch.stack([cands[best[s]][j][s] for s in range(model.m)]))
    return replace(schedule, iters=schedule.iters - used, race=(), manager_pretrain_frac=0.0)


def expert_loss(preds: torch.Tensor, logits: torch.Tensor | None, target: torch.Tensor, labels: torch.Tensor | None,
                pretrain: bool, power: int, scale: float = 1.0) -> torch.Tensor:
    """(M,) the Neural Experts terms: the manager's cross-entropy against ``labels`` while it is pretrained, then
    each expert's error (``|e|**power``, times ``scale``) weighted by its gate; zero with one expert."""
    if logits is None:
        return torch.zeros(preds.shape[0], device=preds.device)
    if pretrain:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), label_smoothing=0.01,
                               reduction="none").view(preds.shape[0], -1).mean(1)
    gates = torch.softmax(logits, -1).transpose(1, 2)  # (M, K, P)
    err = (preds - target.unsqueeze(1)).abs() ** power
    return scale * (gates * err.mean(-1)).sum(1).mean(1)


# (quantization mode, manager pretraining) -> (loss per signal (M,), a progress line on demand)
Step = Callable[[str, bool], tuple[torch.Tensor, Callable[[], str]]]


def optimise(model: LatentModel, schedule: LatentSchedule, step: Step, seed: int = 0) -> list[float]:
    """Run the schedule's phases on ``model``; ``step`` computes each signal's loss. Returns the last losses.

    Latents and networks have their own learning rates, cosine-decayed through the
    relaxed phase. A step whose loss is not finite is undone and the learning rate halved.
    """
    torch.manual_seed(seed)
    params = list(model.parameters())
    if params[0].device.type == "cpu":
        keep_freed_memory()
    latent_ids = {id(p) for p in model.latents}
    context_ids = {id(t) for key in model.nets if key.startswith("arm") for layer in model.nets[key] for t in layer}
    ste_latent_lr = schedule.ste_lr if schedule.ste_latent_lr is None else schedule.ste_latent_lr
    groups = [{"params": list(model.latents), "base": schedule.latent_lr, "ste": ste_latent_lr},
              {"params": [p for p in params if id(p) not in latent_ids | context_ids], "base": schedule.lr,
               "ste": schedule.ste_lr},
              {"params": [p for p in params if id(p) in context_ids], "base": schedule.context_lr or schedule.lr,
               "ste": schedule.ste_lr}]
    opt = _optimizer(model, groups, schedule.optimizer)
    n_ste = int(schedule.iters * schedule.ste_frac)
    n_noise = schedule.iters - n_ste
    pretrain = int(schedule.iters * schedule.manager_pretrain_frac) if model.cfg.n_experts > 1 else 0
    bar = _progress(schedule.iters, schedule.progress, schedule.desc)
    good = [p.detach().clone() for p in params]
    lr_scale = 1.0
    losses = torch.zeros(model.m)
    for it in range(schedule.iters):
        ste = it >= n_noise
        cosine = 0.5 * (1 + math.cos(math.pi * it / max(n_noise, 1)))
        decay = schedule.lr_floor + (1 - schedule.lr_floor) * cosine if schedule.decay else 1.0
        for g in opt.param_groups:
            g["lr"] = lr_scale * (g["ste"] if ste else g["base"] * decay)
        if ste:
            mode = "ste"
        elif schedule.soft_rounding:
            frac = it / max(n_noise - 1, 1)
            mode = f"soft{schedule.temperature[0] + (schedule.temperature[1] - schedule.temperature[0]) * frac}"
            if schedule.noise is not None:
                mode += f":{schedule.noise[0] + (schedule.noise[1] - schedule.noise[0]) * frac}"
        else:
            mode = "noise"
        loss, status = step(mode, it < pretrain)
        total = loss.sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        if not torch.isfinite(total):
            with torch.no_grad():
                for p, g in zip(params, good):
                    p.copy_(g)
            lr_scale *= 0.5
            opt = _optimizer(model, groups, schedule.optimizer)
            continue
        if schedule.clip is not None:
            clip_per_signal(groups[1]["params"] + groups[2]["params"], schedule.clip)
        opt.step()
        losses = loss.detach()
        if it % 100 == 0:
            good = [p.detach().clone() for p in params]
        if bar is not None:
            bar.update(1)
            if it % 20 == 0:
                bar.set_postfix_str(status())
    if bar is not None:
        bar.close()
    return losses.tolist()


def _optimizer(model: LatentModel, groups: list[dict], name: str) -> torch.optim.Optimizer:
    """A fresh optimiser over ``groups`` (latents, synthesis, context models): Adam; or "soap", SOAP for the
    networks' matrices with Cool-chic 5's settings (betas 0.95, a refresh every 10 steps, decoupled weight decay
    0.01); or "soap-synthesis", the same for the synthesis only, the context models keeping Adam."""
    if name == "adam":
        return torch.optim.Adam(groups)
    if name not in ("soap", "soap-synthesis"):
        raise ValueError(f"unknown optimizer {name!r}")
    adam = {"betas": (0.9, 0.999), "weight_decay": 0.0}
    soap = {"betas": (0.95, 0.95), "weight_decay": 0.01}
    settings = [adam, soap, soap if name == "soap" else adam]
    views = model.matrix_views()
    if name == "soap-synthesis":
        views = {k: v for k, v in views.items() if k not in {id(p) for p in groups[2]["params"]}}
    return StackSOAP([{**g, **extra} for g, extra in zip(groups, settings)], views, precondition_frequency=10)


def clip_per_signal(params: list[torch.Tensor], limit: float) -> None:
    """Scale each signal's gradients (the leading dimension of every parameter) to a norm of at most ``limit``:
    signals fitted side by side are clipped as if each were fitted alone."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norm = torch.stack([g.flatten(1).square().sum(1) for g in grads]).sum(0).sqrt()
    factor = (limit / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.view(-1, *([1] * (g.dim() - 1))))


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, dynamic_ncols=True, leave=False)
