"""Files per minute of ``nxcodec batch`` on one device: one file at a time against files fitted together.

Cuts ``--files`` crops of ``--size`` pixels from the images of SRC (a dataset of small
real images), then compresses them twice with the batch machinery (manifest, atomic
outputs and all): once one file per fit (``--group 1``) and once ``--group`` files per
fit, where same-sized files share every optimizer step. The one-at-a-time pass runs on
the first ``--single-files`` crops only (it is the slow one); rates are per minute, so
the two are comparable. A short warm-up fit runs first, so CUDA start-up is not timed.

    python bench/batch_throughput.py ../shared/data/kodak --out bench/results/batch_throughput_gpu.json --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nxcodec.batch import EncodeSettings, run_batch
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.signals import for_name


def make_crops(src: Path, dst: Path, n: int, size: int) -> None:
    """``n`` crops of ``size`` x ``size`` pixels, taken in turn from the images of ``src``."""
    paths = sorted(p for p in src.iterdir() if p.suffix.lower() == ".png")
    rng = np.random.default_rng(0)
    dst.mkdir(parents=True)
    for i in range(n):
        im = np.asarray(Image.open(paths[i % len(paths)]).convert("RGB"))
        y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
        Image.fromarray(im[y : y + size, x : x + size]).save(dst / f"crop{i:03d}.png")


def measure(src: Path, out: Path, group: int, settings: EncodeSettings, device: str) -> dict:
    settings = EncodeSettings(settings.quality, settings.rates, settings.iters, settings.seed, group)
    t0 = time.perf_counter()
    summary = run_batch("encode", src, out, settings, devices=[device])
    seconds = time.perf_counter() - t0
    ok = [r for r in summary.records if r["status"] == "ok"]
    return {"group": group, "files": summary.total, "ok": summary.ok, "failed": summary.failed, "seconds": seconds,
            "files_per_minute": 60 * summary.ok / seconds,
            "mean_psnr": float(np.mean([r["psnr"] for r in ok])) if ok else None,
            "mean_bpp": float(np.mean([r["rate"] for r in ok])) if ok else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="folder of PNG images to cut crops from")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--files", type=int, default=32, help="crops compressed together")
    ap.add_argument("--single-files", type=int, default=8, help="crops compressed one at a time")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--iters", type=int, default=None, help="fitting iterations (default: the preset's)")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    settings = EncodeSettings(quality=args.quality, iters=args.iters)
    image = for_name("image")
    warm = np.asarray(Image.open(sorted(args.src.glob("*.png"))[0]).convert("RGB"))[:32, :32].copy()
    encode_signal(image, image.from_array(warm), EncodeOptions(iters=50, device=args.device))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_crops(args.src, tmp / "many", args.files, args.size)
        make_crops(args.src, tmp / "few", args.single_files, args.size)
        single = measure(tmp / "few", tmp / "out1", 1, settings, args.device)
        together = measure(tmp / "many", tmp / "outN", args.files, settings, args.device)
    result = {
        "machine": machine_name(args.device), "device": args.device, "commit": git_commit(),
        "crop": f"{args.size}x{args.size}", "quality": args.quality, "iters": args.iters or "preset",
        "one_at_a_time": single, "together": together,
        "speedup": together["files_per_minute"] / single["files_per_minute"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| mode | files | files/min | mean PSNR dB | mean bpp |")
    print("|---|---|---|---|---|")
    for name, r in (("one at a time", single), (f"{args.files} together", together)):
        print(f"| {name} | {r['ok']} | {r['files_per_minute']:.1f} | {r['mean_psnr']:.2f} | {r['mean_bpp']:.3f} |")
    print(f"speed-up {result['speedup']:.1f}x on {result['machine']}, commit {result['commit']}")


if __name__ == "__main__":
    main()
