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

import numpy as np
import torch
from PIL import Image

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit import presets
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit.latent_code import code_image, config_for
from nxcodec.signals import for_name


def kodak_crops(src: Path, images: str, size: int) -> tuple[list[str], list]:
    """The names and image signals of the central ``size`` x ``size`` crops of Kodak images ``images`` ("1,4")."""
    image = for_name("image")
    names, signals = [], []
    for num in images.split(","):
        im = np.asarray(Image.open(src / f"kodim{int(num):02d}.png").convert("RGB"))
        h, w = im.shape[:2]
        names.append(f"kodim{int(num):02d}")
        crop = im[(h - size) // 2 : (h + size) // 2, (w - size) // 2 : (w + size) // 2]
        signals.append(image.from_array(crop.copy()))
    return names, signals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="The Kodak folder.")
    ap.add_argument("--images", default="1,4,15,23", help="Kodak numbers, comma-separated [1,4,15,23].")
    ap.add_argument("--size", type=int, default=256, help="Centre crop side [256].")
    ap.add_argument("--qualities", default="3,5", help="Presets whose lambda and sizes are used [3,5].")
    ap.add_argument("--iters", default="500,1500", help="Fit lengths, comma-separated [500,1500].")
    ap.add_argument("--optimizers", default="adam,soap",
                    help="Optimisers to compare: adam, soap, soap-synthesis [adam,soap].")
    ap.add_argument("--seed", type=int, default=0, help="Seed of every fit [0].")
    ap.add_argument("--lr", type=float, default=LatentSchedule.lr,
                    help=f"The networks' learning rate [{LatentSchedule.lr}].")
    ap.add_argument("--latent-lr", type=float, default=LatentSchedule.latent_lr,
                    help=f"The latents' learning rate [{LatentSchedule.latent_lr}].")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file to append to.")
    args = ap.parse_args()
    git_commit()  # the commit this run starts from, read before anything is measured
    image = for_name("image")
    names, signals = kodak_crops(args.src, args.images, args.size)
    d = signals[0].descriptor
    target = torch.stack([image.targets(sig) for sig in signals])
    for iters in (int(v) for v in args.iters.split(",")):
        for q in (int(v) for v in args.qualities.split(",")):
            preset = presets.latent_preset(q)
            cfg = config_for(preset, d)
            for name in args.optimizers.split(","):
                model = LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
                t0 = time.perf_counter()
                schedule = LatentSchedule(iters=iters, optimizer=name, lr=args.lr, latent_lr=args.latent_lr)
                fit(model, target, preset.lam, schedule, seed=args.seed)
                seconds = time.perf_counter() - t0
                for j, (img, sig) in enumerate(zip(names, signals)):
                    weights = {n: t.detach().numpy() for n, t in model.coded_tensors(j).items()}
                    latents = [lat[j].detach().numpy().astype(np.float64) for lat in model.latents]
                    best = code_image(d, cfg, weights, latents, sig.data, preset.lam, None)
                    bpp = 8 * len(best.data) / (d.width * d.height)
                    psnr = image.metrics(sig.data, best.samples.reshape(sig.data.shape))["psnr"]
                    row = {"image": img, "size": args.size, "quality": q, "iters": iters, "optimizer": name,
                           "bpp": round(bpp, 4), "psnr": round(psnr, 3),
                           "cost": 10 ** (-psnr / 10) + preset.lam * bpp, "fit_seconds": round(seconds, 1),
                           "seed": args.seed, "lr": args.lr, "latent_lr": args.latent_lr, "commit": git_commit(),
                           "machine": machine_name("cpu"), "threads": torch.get_num_threads()}
                    print(json.dumps(row), flush=True)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
