"""nxcodec at one quality against JPEG (Pillow) at the same rate, on Kodak images.

For every image: nxcodec's bpp (whole file), decoded PSNR, float PSNR, encode and decode
seconds and device; and JPEG's PSNR at nxcodec's bpp, interpolated (linearly in bpp)
between the two Pillow qualities that bracket it, measured in the same run. Writes a
JSON with every number and the machine, and prints a markdown table.

    python bench/kodak_vs_jpeg.py ../shared/data/kodak --images 01,04,13,23 --out bench/results/kodak_q5_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nxcodec.baselines import pillow_point
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, decode_stream, encode_signal
from nxcodec.signals import for_name


def jpeg_psnr_at(image: Image.Image, bpp: float) -> tuple[float, str, list[dict]]:
    """JPEG's PSNR at ``bpp``, interpolated in a quality sweep, and how it was obtained.

    Below JPEG's smallest file (quality 1) the PSNR of that smallest file is used: JPEG
    then gets more bits than nxcodec, which only flatters JPEG.
    """
    sweep = [pillow_point(image, "jpeg", q) for q in range(1, 96)]
    pts = sorted((p.bpp, p.psnr) for p in sweep)
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    if bpp < xs[0]:
        value, how = float(ys[0]), f"smallest JPEG, {xs[0]:.3f} bpp"
    else:
        value, how = float(np.interp(bpp, xs, ys)), "interpolated"
    return value, how, [{"quality": p.quality, "bpp": p.bpp, "psnr": p.psnr} for p in sweep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kodak", type=Path)
    ap.add_argument("--images", default="all", help="comma-separated numbers (01,23) or 'all'")
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    names = [f"kodim{i:02d}" for i in range(1, 25)] if args.images == "all" else [f"kodim{n}" for n in args.images.split(",")]
    image_mod = for_name("image")
    rows = []
    for name in names:
        path = args.kodak / f"{name}.png"
        signal = image_mod.read(path)
        res = encode_signal(image_mod, signal, EncodeOptions(quality=args.quality, iters=args.iters, device=args.device))
        t0 = time.perf_counter()
        decode_stream(res.data, device="cpu")
        decode_seconds = time.perf_counter() - t0
        jpeg, how, sweep = jpeg_psnr_at(Image.open(path).convert("RGB"), res.rate)
        rows.append({
            "image": name, "bytes": len(res.data), "bpp": res.rate, "psnr": res.metrics["psnr"],
            "float_psnr": res.float_metrics["psnr"], "encode_seconds": res.encode_seconds,
            "decode_seconds_cpu": decode_seconds, "device": res.device, "params": res.n_params,
            "jpeg_psnr_same_bpp": jpeg, "jpeg_how": how, "jpeg_sweep": sweep,
        })
        print(f"{name}: {res.rate:.4f} bpp  {res.metrics['psnr']:.2f} dB (float {res.float_metrics['psnr']:.2f})  "
              f"JPEG {jpeg:.2f} dB ({how})  enc {res.encode_seconds:.1f} s  dec {decode_seconds:.3f} s", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "benchmark": "kodak_vs_jpeg", "quality": args.quality, "iters": args.iters, "commit": git_commit(),
            "machine": machine_name(args.device), "torch": torch.__version__, "pillow": Image.__version__,
            "mean": {k: float(np.nanmean([r[k] for r in rows])) for k in
                     ("bpp", "psnr", "float_psnr", "jpeg_psnr_same_bpp", "encode_seconds", "decode_seconds_cpu")},
            "images": rows,
        }
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    m = summary["mean"]
    print(f"\nmachine: {summary['machine']}, commit {summary['commit']}, quality {args.quality}\n")
    print("| image | bpp | PSNR dB | float PSNR dB | JPEG PSNR at same bpp | encode s | decode s (CPU) | device |")
    print("|---|---|---|---|---|---|---|---|")
    mark = {"interpolated": ""}
    for r in rows:
        print(f"| {r['image']} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['float_psnr']:.2f} | {r['jpeg_psnr_same_bpp']:.2f}{mark.get(r['jpeg_how'], '*')} | "
              f"{r['encode_seconds']:.1f} | {r['decode_seconds_cpu']:.3f} | {r['device']} |")
    print(f"| **mean** | {m['bpp']:.4f} | {m['psnr']:.2f} | {m['float_psnr']:.2f} | {m['jpeg_psnr_same_bpp']:.2f} | "
          f"{m['encode_seconds']:.1f} | {m['decode_seconds_cpu']:.3f} | |")
    if any(r["jpeg_how"] != "interpolated" for r in rows):
        print("\n\\* below JPEG's smallest file: JPEG's PSNR at quality 1, which uses more bits than nxcodec")


if __name__ == "__main__":
    main()
