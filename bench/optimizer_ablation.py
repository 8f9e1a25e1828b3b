"""Adam against SOAP for the networks of a format 3 image fit, on Kodak crops.

Fits the same crops (side by side, one stack) with each optimiser and each iteration
budget (at the learning rates given) from the same start, codes every fit into a real
stream and reports its rate, PSNR and rate-distortion cost (MSE on [0, 1] + lambda x bpp,
the loss the fit minimises). One JSON line per crop and setting is appended to ``--out``.

    python bench/optimizer_ablation.py ../shared/data/kodak --images 1,4,15,23 --size 256 \\
        --qualities 3,5 --iters 500,1500 --out bench/results/optimizer_ablation_cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit import presets
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit.latent_code import code_image, config_for
from nxcodec.latent.stream import LatentConfig
from nxcodec.signals import for_name


def int_list(text: str) -> list[int]:
    """``1,4,15`` -> [1, 4, 15], for argparse (which turns the ValueError into a usage error)."""
    numbers = [int(v) for v in text.split(",")]
    if any(n < 1 for n in numbers):
        raise ValueError(text)
    return numbers


def crop_parser(description: str, iters: str) -> argparse.ArgumentParser:
    """The arguments every crop ablation takes: the crops, the qualities, the fit lengths, the seed, the output."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("src", type=Path, help="The Kodak folder.")
    ap.add_argument("--images", type=int_list, default="1,4,15,23", help="Kodak numbers, comma-separated [1,4,15,23].")
    ap.add_argument("--size", type=int, default=256, help="Centre crop side [256].")
    ap.add_argument("--qualities", type=int_list, default="3,5",
                    help="Presets whose lambda, sizes (and optimiser) are used [3,5].")
    ap.add_argument("--iters", type=int_list, default=iters, help=f"Fit lengths, comma-separated [{iters}].")
    ap.add_argument("--seed", type=int, default=0, help="Seed of every fit [0].")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file to append to.")
    return ap


def kodak_crops(args: argparse.Namespace) -> tuple[list[str], list, torch.Tensor]:
    """The names, image signals and stacked fit targets of the central ``--size`` crops of the Kodak images
    ``--images``; reads the commit first, so the rows record the tree the run started from."""
    git_commit()
    image = for_name("image")
    names, signals = [], []
    for num in args.images:
        im = np.asarray(Image.open(args.src / f"kodim{num:02d}.png").convert("RGB"))
        h, w, s = *im.shape[:2], args.size
        names.append(f"kodim{num:02d}")
        signals.append(image.from_array(im[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2].copy()))
    return names, signals, torch.stack([image.targets(sig) for sig in signals])


def settings(args: argparse.Namespace, d) -> Iterator[tuple[int, presets.LatentPreset, LatentConfig]]:
    """Every (fit length, preset, latent config) of ``--iters`` x ``--qualities`` for crops described by ``d``."""
    for iters in args.iters:
        for q in args.qualities:
            preset = presets.latent_preset(q)
            yield iters, preset, config_for(preset, d)


def coded_crops(model: LatentModel, cfg: LatentConfig, names: list[str], signals: list, lam: float
                ) -> Iterator[tuple[str, dict]]:
    """Code each crop of a fitted stack into a real stream: its name, and the stream's bytes, bpp, PSNR and
    rate-distortion cost (MSE on [0, 1] + ``lam`` x bpp, the loss the fit minimises)."""
    image = for_name("image")
    d = signals[0].descriptor
    for j, (name, sig) in enumerate(zip(names, signals)):
        weights = {n: t.detach().numpy() for n, t in model.coded_tensors(j).items()}
        latents = [lat[j].detach().numpy().astype(np.float64) for lat in model.latents]
        best = code_image(d, cfg, weights, latents, sig.data, lam, None)
        bpp = 8 * len(best.data) / (d.width * d.height)
        psnr = image.metrics(sig.data, best.samples.reshape(sig.data.shape))["psnr"]
        yield name, {"bytes": len(best.data), "bpp": round(bpp, 4), "psnr": round(psnr, 3),
                     "cost": 10 ** (-psnr / 10) + lam * bpp}


def append_row(path: Path, row: dict) -> None:
    """Print ``row`` and append it to the JSON lines file ``path``."""
    print(json.dumps(row), flush=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "500,1500")
    ap.add_argument("--optimizers", default="adam,soap",
                    help="Optimisers to compare: adam, soap, soap-synthesis [adam,soap].")
    ap.add_argument("--lr", type=float, default=LatentSchedule.lr,
                    help=f"The networks' learning rate [{LatentSchedule.lr}].")
    ap.add_argument("--latent-lr", type=float, default=None,
                    help="The latents' learning rate [the preset's].")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    for iters, preset, cfg in settings(args, d):
        for name in args.optimizers.split(","):
            model = LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
            t0 = time.perf_counter()
            latent_lr = {} if args.latent_lr is None else {"latent_lr": args.latent_lr}
            schedule = LatentSchedule.for_preset(preset, iters, optimizer=name, lr=args.lr, **latent_lr)
            fit(model, target, preset.lam, schedule, seed=args.seed)
            seconds = time.perf_counter() - t0
            for img, coded in coded_crops(model, cfg, names, signals, preset.lam):
                append_row(args.out, {"image": img, "size": args.size, "quality": preset.quality, "iters": iters,
                                      "optimizer": name, **coded, "fit_seconds": round(seconds, 1),
                                      "seed": args.seed, "lr": args.lr, "latent_lr": schedule.latent_lr,
                                      "commit": git_commit(), "machine": machine_name("cpu"),
                                      "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
