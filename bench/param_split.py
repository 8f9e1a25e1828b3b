"""How to split a parameter budget between experts and manager: measured, not copied.

Fits 256x256 crops of Kodak images with networks of the same parameter budget (the
quality preset's) but different numbers of experts and manager widths, and reports the
decoded PSNR and rate of each. The defaults in ``nxcodec/fit/presets.py`` come from this.

    python bench/param_split.py ../shared/data/kodak --out bench/results/param_split_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.fit import presets
from nxcodec.model import tensor_shapes
from nxcodec.signals import for_name
from nxcodec.fit.presets import IMAGE_SHAPE

CROPS = [("kodim01", 100, 200), ("kodim23", 100, 200), ("kodim13", 200, 300)]
VARIANTS = [(1, 0.5), (2, 0.5), (4, 0.25), (4, 0.5), (4, 1.0), (8, 0.5)]  # (experts, manager width / expert width)


def main() -> None:
    from dataclasses import replace

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kodak", type=Path)
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--crops", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    image = for_name("image")
    budget = presets.get(args.quality).params_per_sample * 256 * 256
    rows = []
    for k, ratio in VARIANTS:
        shape = replace(IMAGE_SHAPE, n_experts=k, mgr_ratio=ratio)
        cfg = shape.fit_budget(3, budget)
        results = []
        for name, y, x in CROPS[: args.crops]:
            array = np.asarray(Image.open(args.kodak / f"{name}.png").convert("RGB"))[y : y + 256, x : x + 256].copy()
            t0 = time.perf_counter()
            res = encode_signal(image, image.from_array(array), EncodeOptions(iters=args.iters, device="cpu", config=cfg))
            results.append({"crop": name, "bpp": res.rate, "psnr": res.metrics["psnr"], "float_psnr": res.float_metrics["psnr"],
                            "seconds": time.perf_counter() - t0})
        manager = sum(int(np.prod(s)) for n, s in tensor_shapes(cfg).items() if n.startswith("manager"))
        row = {"experts": k, "manager_ratio": ratio, "params": cfg.parameter_count(), "manager_params": int(manager),
               "expert_width": cfg.expert_width, "bpp": float(np.mean([r["bpp"] for r in results])),
               "psnr": float(np.mean([r["psnr"] for r in results])), "crops": results}
        rows.append(row)
        print(f"K={k} manager x{ratio}: {row['params']} params ({row['manager_params']} manager), "
              f"{row['bpp']:.4f} bpp, {row['psnr']:.2f} dB", flush=True)
    out = {"benchmark": "param_split", "quality": args.quality, "iters": args.iters, "commit": git_commit(),
           "machine": machine_name("cpu"), "variants": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print("\n| experts | manager width / expert width | params (manager) | bpp | PSNR dB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['experts']} | {r['manager_ratio']} | {r['params']} ({r['manager_params']}) | {r['bpp']:.4f} | {r['psnr']:.2f} |")


if __name__ == "__main__":
    main()
