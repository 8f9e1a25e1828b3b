"""The latents' decode order within a grid: the format's two passes against a four-pass quadtree, on Kodak crops.

Format 3 decodes each grid in two passes (SPEC.md 9.6): pass A, the positions whose
coordinates sum to an even number, reads only the coarser grid; pass B reads the pass A
latents around it as well. A quadtree order (as multistage spatial context models in learned
image compression) decodes a quarter of the grid first, from the coarser grid alone, and
the other three quarters in turn, each reading everything already decoded around it, so
three quarters of the latents have a context in their own grid instead of half.

Here the quadtree is built on the fit side only: pass 0 is (even, even) and reads the
coarser grid through ``arm_a``; passes 1, 2 and 3 are (odd, odd), (even, odd) and (odd,
even), and one context model reads the 24 values of the 5x5 window around the latent (those
not decoded yet read 0), the 9 coarser values and a one-hot of the pass. Both orders are
fitted from the same start with the preset's schedule and scored by the fit's own
hard-rounded cost: MSE on [0, 1] + lambda x latent bits per pixel. The network bits are left
out, which favours the quadtree, whose second context model reads 36 inputs instead of 21.
One JSON line per crop, quality and order is appended to ``--out``.

Two more orders (``--orders``) ask whether a context in raster order, as Cool-chic's, would
pay for a decoder with a sequential step per wavefront: *causal* reads the 12 latents
before it in its own grid (``CAUSAL``, three rows up and three to the left) and the 9
coarser values through one context model, and rounds each latent itself, as Cool-chic
does (``round(y)``, coded under the predicted Laplace), since a raster order cannot shift
each latent by a mean that its neighbours' rounding decides without fitting one latent at
a time. *two-pass-plain* is the format's two passes with that plain rounding, to tell the
two changes apart; *causal-shift* keeps the mean-shifted rounding in raster order, fitted
with each mean taken from the unrounded neighbours and scored one wavefront at a time
(``CausalShiftModel``). *rows* and *row-halves* decode a grid a row at a time (``RowsModel``);
*causal-tiles* and *causal-slope2* bound a decoder's wavefronts (``CausalTilesModel``, ``CausalSlope2Model``).

    python bench/decode_order.py ../shared/data/kodak --images 1,4,15,23 --size 256 \\
        --qualities 3,5 --iters 600 --out bench/results/decode_order_cpu.jsonl
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F

from optimizer_ablation import append_row, crop_parser, kodak_crops, settings
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit import presets
from nxcodec.fit.latent import (LatentModel, LatentSchedule, context_model_params, fit, laplace_bits,
                                plain_rounding)
from nxcodec.latent.context import N_CONTEXT_A

WINDOW = [(a, b) for a in range(-2, 3) for b in range(-2, 3) if (a, b) != (0, 0)]
PASS_OF_PARITY = (0, 2, 3, 1)  # (row % 2) * 2 + col % 2 -> pass: (0,0) first, then (1,1), (0,1), (1,0)
CAUSAL = ((0, -1), (0, -2), (0, -3), (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-1, 2), (-2, -1), (-2, 0), (-2, 1),
          (-3, 0))  # decoded before (row, col) in raster order


class QuadtreeModel(LatentModel):
    """A 2-D latent model whose grids are decoded in the four passes of a 2x2 quadtree."""

    def __init__(self, cfg, m: int, shape: tuple[int, ...], channels: int, seed: int = 0) -> None:
        super().__init__(cfg, m, shape, channels, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        self.nets["arm_b"] = context_model_params(m, len(WINDOW) + N_CONTEXT_A + 3, cfg, gen)
        self.register_nets()

    def quantized_latents(self, mode: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        bits = torch.zeros(self.m, device=self.latents[0].device)
        out: list[torch.Tensor] = [None] * self.cfg.levels  # type: ignore[list-item]
        coarser = None
        for level in range(self.cfg.levels - 1, -1, -1):
            y = self.latents[level]
            h, w = y.shape[1:]
            flat = y.reshape(self.m, -1)
            coarse = self._coarse_context(coarser, (h, w)).to(y).reshape(self.m, h * w, -1)
            rows = torch.arange(h).view(-1, 1).expand(h, w)
            cols = torch.arange(w).view(1, -1).expand(h, w)
            passes = torch.tensor(PASS_OF_PARITY)[((rows % 2) * 2 + cols % 2).reshape(-1)]
            grid = torch.zeros_like(flat)
            for k in range(4):
                idx = torch.nonzero(passes == k).reshape(-1)
                if idx.numel() == 0:
                    continue
                if k == 0:
                    mu, log2_scale = self._arm("arm_a", coarse[:, idx])
                else:  # the grid holds the passes before this one; the rest read 0
                    p = F.pad(grid.view(self.m, h, w), (2, 2, 2, 2))
                    window = torch.stack([p[:, 2 + a : 2 + a + h, 2 + b : 2 + b + w] for a, b in WINDOW], -1)
                    flags = torch.zeros(self.m, idx.numel(), 3)
                    flags[..., k - 1] = 1.0
                    ctx = torch.cat([window.reshape(self.m, h * w, -1)[:, idx], coarse[:, idx], flags], -1)
                    mu, log2_scale = self._arm("arm_b", ctx)
                y_k, b_k = self._quantize(flat[:, idx], mu, log2_scale, mode)
                grid = grid.index_copy(1, idx, y_k)
                bits = bits + b_k.sum(1)
            out[level] = coarser = grid.view(self.m, h, w)
        return out, bits


class PlainRounding(LatentModel):
    """The format's two passes, each latent rounded itself (``round(y)``) and its integer coded under the Laplace
    the context model predicts, instead of the residual from that mean rounded (the rounding of version 12's raster
    context, ``plain_rounding``)."""

    _plain = staticmethod(plain_rounding)

    def _quantize(self, y, mu, log2_scale, mode):
        value, coded = self._plain(y, mode)
        return value, laplace_bits(coded - mu, log2_scale)


class CausalModel(PlainRounding):
    """A 2-D latent model whose context model reads ``CAUSAL`` in the latent's own grid and the 9 coarser values
    (``arm_a``, 21 inputs; ``arm_b`` is left unused), the latents rounded plainly."""

    offsets = CAUSAL
    extra_inputs = 0  # inputs :meth:`_same` gives beyond ``offsets``
    tile = 0  # with a tile side, a latent reads only the latents of its own tile (tiles decode side by side)

    def __init__(self, cfg, m: int, shape: tuple[int, ...], channels: int, seed: int = 0) -> None:
        super().__init__(cfg, m, shape, channels, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        self.nets["arm_a"] = context_model_params(m, len(self.offsets) + self.extra_inputs + N_CONTEXT_A, cfg, gen)
        self.register_nets()

    def _same(self, value: torch.Tensor) -> torch.Tensor:
        """(M, h, w, offsets): each latent's causal neighbours in its grid (and tile), zero outside."""
        h, w = value.shape[1:]
        p = F.pad(value, (3, 3, 3, 0))
        same = torch.stack([p[:, 3 + a : 3 + a + h, 3 + b : 3 + b + w] for a, b in self.offsets], -1)
        if self.tile:
            r, c = torch.arange(h).view(-1, 1), torch.arange(w).view(1, -1)
            inside = torch.stack([((r + a) // self.tile == r // self.tile) & ((c + b) // self.tile == c // self.tile)
                                  for a, b in self.offsets], -1)
            same = same * inside.to(same)
        return same

    def _values(self, mode: str) -> Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """What gives a grid's latents as the decoder sees them and the values whose bits are counted."""
        return lambda level, y: self._plain(y, mode)

    def quantized_latents(self, mode: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        bits = torch.zeros(self.m, device=self.latents[0].device)
        out: list[torch.Tensor] = [None] * self.cfg.levels  # type: ignore[list-item]
        coarser = None
        values = self._values(mode)
        for level in range(self.cfg.levels - 1, -1, -1):
            y = self.latents[level]
            h, w = y.shape[1:]
            value, coded = values(level, y)
            same = self._same(value)
            coarse = self._coarse_context(coarser, (h, w)).to(y)
            mu, log2_scale = self._arm("arm_a", torch.cat([same, coarse], -1).reshape(self.m, h * w, -1))
            bits = bits + laplace_bits(coded.reshape(self.m, -1) - mu, log2_scale).sum(1)
            out[level] = coarser = value
        return out, bits


class CausalTilesModel(CausalModel):
    """:class:`CausalModel` in tiles of 32x32 latents decoded side by side: a decoder's wavefronts per grid are
    bounded by the tile, whatever the image's size."""

    tile = 32


CAUSAL_SLOPE2 = ((0, -1), (0, -2), (0, -3), (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-2, -2), (-2, -1), (-2, 0),
                 (-2, 1), (-2, 2))  # no (-1, 2): a wavefront of 2 row + col


class CausalSlope2Model(CausalModel):
    """:class:`CausalModel` with a neighbourhood whose wavefront is ``2 row + col``: a third fewer decoder steps."""

    offsets = CAUSAL_SLOPE2


class CausalSlope2TilesModel(CausalSlope2Model):
    """:class:`CausalSlope2Model` in tiles of 64x64 latents: what a decoder of a Kodak image can afford
    (``raster_decode_time.py``)."""

    tile = 64


class CausalShiftModel(CausalModel):
    """:class:`CausalModel` with the format's mean-shifted rounding, ``round(y - mu) + mu``. In raster order each
    mean depends on the rounding of the latents before it, so the straight-through phase (and ``exact``, set for
    scoring) rounds one wavefront (``3 row + col``) at a time, as a decoder would, and the relaxed phase adds
    uniform noise instead of rounding softly: a mean taken from the unrounded neighbours would let the latents
    carry information the decoder cannot see (checked once, not a committed benchmark: a 300-iteration fit of two
    64x64 crops scored 2 to 4 times lower that way than when rounded exactly)."""

    exact = False

    def quantized_latents(self, mode: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self._exact() if self.exact else super().quantized_latents(mode)

    def _values(self, mode: str) -> Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        if mode.startswith("soft") or mode == "noise":
            return lambda level, y: (y + torch.rand_like(y) - 0.5,) * 2
        rounded = self._exact()[0]
        return lambda level, y: (y + (rounded[level] - y).detach(),) * 2

    @torch.no_grad()
    def _exact(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        bits = torch.zeros(self.m)
        out: list[torch.Tensor] = [None] * self.cfg.levels  # type: ignore[list-item]
        coarser = None
        for level in range(self.cfg.levels - 1, -1, -1):
            y = self.latents[level]
            h, w = y.shape[1:]
            coarse = self._coarse_context(coarser, (h, w)).to(y)
            p = torch.zeros(self.m, h + 3, w + 6)  # the grid decoded so far, 3 rows above and 3 columns each side
            for t in range(3 * (h - 1) + w):
                rows = torch.arange(max(0, -(-(t - w + 1) // 3)), min(h - 1, t // 3) + 1)
                cols = t - 3 * rows
                ctx = torch.stack([p[:, 3 + rows + a, 3 + cols + b] for a, b in CAUSAL], -1)
                mu, log2_scale = self._arm("arm_a", torch.cat([ctx, coarse[:, rows, cols]], -1))
                k = torch.round(y[:, rows, cols] - mu)
                p[:, 3 + rows, 3 + cols] = k + mu
                bits += laplace_bits(k, log2_scale).sum(1)
            out[level] = coarser = p[:, 3:, 3 : 3 + w].clone()
        return out, bits


ROWS_ABOVE = tuple((-1, b) for b in range(-3, 4)) + tuple((-2, b) for b in range(-2, 3))


class RowsModel(CausalModel):
    """A grid decoded a row at a time (a step per row instead of per wavefront): each latent reads ``ROWS_ABOVE``
    (12 latents of the two rows above) and the 9 coarser values; with ``halves``, each row in two halves, the even
    columns and then the odd ones, which read in addition their left and right neighbours (and a flag of the half),
    and cost a decoder twice the steps. Plain rounding, as :class:`CausalModel`."""

    offsets = ROWS_ABOVE
    halves = False

    def _same(self, value: torch.Tensor) -> torch.Tensor:
        h, w = value.shape[1:]
        p = F.pad(value, (3, 3, 3, 0))
        parts = [p[:, 3 + a : 3 + a + h, 3 + b : 3 + b + w] for a, b in self.offsets]
        if self.halves:
            odd = (torch.arange(w) % 2).to(value).expand(self.m, h, w)
            parts += [p[:, 3 : 3 + h, 3 + b : 3 + b + w] * odd for b in (-1, 1)] + [odd]
        return torch.stack(parts, -1)


class RowHalvesModel(RowsModel):
    halves = True
    extra_inputs = 3


ORDERS = {"two-pass": LatentModel, "quadtree": QuadtreeModel, "two-pass-plain": PlainRounding,
          "causal": CausalModel, "causal-shift": CausalShiftModel, "rows": RowsModel, "row-halves": RowHalvesModel,
          "causal-tiles": CausalTilesModel, "causal-slope2": CausalSlope2Model,
          "causal-slope2-tiles64": CausalSlope2TilesModel}


def hard_costs(model: LatentModel, target: torch.Tensor, lam: float) -> list[tuple[float, float, float]]:
    """Per signal: latent bits per pixel, PSNR (dB) and MSE + ``lam`` x bpp, with the latents hard-rounded."""
    with torch.no_grad():
        grids, bits = model.quantized_latents("ste")
        _, _, image = model.synthesize(grids)
        mse = ((image - target) ** 2).mean(dim=(1, 2)) / 4
    pixels = model.height * model.width
    return [(float(b) / pixels, -10 * math.log10(float(e)), float(e) + lam * float(b) / pixels)
            for b, e in zip(bits, mse)]


def fit_and_score(model: LatentModel, target: torch.Tensor, preset: presets.LatentPreset, iters: int,
                  seed: int) -> list[dict]:
    """Fit ``model`` with the preset's lambda and optimiser for ``iters`` iterations; per signal, the fields of its
    result row: :func:`hard_costs` (as latent_bpp, psnr, cost), the fit's seconds and where it ran."""
    t0 = time.perf_counter()
    fit(model, target, preset.lam, LatentSchedule.for_preset(preset, iters), seed=seed)
    seconds = time.perf_counter() - t0
    model.exact = True
    return [{"latent_bpp": round(bpp, 4), "psnr": round(psnr, 3), "cost": cost, "fit_seconds": round(seconds, 1),
             "seed": seed, "commit": git_commit(), "machine": machine_name("cpu"), "threads": torch.get_num_threads()}
            for bpp, psnr, cost in hard_costs(model, target, preset.lam)]


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "600")
    ap.add_argument("--orders", default="two-pass,quadtree",
                    help=f"Orders to fit, comma-separated, of {', '.join(ORDERS)} [two-pass,quadtree].")
    args = ap.parse_args()
    orders = args.orders.split(",")
    if not set(orders) <= set(ORDERS):
        ap.error(f"--orders: choose from {', '.join(ORDERS)}")
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    for iters, preset, cfg in settings(args, d):
        cfg = replace(cfg, flags=0)  # these models build on the two-pass networks (arm_a, arm_b), not version 12's
        for order in orders:
            model = ORDERS[order](cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
            for name, scored in zip(names, fit_and_score(model, target, preset, iters, args.seed)):
                append_row(args.out, {"image": name, "size": args.size, "quality": preset.quality, "order": order,
                                      "iters": iters, **scored})


if __name__ == "__main__":
    main()
