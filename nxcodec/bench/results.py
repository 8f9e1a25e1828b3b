"""The shared results format: CompressAI's JSON per codec, plus a per-image CSV."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

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
