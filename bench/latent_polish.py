"""Fitting the latents again after the networks are quantized, on Kodak crops (format 3 images).

The float fit ends with the networks in float; coding then rounds them to the steps the
precision search picks, and the latents, fitted to the float networks, no longer quite fit
the networks the decoder runs. Here each crop is fitted and coded once (the ``base`` row),
then, for each variant ``iterations x learning rate``, the coded networks are put back into
the model, frozen, and the latents alone go on for that many straight-through iterations
(hard rounding, the fit's loss) before the image is written again with the same networks.
One JSON line per crop and setting is appended to ``--out``.

    python bench/latent_polish.py ../shared/data/kodak --images 1,4 --size 512 --qualities 5 \\
        --iters 2000 --polish 200x0.003,200x0.01 --out bench/results/latent_polish_512_cpu.jsonl
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from optimizer_ablation import append_row, crop_parser, kodak_crops, settings
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit, optimise
from nxcodec.fit.latent_code import _finish, code_image, image_source
from nxcodec.signals import for_name


def parse_polish(text: str) -> list[tuple[int, float]]:
    """``200x0.003,400x0.01`` -> [(200, 0.003), (400, 0.01)]."""
    out = []
    for item in text.split(","):
        n, _, lr = item.partition("x")
        try:
            out.append((int(n), float(lr)))
        except ValueError:
            raise SystemExit(f"{item!r} is not iterations x learning rate") from None
    return out


def load_coded(model: LatentModel, j: int, tensors: dict) -> None:
    """Put signal ``j``'s coded network tensors (dequantized) into ``model``'s parameters."""
    gain = float(model.input_gain[j])
    with torch.no_grad():
        for name, t in tensors.items():
            v = torch.from_numpy(np.asarray(t.values(), dtype=np.float32))
            key, layer, part = (name.split(".") + ["", ""])[:3]
            if name == "upsample":
                model.upsample[j].copy_(v)
            elif key == "refine":
                model.refine[2 * int(layer) + (part == "bias")][j].copy_(v)
            else:
                layers = model.nets[key]
                index = len(layers) - 1 if layer == "out" else int(layer)
                w = layers[index][part == "bias"]
                w[j].copy_(v / gain if index == 0 and part == "weight" else v)


def polish(model: LatentModel, target: torch.Tensor, lam: float, iters: int, lr: float, seed: int) -> None:
    """Fit the latents alone for ``iters`` straight-through iterations at ``lr``, the networks frozen."""
    nets = [p for p in model.parameters() if all(p is not q for q in model.latents)]
    for p in nets:
        p.requires_grad_(False)
    pixels = model.height * model.width

    def step(mode: str, pretrain: bool):  # mode is "ste" throughout: the schedule is all straight-through
        grids, bits = model.quantized_latents(mode)
        image = model.synthesize(grids)[2]
        mse = ((image - target) ** 2).mean(dim=(1, 2)) / 4
        return mse + lam * bits / pixels, lambda: ""

    schedule = replace(LatentSchedule(), iters=iters, ste_frac=1.0, ste_lr=lr, race=(), clip=None)
    optimise(model, schedule, step, seed)
    for p in nets:
        p.requires_grad_(True)


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "2000")
    ap.add_argument("--polish", type=parse_polish, default="200x0.003",
                    help="Latent fits after coding, iterations x learning rate, comma-separated [200x0.003].")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    image = for_name("image")
    d = signals[0].descriptor
    for iters, preset, cfg in settings(args, d):
        model = LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
        t0 = time.perf_counter()
        fit(model, target, preset.lam, LatentSchedule.for_preset(preset, iters), seed=args.seed)
        fit_seconds = time.perf_counter() - t0
        coded = []
        start = [lat.detach().clone() for lat in model.latents]

        def row(j: int, variant: str, data: bytes, samples: np.ndarray, seconds: float) -> None:
            bpp = 8 * len(data) / (d.width * d.height)
            psnr = image.metrics(signals[j].data, samples.reshape(signals[j].data.shape))["psnr"]
            append_row(args.out, {"image": names[j], "size": args.size, "quality": preset.quality, "iters": iters,
                                  "variant": variant, "bytes": len(data), "bpp": round(bpp, 4),
                                  "psnr": round(psnr, 3), "cost": 10 ** (-psnr / 10) + preset.lam * bpp,
                                  "fit_seconds": round(fit_seconds, 1), "polish_seconds": round(seconds, 1),
                                  "seed": args.seed, "commit": git_commit(), "machine": machine_name("cpu"),
                                  "threads": torch.get_num_threads()})

        for j, sig in enumerate(signals):
            weights = {n: t.detach().numpy() for n, t in model.coded_tensors(j).items()}
            latents = [lat[j].detach().numpy().astype(np.float64) for lat in model.latents]
            best = code_image(d, cfg, weights, latents, sig.data, preset.lam, None)
            coded.append(best.image.tensors)
            row(j, "base", best.data, best.samples, 0.0)
        for n, lr in args.polish:
            with torch.no_grad():
                for lat, s in zip(model.latents, start):
                    lat.copy_(s)
            for j in range(len(signals)):
                load_coded(model, j, coded[j])
            t0 = time.perf_counter()
            polish(model, target, preset.lam, n, lr, args.seed)
            seconds = time.perf_counter() - t0
            for j, sig in enumerate(signals):
                latents = [lat[j].detach().numpy().astype(np.float64) for lat in model.latents]
                c = _finish(image_source(d, cfg, latents, sig.data, preset.lam), coded[j], 0.5)
                row(j, f"polish{n}x{lr:g}", c.data, c.samples, seconds)


if __name__ == "__main__":
    main()
