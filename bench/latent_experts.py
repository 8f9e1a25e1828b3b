"""K = 1 against K > 1 experts at equal multiply-adds per pixel, format 3, on image crops.

For each crop and lambda, fits one expert of width S1 and K experts of a width chosen so
the decoder's MAC per pixel (manager + one expert) is no larger, with everything else
equal, and reports rate, PSNR and the rate-distortion cost of the written streams.

    python bench/latent_experts.py ../shared/data/kodak --images 23 --size 256 --iters 600 --out bench/results/latent_experts_cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.fit import presets
from nxcodec.fit.latent_code import config_for
from nxcodec.signals import for_name


def equal_mac_width(base, k: int, mgr_width: int, channels: int) -> int:
    """The widest expert such that K experts with a manager cost no more MAC per pixel than ``base``."""
    target = base.mac_per_pixel(channels)
    best = 1
    for s in range(1, 65):
        cfg = base.__class__(**{**base.__dict__, "n_experts": k, "mgr_width": mgr_width, "syn_width": s})
        if cfg.mac_per_pixel(channels) <= target:
            best = s
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--images", default="23", help="Kodak numbers, comma-separated [23].")
    ap.add_argument("--size", type=int, default=256, help="Centre crop side [256].")
    ap.add_argument("--qualities", default="3,5", help="Presets whose lambda and sizes are used [3,5].")
    ap.add_argument("--experts", type=int, default=2)
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    commit = git_commit()  # the commit this run starts from
    image = for_name("image")
    rows = []
    for num in args.images.split(","):
        im = np.asarray(Image.open(args.src / f"kodim{int(num):02d}.png").convert("RGB"))
        h, w = im.shape[:2]
        crop = im[(h - args.size) // 2 : (h + args.size) // 2, (w - args.size) // 2 : (w + args.size) // 2].copy()
        sig = image.from_array(crop)
        for q in (int(v) for v in args.qualities.split(",")):
            base = config_for(presets.latent_preset(q), sig.descriptor)
            wide = equal_mac_width(base, args.experts, 8, 3)
            multi = base.__class__(**{**base.__dict__, "n_experts": args.experts, "mgr_width": 8, "syn_width": wide})
            for cfg in (base, multi):
                res = encode_signal(image, sig, EncodeOptions(quality=q, iters=args.iters, device="cpu", config=cfg,
                                                              format=6))
                lam = presets.latent_preset(q).lam
                mse01 = 10 ** (-res.metrics["psnr"] / 10)
                rows.append({"image": num, "quality": q, "experts": cfg.n_experts, "syn_width": cfg.syn_width,
                             "mac_per_pixel": cfg.mac_per_pixel(3), "bpp": res.rate, "psnr": res.metrics["psnr"],
                             "cost": mse01 + lam * res.rate})
                print(rows[-1], flush=True)
    summary = {"machine": machine_name("cpu"), "commit": commit, "iters": args.iters, "size": args.size,
               "rows": rows}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
