"""A synthesis whose first layer reads each pixel's 3x3 neighbourhood of features, against the format's, on Kodak crops.

Format 3's synthesis is per pixel: each pixel's features are its upsampled latents, one
per grid, and only the refinement after the expert looks at neighbouring pixels. Here the
expert's first layer reads the 3x3 window of features around the pixel (9 x levels inputs,
zero outside the image), so the network can shape an edge or a texture from the latents
beside it before its nonlinearity. ``--window-levels N`` gives the window to the N finest
grids only (the others stay one input each), which costs fewer weights. The window's centre
taps start as the per-pixel layer's weights and the others at zero, so both fits start from
the same function.

Fitted on the fit side only and scored by the fit's own hard-rounded cost: MSE on [0, 1] +
lambda x latent bits per pixel. The window adds 8 x N x width weights per expert; the
rows give their count, so the network bits can be charged at any bits per weight over
any image size. One JSON line per crop, quality and synthesis is appended to ``--out``.

    python bench/synthesis_window.py ../shared/data/kodak --images 1,4,15,23 --size 256 \\
        --qualities 3,5 --iters 600 --out bench/results/synthesis_window_cpu.jsonl
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from decode_order import fit_and_score
from optimizer_ablation import append_row, crop_parser, kodak_crops, settings
from nxcodec.fit.latent import LatentModel

CENTRE = 4  # the centre tap of a 3x3 window, in unfold's order


class WindowModel(LatentModel):
    """A 2-D latent model whose experts' first layer reads the 3x3 window of features around each pixel, for
    the ``WINDOW_LEVELS`` finest grids (None: all). A class attribute, as the warm-up race makes its candidates
    by calling the model's class; :func:`window_model` makes the class for a count."""

    WINDOW_LEVELS: int | None = None

    def __init__(self, cfg, m: int, shape: tuple[int, ...], channels: int, seed: int = 0) -> None:
        super().__init__(cfg, m, shape, channels, seed)
        n = self.WINDOW_LEVELS
        self.window_levels = n = cfg.levels if n is None else min(n, cfg.levels)
        w, b = self.nets["experts"][0]
        wide = torch.zeros(*w.shape[:-2], w.shape[-2] + 8 * n, w.shape[-1])
        wide[..., CENTRE : 9 * n : 9, :] = w.detach()[..., :n, :]
        wide[..., 9 * n :, :] = w.detach()[..., n:, :]
        self.nets["experts"][0] = [wide, b]
        self.register_nets()

    def extra_weights(self) -> int:
        """Weights this model codes beyond the per-pixel synthesis, per signal."""
        return 8 * self.window_levels * self.nets["experts"][0][0][0].shape[-1] * self.cfg.n_experts

    def point_features(self, grids: list[torch.Tensor], *where: torch.Tensor) -> torch.Tensor:
        x = self.features(grids)  # (M, L, H, W)
        n = self.window_levels
        windows = F.unfold(x[:, :n], 3, padding=1)  # (M, n x 9, P), level-major
        return torch.cat([windows, x[:, n:].flatten(2)], 1).transpose(1, 2)


def window_model(levels: int | None) -> type[WindowModel]:
    """The window model class for the ``levels`` finest grids (None: all)."""
    return type(f"WindowModel{levels}", (WindowModel,), {"WINDOW_LEVELS": levels})


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "600")
    ap.add_argument("--window-levels", type=int, default=None, help="Finest grids read through the window [all].")
    ap.add_argument("--no-base", action="store_true", help="Fit the window synthesis only.")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    for iters, preset, cfg in settings(args, d):
        window = "window3" if args.window_levels is None else f"window3-finest{args.window_levels}"
        for synthesis in ([] if args.no_base else ["per-pixel"]) + [window]:
            kind = LatentModel if synthesis == "per-pixel" else window_model(args.window_levels)
            model = kind(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
            extra = model.extra_weights() if isinstance(model, WindowModel) else 0
            for name, scored in zip(names, fit_and_score(model, target, preset, iters, args.seed)):
                append_row(args.out, {"image": name, "size": args.size, "quality": preset.quality,
                                      "synthesis": synthesis, "extra_weights": extra, "iters": iters, **scored})


if __name__ == "__main__":
    main()
