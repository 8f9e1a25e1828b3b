"""The shared results format: CompressAI's JSON per codec, a per-image CSV, and what a run ran on."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from nxcodec.io import write_bytes_atomic

# per-point fields -> CompressAI result keys
FIELDS = {"bpp": "bpp", "psnr": "psnr-rgb", "ms_ssim": "ms-ssim-rgb", "encode_seconds": "encoding_time",
          "decode_seconds": "decoding_time"}


def compressai_json(name: str, description: str, points: list[dict]) -> dict:
    """Means over the dataset per quality level, in CompressAI's layout (levels by ascending rate)."""
    by_level: dict[int, list[dict]] = defaultdict(list)
    for p in points:
        by_level[p["quality"]].append(p)
    levels = sorted(by_level, key=lambda q: np.mean([p["bpp"] for p in by_level[q]]))
    results: dict[str, list] = {"quality": levels}
    for field, key in FIELDS.items():
        results[key] = [float(np.mean([p[field] for p in by_level[q]])) for q in levels]
    results["images"] = [len(by_level[q]) for q in levels]
    return {"name": name, "description": description, "results": results}


def write_json(path: Path, data: dict) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=1) + "\n").encode(), force=True)


def write_csv(path: Path, points: list[dict]) -> None:
    """Every point of every codec on every image, one row each."""
    cols = ["image", "codec", "quality", "bytes", "bpp", "psnr", "ms_ssim", "encode_seconds", "decode_seconds", "device"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for p in sorted(points, key=lambda p: (p["image"], p["codec"], p["quality"])):
        w.writerow(p)
    write_bytes_atomic(path, buf.getvalue().encode(), force=True)


def load_curves(paths: list[Path]) -> list[dict]:
    """Result JSONs (CompressAI format) as ``{name, bpp, psnr, ...}``."""
    curves = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        res = data["results"]
        curves.append({"name": data["name"], "bpp": res["bpp"], "psnr": res.get("psnr-rgb", res.get("psnr")),
                       "source": data.get("source", ""), "published": data.get("published", False)})
    return curves


def machine_name(device: str) -> str:
    """The GPU's name, or the CPU model and thread count."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


@lru_cache(maxsize=None)
def git_commit() -> str:
    """The short commit of the source tree, with ``+dirty`` when its code has uncommitted changes.

    Changes under ``bench/results/`` (what runs write) do not count.
    Read once per process: a run records the commit it started from, even if the tree
    changes while it runs (benchmarks call this before measuring anything).
    ``NXCODEC_COMMIT``, where set, is taken instead: a device machine receives the working tree with a
    ``.git`` that may be older than it, so the caller names the commit it sent (with ``+dirty`` if need be).
    """
    if os.environ.get("NXCODEC_COMMIT"):
        return os.environ["NXCODEC_COMMIT"]
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here,
                              timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(exclude,top)bench/results"], capture_output=True, text=True, cwd=here, timeout=10,
                               check=False).stdout.strip()
        return (head + ("+dirty" if dirty else "")) if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def read_points(path: Path, key: tuple[str, ...]) -> dict[tuple, dict]:
    """The measured points of a resumable run's ``points.jsonl``, by the values of the ``key`` fields.

    A torn last line (a run killed mid-write) or a line without the key fields is skipped.
    """
    points: dict[tuple, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                p = json.loads(line)
                points[tuple(p[k] for k in key)] = p
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return points


def failure_lines(failures: list[dict], item: str, level: str, unit: str, rest: str = "") -> list[str]:
    """One sentence per point nxcodec could not code (``item`` at ``level``, with its ``error``), by level."""
    return [f"nxcodec could not code {p[item]} at {unit.format(p[level])} ({p['error']}){rest}."
            for p in sorted(failures, key=lambda p: (p[level], p[item]))]
