"""Images per second that ``NxcDataset`` feeds a PyTorch DataLoader, decoding on this machine's CPU.

Compresses the first ``--images`` images of SRC into ``--tree`` with ``nxcodec batch``
(skipped when the tree already holds them; short fits by default, since the decode time
depends on the image size and the network, not on how long it was fitted), then reads
the whole dataset ``--passes`` times through a DataLoader for each ``--workers`` count,
worker start-up included, and reports images and megapixels per second.

    python bench/dataset_throughput.py ../shared/data/kodak --tree /tmp/kodak_nxc --out bench/results/dataset_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from nxcodec.batch import MANIFEST, EncodeSettings, run_batch
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.data import NxcDataset


def compress(src: Path, tree: Path, n: int, quality: int, iters: int) -> None:
    """Batch-compress the first ``n`` PNGs of SRC (by name) into ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(src.glob("*.png"))[:n]:
            os.symlink(path.resolve(), Path(tmp) / path.name)
        run_batch("encode", Path(tmp), tree, EncodeSettings(quality=quality, iters=iters), resume=True, device="cpu")


def measure(ds: NxcDataset, workers: int, passes: int) -> dict:
    """Read every item ``passes`` times; one DataLoader, so workers start once."""
    loader = DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    t0 = time.perf_counter()
    pixels = 0
    for _ in range(passes):
        for item in loader:
            pixels += item.shape[0] * item.shape[1]
    seconds = time.perf_counter() - t0
    n = passes * len(ds)
    return {"workers": workers, "images": n, "seconds": seconds, "images_per_second": n / seconds,
            "megapixels_per_second": pixels / seconds / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="folder of PNG images")
    ap.add_argument("--tree", type=Path, required=True, help="compressed tree (made if missing, reused if present)")
    ap.add_argument("--out", type=Path, help="JSON file to write")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50, help="fitting iterations when compressing")
    ap.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to measure")
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()

    if not (args.tree / MANIFEST).exists() or len(NxcDataset(args.tree)) < args.images:
        compress(args.src, args.tree, args.images, args.quality, args.iters)
    ds = NxcDataset(args.tree)
    runs = [measure(ds, int(w), args.passes) for w in args.workers.split(",")]
    result = {"machine": machine_name("cpu"), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "load_average_1min": os.getloadavg()[0], "commit": git_commit(), "tree": str(args.tree), "images": len(ds), "quality": args.quality, "runs": runs}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| DataLoader workers | images | images/s | megapixels/s |")
    print("|---|---|---|---|")
    for r in runs:
        print(f"| {r['workers']} | {r['images']} | {r['images_per_second']:.2f} | {r['megapixels_per_second']:.2f} |")
    print(f"{len(ds)} images of {args.tree} at quality {args.quality} on {result['machine']} "
          f"(load average {result['load_average_1min']:.1f}), commit {result['commit']}")


if __name__ == "__main__":
    main()
