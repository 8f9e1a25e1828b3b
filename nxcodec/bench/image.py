"""The image benchmark: nxcodec at several qualities against JPEG, WebP and AVIF, in one run.

Every (image, codec, quality) point is appended to ``OUT/points.jsonl`` as soon as it is
measured, so an interrupted run continues where it stopped. At the end the points are
summarised into one CompressAI-format JSON per codec, a per-image CSV, a BD-rate table and, per
quality, a table of every image against each baseline at the same size (``OUT/equal_size.md``).
For the first few images, each quality also gets a side-by-side sheet of the codecs at equal
bytes (``OUT/sheet_<image>_q<quality>.png``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, features

from nxcodec.baselines import available_codecs, pillow_point
from nxcodec.bench.bdrate import bd_psnr, bd_rate, psnr_at_rate
from nxcodec.bench.msssim import ms_ssim_rgb
from nxcodec.bench.results import (
    compressai_json,
    failure_lines,
    git_commit,
    machine_name,
    write_csv,
    write_json,
)
from nxcodec.bench.runner import (
    PointStore,
    default_workers,
    encode_and_decode,
    grouped_rounds,
    on_gpu,
    run_points,
)
from nxcodec.codec import EncodeOptions, resolve_device
from nxcodec.io import write_bytes_atomic
from nxcodec.sheet import equal_bytes_sheet
from nxcodec.signals import for_name

NXC_QUALITIES = (1, 3, 5, 7, 9)
BASELINE_QUALITIES = {
    "jpeg": (2, 5, 10, 15, 20, 30, 45, 60, 75, 90),
    "webp": (2, 5, 10, 20, 35, 50, 75, 90),
    "avif": (5, 15, 25, 35, 50, 65, 80),
}
DESCRIPTIONS = {
    "nxcodec": "nxcodec (format 3: latent grids, fixed-point context model, Neural-Experts synthesis)",
    "jpeg": "JPEG, Pillow (libjpeg-turbo, 4:2:0)",
    "webp": "WebP, Pillow (libwebp, method 6)",
    "avif": "AVIF, Pillow (speed 4)",
}


@dataclass
class BenchConfig:
    """What to run."""

    src: Path
    out: Path
    qualities: tuple[int, ...] = NXC_QUALITIES
    iters: int | None = None
    device: str = "auto"
    max_images: int | None = None
    downscale: int = 1
    baselines: tuple[str, ...] = ("jpeg", "webp", "avif")
    group: int | None = None  # images fitted side by side (default: up to 32 on a GPU, one on a CPU)
    workers: int | None = None  # processes measuring the baselines (default: all cores but one on a GPU machine)
    sheets: int = 2  # the first images (by name) that get a side-by-side sheet at every quality

    @classmethod
    def quick(cls, src: Path, out: Path, device: str = "auto") -> "BenchConfig":
        """A CPU-sized run: 4 images at half their size, 4 qualities, short fits fitted together (under an hour
        on 2 cores)."""
        return cls(src, out, qualities=(1, 3, 5, 7), iters=500, device=device, max_images=4, downscale=2, group=4)


def list_images(cfg: BenchConfig) -> list[Path]:
    image = for_name("image")
    paths = sorted(p for p in cfg.src.iterdir() if p.suffix.lower() in image.extensions)
    return paths[: cfg.max_images] if cfg.max_images else paths


def load_rgb(path: Path, downscale: int) -> Image.Image:
    im = Image.open(path).convert("RGB")
    if downscale > 1:
        im = im.resize((im.width // downscale, im.height // downscale), Image.LANCZOS)
    return im


def _nxcodec_points(names: list[str], images: list[Image.Image], quality: int, cfg: BenchConfig) -> list[dict]:
    """Encode several images together at one quality; decode each on the fitting device and measure it."""
    mod = for_name("image")
    arrays = [np.asarray(im) for im in images]
    opts = EncodeOptions(quality=quality, iters=cfg.iters, device=cfg.device, coding_workers=None)
    device = str(resolve_device(cfg.device))
    points = []
    coded = encode_and_decode(mod, [mod.from_array(a) for a in arrays], opts, device)
    with_sheet = {p.stem for p in list_images(cfg)[: cfg.sheets]}
    baselines = [b for b in cfg.baselines if b in available_codecs()]
    for name, image, array, (res, decoded, decode_seconds) in zip(names, images, arrays, coded):
        if name in with_sheet:
            equal_bytes_sheet(cfg.out / f"sheet_{name}_q{quality}.png", image, len(res.data), decoded,
                              res.metrics["psnr"], baselines)
        points.append({
            "image": name, "codec": "nxcodec", "quality": quality, "bytes": len(res.data), "bpp": res.rate,
            "psnr": res.metrics["psnr"], "float_psnr": res.float_metrics["psnr"],
            "ms_ssim": ms_ssim_rgb(array, decoded, device), "encode_seconds": res.encode_seconds,
            "decode_seconds": decode_seconds, "device": res.device, "fitted_together": len(images),
            "commit": git_commit(),
        })
    return points


def _baseline_point(path: Path, downscale: int, codec: str, quality: int) -> dict:
    """One baseline point (a top-level function so that worker processes can run it)."""
    name, im = path.stem, load_rgb(path, downscale)
    p = pillow_point(im, codec, quality)
    return {"image": name, "codec": codec, "quality": quality, "bytes": p.n_bytes, "bpp": p.bpp, "psnr": p.psnr,
            "ms_ssim": ms_ssim_rgb(np.asarray(im), p.decoded), "encode_seconds": p.encode_seconds,
            "decode_seconds": p.decode_seconds, "device": "cpu"}


def _group_size(cfg: BenchConfig) -> int:
    return cfg.group if cfg.group is not None else (32 if on_gpu(cfg.device) else 1)


def run(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Measure every missing point, then write the summaries; returns the BD table as a dict.

    Baseline points run in worker processes while nxcodec fits ``group`` images side by
    side per quality (:func:`nxcodec.bench.runner.run_points`).
    """
    git_commit()  # the commit this run starts from, recorded in every point and summary
    store = PointStore(cfg.out / "points.jsonl", ("image", "codec", "quality"))
    baselines = [b for b in cfg.baselines if b != "avif" or features.check("avif")]
    paths = list_images(cfg)
    jobs = [(p, cfg.downscale, b, q) for p in paths for b in baselines for q in BASELINE_QUALITIES[b]
            if (p.stem, b, q) not in store]

    rounds = grouped_rounds(cfg.qualities, paths, _group_size(cfg), lambda p, q: (p.stem, "nxcodec", q) in store,
                            lambda chunk, q: _nxcodec_points([p.stem for p in chunk],
                                                             [load_rgb(p, cfg.downscale) for p in chunk], q, cfg),
                            lambda p, q: {"image": p.stem, "codec": "nxcodec", "quality": q})

    def report(point: dict) -> None:
        log(f"{point['image']} nxcodec q{point['quality']}: {point['bpp']:.4f} bpp, {point['psnr']:.2f} dB, "
            f"encode {point['encode_seconds']:.1f} s/image on {point['device']}")

    run_points(store, _baseline_point, jobs, rounds, default_workers(cfg.device, cfg.workers),
               after_round=lambda: summarise(cfg, store.values(), baselines, store.failures()), log=report)
    return summarise(cfg, store.values(), baselines, store.failures())


def summarise(cfg: BenchConfig, points: list[dict], baselines: list[str], failures: list[dict] = ()) -> dict:
    """Per-codec JSONs, the per-image CSV, the BD-rate table and the run's metadata; ``failures`` (points
    nxcodec could not code) are listed under the table, and the means of their qualities leave them out."""
    names = {p.stem for p in list_images(cfg)}
    points = [p for p in points if p["image"] in names]
    failures = [p for p in failures if p["image"] in names]
    curves = {}
    for codec in ["nxcodec", *baselines]:
        mine = [p for p in points if p["codec"] == codec]
        if mine:
            curves[codec] = compressai_json(codec, DESCRIPTIONS[codec], mine)
            write_json(cfg.out / f"{codec}.json", curves[codec])
    write_csv(cfg.out / "per_image.csv", points)
    devices = sorted({p["device"] for p in points if p["codec"] == "nxcodec"})
    meta = {"machine": machine_name(cfg.device), "nxcodec_devices": devices, "commit": git_commit(),
            "nxcodec_point_commits": sorted({p.get("commit", "not recorded") for p in points if p["codec"] == "nxcodec"}),
            "torch": torch.__version__, "pillow": Image.__version__, "images": sorted(names),
            "downscale": cfg.downscale, "iters": cfg.iters, "qualities": list(cfg.qualities)}
    write_json(cfg.out / "meta.json", meta)
    table = {}
    lines = ["| against | BD-rate (nxcodec vs it) | BD-PSNR |", "|---|---|---|"]
    ours = curves.get("nxcodec")
    for codec in baselines:
        if ours is None or codec not in curves or len(ours["results"]["bpp"]) < 4:
            continue
        ref = curves[codec]["results"]
        args = (ref["bpp"], ref["psnr-rgb"], ours["results"]["bpp"], ours["results"]["psnr-rgb"])
        table[codec] = {"bd_rate_percent": bd_rate(*args), "bd_psnr_db": bd_psnr(*args)}
        lines.append(f"| {codec} | {table[codec]['bd_rate_percent']:+.1f}% | {table[codec]['bd_psnr_db']:+.2f} dB |")
    lines.append("")
    lines += failure_lines(failures, "image", "quality", "quality {}", "; the means at that quality are over the other "
                           "images") + ([""] if failures else [])
    fitted = meta["nxcodec_point_commits"]  # a resumed or re-summarised run may differ from the summarising tree
    commit = (f"commit {meta['commit']}" if fitted in ([], [meta["commit"]])
              else f"nxcodec fitted at commit {', '.join(fitted)}, summarised at {meta['commit']}")
    lines.append(f"Measured on {meta['machine']} (nxcodec on {', '.join(devices) or '-'}), {commit}, "
                 f"{len(names)} images" + (f" downscaled by {cfg.downscale}" if cfg.downscale > 1 else "") + ".")
    write_bytes_atomic(cfg.out / "bdrate.md", ("\n".join(lines) + "\n").encode(), force=True)
    write_json(cfg.out / "bdrate.json", table)
    equal = equal_size_lines(points, [b for b in baselines if b in curves]) + [lines[-1]]
    write_bytes_atomic(cfg.out / "equal_size.md", ("\n".join(equal) + "\n").encode(), force=True)
    return table


def equal_size_lines(points: list[dict], baselines: list[str]) -> list[str]:
    """Per nxcodec quality, a table of every image: nxcodec's rate and PSNR, and that PSNR minus each baseline's
    at the same rate (:func:`psnr_at_rate` over the baseline's points of that image; "-" outside their range),
    then on how many images nxcodec is ahead of each."""
    ours = [p for p in points if p["codec"] == "nxcodec"]
    if not baselines:
        return ["No baseline was measured: nothing to compare at equal size.", ""]
    lines = []
    for quality in sorted({p["quality"] for p in ours}):
        lines += [f"nxcodec quality {quality}: its PSNR minus each codec's at the same size (dB; the codec's points "
                  "of the image interpolated in log rate)", "",
                  "| image | bpp | PSNR dB | " + " | ".join(baselines) + " |",
                  "|---|---|---|" + "---|" * len(baselines)]
        ahead: dict[str, list[bool]] = {b: [] for b in baselines}
        for p in sorted((p for p in ours if p["quality"] == quality), key=lambda p: p["image"]):
            cells = []
            for codec in baselines:
                theirs = [x for x in points if x["codec"] == codec and x["image"] == p["image"]]
                at = psnr_at_rate([x["bpp"] for x in theirs], [x["psnr"] for x in theirs], p["bpp"]) if theirs else None
                cells.append("-" if at is None else f"{p['psnr'] - at:+.2f}")
                if at is not None:
                    ahead[codec].append(p["psnr"] > at)
            lines.append(f"| {p['image']} | {p['bpp']:.3f} | {p['psnr']:.2f} | " + " | ".join(cells) + " |")
        lines += ["", "Ahead on " + ", ".join(f"{sum(v)} of {len(v)} images against {b}" for b, v in ahead.items())
                  + " (the images within its range).", ""]
    return lines
