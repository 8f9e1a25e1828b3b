"""K = 1 against K > 1 experts at equal multiply-adds per pixel, format 3, on Kodak crops.

For each quality, fits the crops (side by side, one stack) with the preset's one expert and
with K experts narrowed so the decoder's MAC per pixel (manager + one expert) is no larger,
everything else equal, and codes every fit into a real stream. A lambda puts the two at
different rates, so they are compared by curves: the BD-rate of K experts against one, per
crop over the qualities (four or more), and its mean. One JSON line per crop and fit is
appended to ``--out``; the summary is printed last.

    python bench/latent_experts.py ../shared/data/kodak --images 1,4,15,23 --size 256 \\
        --qualities 1,3,5,7 --iters 600 --out bench/results/latent_experts_cpu.jsonl
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from optimizer_ablation import append_row, coded_crops, crop_parser, kodak_crops, settings

from nxcodec.bench.bdrate import bd_psnr, bd_rate
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.latent.stream import LatentConfig


def equal_mac_width(base: LatentConfig, k: int, mgr_width: int, channels: int) -> int:
    """The widest expert such that K experts with a manager cost no more MAC per pixel than ``base``."""
    target = base.mac_per_pixel(channels)
    fits = [s for s in range(1, 65)
            if replace(base, n_experts=k, mgr_width=mgr_width, syn_width=s).mac_per_pixel(channels) <= target]
    return max(fits, default=1)


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "600")
    ap.set_defaults(qualities="1,3,5,7")
    ap.add_argument("--experts", type=int, default=2, help="K of the multi-expert fits [2].")
    ap.add_argument("--mgr-width", type=int, default=8, help="Hidden width of their manager [8].")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    rows = []
    for iters, preset, base in settings(args, d):
        multi = replace(base, n_experts=args.experts, mgr_width=args.mgr_width,
                        syn_width=equal_mac_width(base, args.experts, args.mgr_width, d.channels))
        for cfg in (base, multi):
            model = LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
            t0 = time.perf_counter()
            fit(model, target, preset.lam, LatentSchedule.for_preset(preset, iters), seed=args.seed)
            seconds = time.perf_counter() - t0
            for name, coded in coded_crops(model, cfg, names, signals, preset.lam):
                rows.append({"image": name, "size": args.size, "quality": preset.quality, "iters": iters,
                             "experts": cfg.n_experts, "syn_width": cfg.syn_width,
                             "mac_per_pixel": round(cfg.mac_per_pixel(d.channels), 1), **coded,
                             "fit_seconds": round(seconds, 1), "seed": args.seed, "commit": git_commit(),
                             "machine": machine_name("cpu"), "threads": torch.get_num_threads()})
                append_row(args.out, rows[-1])
    summarise(rows, args.experts)


def summarise(rows: list[dict], k: int) -> None:
    """Print, per crop and fit length, the BD-rate and BD-PSNR of K experts against one over the qualities."""
    print(f"| crop | iterations | BD-rate, K = {k} vs 1 | BD-PSNR |\n|---|---|---|---|")
    rates = []
    for name, iters in sorted({(r["image"], r["iters"]) for r in rows}):
        def curve(n: int) -> tuple[list[float], list[float]]:
            points = sorted((r["quality"], r["bpp"], r["psnr"]) for r in rows
                            if (r["image"], r["iters"], r["experts"]) == (name, iters, n))
            return [p[1] for p in points], [p[2] for p in points]

        one, many = curve(1), curve(k)
        if min(len(one[0]), len(many[0])) < 4:  # a BD measure needs four points per curve
            continue
        rates.append(bd_rate(*one, *many))
        print(f"| {name} | {iters} | {rates[-1]:+.1f}% | {bd_psnr(*one, *many):+.2f} dB |")
    if rates:
        print(f"| mean | | {np.nanmean(rates):+.1f}% | |")


if __name__ == "__main__":
    main()
