"""Nearest rounding against rounding with error feedback (GPTQ) of the synthesis weights, on the same fits.

Fits Kodak crops side by side with a quality's preset, then codes every crop twice from the same
fit: with each synthesis weight rounded to its nearest step, and as the encoder does, rounded with
error feedback (``nxcodec.fit.rounding``); the precision search runs in full for each. One JSON line
per crop, quality and rounding is appended to ``--out`` (bytes, bytes of the network integers, PSNR and
the rate-distortion cost, MSE on [0, 1] + lambda x bpp).

    python bench/weight_rounding.py ../shared/data/kodak --images 1,4 --size 512 --qualities 1,5 \\
        --iters 2000 --out bench/results/weight_rounding_512_cpu.jsonl
"""

from __future__ import annotations

import time

import numpy as np
import torch

from optimizer_ablation import append_row, crop_parser, kodak_crops, settings
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit.latent_code import code_image, code_plane, image_source, tensor_bits
from nxcodec.signals import for_name


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "2000")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    image = for_name("image")
    for iters, preset, cfg in settings(args, d):
        model = LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
        t0 = time.perf_counter()
        fit(model, target, preset.lam, LatentSchedule.for_preset(preset, iters), seed=args.seed)
        seconds = time.perf_counter() - t0
        for j, (name, sig) in enumerate(zip(names, signals)):
            weights = {n: t.detach().numpy() for n, t in model.coded_tensors(j).items()}
            latents = [lat[j].detach().numpy().astype(np.float64) for lat in model.latents]
            codings = {
                "nearest": lambda: code_plane(image_source(d, cfg, latents, sig.data, preset.lam), weights, None),
                "feedback": lambda: code_image(d, cfg, weights, latents, sig.data, preset.lam, None),
            }
            for rounding, code in codings.items():
                c0 = time.perf_counter()
                best = code()
                bpp = 8 * len(best.data) / (d.width * d.height)
                psnr = image.metrics(sig.data, best.samples.reshape(sig.data.shape))["psnr"]
                append_row(args.out, {"image": name, "size": args.size, "quality": preset.quality, "rounding": rounding,
                                      "iters": iters, "bytes": len(best.data),
                                      "network_bytes": round(tensor_bits(best.image.tensors) / 8),
                                      "bpp": round(bpp, 4), "psnr": round(psnr, 3),
                                      "cost": 10 ** (-psnr / 10) + preset.lam * bpp,
                                      "coding_seconds": round(time.perf_counter() - c0, 1),
                                      "fit_seconds": round(seconds, 1), "seed": args.seed, "commit": git_commit(),
                                      "machine": machine_name("cpu"), "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
