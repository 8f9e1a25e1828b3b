"""How the context models read the coarser grid, on Kodak crops: three variants of format 3's contexts.

Format 3's context models read the 3x3 values of the coarser grid around a latent's parent
``P[i // 2 + a, j // 2 + b]`` (SPEC.md 9.6); pass A, half the latents and most of their
bits, reads nothing else.

- ``plain``: the format's contexts.
- ``reflected``: the four latents of a 2x2 block read the same nine values in the same
  order, although they sit at different places against them (in the coarser grid's
  coordinates the latent at row ``i`` is at ``i / 2 - 1/4``, a quarter step before its
  parent's row for an even ``i``, after it for an odd one). Here the window is mirrored
  along each axis where the latent's coordinate is odd, ``P[i // 2 + s_i a, j // 2 + s_j
  b]`` with ``s = 1`` for even and ``-1`` for odd coordinates, so that each input stands at
  the same place relative to every latent: the same weights and multiply-accumulates.
- ``window5``: pass A reads the 5x5 values around the parent instead of 3x3 (25 inputs
  instead of 9: 16 x ``arm_width`` more weights, which the score does not charge).

Built on the fit side only and scored as ``bench/decode_order.py`` scores its orders: fitted
from the same start with the preset's schedule, the fit's own hard-rounded cost (MSE on
[0, 1] + lambda x latent bits per pixel). One JSON line per crop, quality and variant is
appended to ``--out``.

    python bench/coarse_context.py ../shared/data/kodak --images 1,4,15,23 --size 256 \\
        --qualities 5 --iters 2000 --variants plain,reflected --out bench/results/coarse_context_cpu.jsonl
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from decode_order import fit_and_score
from optimizer_ablation import append_row, crop_parser, kodak_crops, settings
from nxcodec.fit.latent import LatentModel, context_model_params
from nxcodec.fit.matmul import stack_matmul
from nxcodec.latent.context import COARSE_OFFSETS

WINDOW5 = tuple((a, b) for a in range(-2, 3) for b in range(-2, 3))


def reflected_order(height: int, width: int) -> torch.Tensor:
    """(height, width, 9): for each position, which input of the plain 3x3 order each reflected input takes."""
    perms = {}
    for si in (0, 1):
        for sj in (0, 1):
            mirrored = [((-a if si else a), (-b if sj else b)) for a, b in COARSE_OFFSETS]
            perms[si, sj] = [COARSE_OFFSETS.index(o) for o in mirrored]
    rows = torch.arange(height).view(-1, 1) % 2
    cols = torch.arange(width).view(1, -1) % 2
    table = torch.tensor([perms[0, 0], perms[0, 1], perms[1, 0], perms[1, 1]])
    return table[rows * 2 + cols]


class ReflectedModel(LatentModel):
    """A 2-D latent model whose coarser-grid context is mirrored where a latent's coordinate is odd."""

    def _coarse_context(self, coarser: torch.Tensor | None, size: tuple[int, ...]) -> torch.Tensor:
        ctx = super()._coarse_context(coarser, size)
        index = reflected_order(*size).to(ctx.device).expand(ctx.shape)
        return torch.gather(ctx, -1, index)


class Window5Model(LatentModel):
    """A 2-D latent model whose pass A context model reads the 5x5 coarser values around the parent."""

    def __init__(self, cfg, m: int, shape: tuple[int, ...], channels: int, seed: int = 0) -> None:
        super().__init__(cfg, m, shape, channels, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        self.nets["arm_a"] = context_model_params(m, len(WINDOW5), cfg, gen)
        self.register_nets()

    def _window(self, coarser: torch.Tensor | None, size: tuple[int, ...]) -> torch.Tensor:
        """(M, *size, 25): ``P[i // 2 + a, j // 2 + b]`` for ``a, b`` in -2..2, zero outside."""
        if coarser is None:
            return torch.zeros(self.m, *size, len(WINDOW5))
        up = F.pad(coarser, (2, 2, 2, 2)).repeat_interleave(2, 1).repeat_interleave(2, 2)  # up[i] = P[i // 2 - 2]
        return torch.stack([self._shifted(up, 4, a, size, 2) for a in WINDOW5], dim=-1)

    def _first_layers(self, coarser, size, idx_a, idx_b):
        n = math.prod(size)
        coarse = self._coarse_context(coarser, size).to(self.latents[0]).reshape(self.m, n, -1)
        wide = self._window(coarser, size).to(self.latents[0]).reshape(self.m, n, -1)

        def pass_b(grid: torch.Tensor) -> torch.Tensor:
            same = self._same_context(grid).reshape(self.m, n, -1)
            return stack_matmul(torch.cat([same[:, idx_b], coarse[:, idx_b]], dim=-1), self.nets["arm_b"][0][0])

        return stack_matmul(wide[:, idx_a], self.nets["arm_a"][0][0]), pass_b


VARIANTS = {"plain": LatentModel, "reflected": ReflectedModel, "window5": Window5Model}


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "2000")
    ap.add_argument("--variants", default="plain,reflected,window5",
                    help=f"Comma-separated, of {', '.join(VARIANTS)} [all three].")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    for iters, preset, cfg in settings(args, d):
        cfg = replace(cfg, flags=0)  # these models build on the two-pass networks (arm_a, arm_b), not version 12's
        for variant in args.variants.split(","):
            model = VARIANTS[variant](cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
            for name, scored in zip(names, fit_and_score(model, target, preset, iters, args.seed)):
                append_row(args.out, {"image": name, "size": args.size, "quality": preset.quality, "order": variant,
                                      "iters": iters, **scored})


if __name__ == "__main__":
    main()
