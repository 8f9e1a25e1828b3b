"""Experts or not, on full-size images: K = 1, 2, 4 at the same parameter budget.

Encodes one Kodak image at full resolution with the quality preset's parameter budget
spent on 1, 2 or 4 experts (manager width half the expert width), and prints the rate,
decoded PSNR and encode time of each. With ``bench/param_split.py`` (256x256 crops) this
is the measurement behind the number of experts ``presets.image_network_shape`` picks.

    python bench/experts_count.py ../shared/data/kodak/kodim04.png --experts 1,2,4 --out bench/results/experts_count_kodim04_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.fit import presets
from nxcodec.signals import for_name
from nxcodec.fit.presets import IMAGE_SHAPE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", type=Path)
    ap.add_argument("--experts", default="1,2,4")
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    image = for_name("image")
    signal = image.read(args.image)
    n = signal.data.shape[0] * signal.data.shape[1]
    preset = presets.get(args.quality)
    rows = []
    for k in (int(v) for v in args.experts.split(",")):
        cfg = replace(IMAGE_SHAPE, n_experts=k).fit_budget(signal.data.shape[2], preset.params_per_sample * n)
        t0 = time.perf_counter()
        res = encode_signal(image, signal, EncodeOptions(device="cpu", config=cfg, iters=preset.iters))
        rows.append({"experts": k, "params": cfg.parameter_count(), "bpp": res.rate, "psnr": res.metrics["psnr"],
                     "float_psnr": res.float_metrics["psnr"], "seconds": time.perf_counter() - t0})
        print(f"K={k}: {cfg.parameter_count()} params, {res.rate:.4f} bpp, {res.metrics['psnr']:.2f} dB, "
              f"{rows[-1]['seconds']:.0f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "experts_count", "image": args.image.name, "quality": args.quality,
                                    "commit": git_commit(), "machine": machine_name("cpu"), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
