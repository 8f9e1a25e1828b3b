"""The coarser grid as a context, with and without the latent's phase, on Kodak crops.

Format 3's context models read the 3x3 values of the coarser grid around a latent's parent
``P[i // 2 + a, j // 2 + b]`` (SPEC.md 9.6). The four latents of a 2x2 block read the same
nine values in the same order, although they sit at different places against them: in the
coarser grid's coordinates the latent at row ``i`` is at ``i / 2 - 1/4``, a quarter step
before its parent's row for an even ``i`` and a quarter step after it for an odd one. The
"reflected" order reads the window mirrored along each axis where the latent's coordinate
is odd, ``P[i // 2 + s_i a, j // 2 + s_j b]`` with ``s = 1`` for even and ``-1`` for odd
coordinates, so that each input stands at the same place relative to every latent: the
same multiply-accumulates and weights, with the geometry the network would otherwise have
to average over.

Built on the fit side only and scored as ``bench/decode_order.py`` scores its orders: both
fitted from the same start with the preset's schedule, the fit's own hard-rounded cost
(MSE on [0, 1] + lambda x latent bits per pixel). One JSON line per crop, quality and order
is appended to ``--out``.

    python bench/coarse_phase.py ../shared/data/kodak --images 1,4,15,23 --size 256 \\
        --qualities 5 --iters 2000 --out bench/results/coarse_phase_cpu.jsonl
"""

from __future__ import annotations

import torch

from decode_order import fit_and_score
from optimizer_ablation import append_row, crop_parser, kodak_crops, settings
from nxcodec.fit.latent import LatentModel
from nxcodec.latent.context import COARSE_OFFSETS


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


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "2000")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    for iters, preset, cfg in settings(args, d):
        for order, kind in (("plain", LatentModel), ("reflected", ReflectedModel)):
            model = kind(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
            for name, scored in zip(names, fit_and_score(model, target, preset, iters, args.seed)):
                append_row(args.out, {"image": name, "size": args.size, "quality": preset.quality, "order": order,
                                      "iters": iters, **scored})


if __name__ == "__main__":
    main()
