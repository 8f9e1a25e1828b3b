"""The shape benchmark: nxcodec at several qualities against Draco and Draco after decimation, in one run.

What a user would do instead of nxcodec is Draco (DracoPy) at some quantization, and for
small budgets quadric decimation (fast-simplification) first: the lower envelope of all
those points (bytes against Chamfer) is the baseline. Every point is appended to
``OUT/points.jsonl`` as soon as it is measured, so an interrupted run continues. All
metrics come from :func:`nxcodec.signals.sdf.shape_metrics` with the same settings for
every codec; the Chamfer noise floor (two independent samplings of the same pair) is
measured per mesh and reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nxcodec.bench.results import failure_lines, git_commit, machine_name, write_json
from nxcodec.bench.runner import (
    PointStore,
    default_workers,
    encode_and_decode,
    grouped_rounds,
    on_gpu,
    run_points,
)
from nxcodec.codec import EncodeOptions
from nxcodec.errors import InputError
from nxcodec.io import write_bytes_atomic
from nxcodec.signals import for_name
from nxcodec.signals.sdf import Mesh, MetricSettings, SurfaceIndex, shape_metrics

NXC_QUALITIES = (1, 3, 5, 7, 9)
DRACO_BITS = (7, 8, 9, 10, 11, 12, 14)
DECIMATE_KEEP = (0.3, 0.1, 0.03, 0.01, 0.004)  # fractions of the faces kept before Draco
DECIMATE_BITS = (8, 9, 10, 11)
DRACO_LEVEL = 10
METRICS = MetricSettings()  # how every codec's points are measured (the floor uses the next seed)
FIELDS = ("bytes", "chamfer_l1", "iou", "normal_consistency", "fscore", "encode_seconds", "decode_seconds")
DESCRIPTIONS = {
    "nxcodec": "nxcodec (Neural-Experts SDF on 3-D latent grids and an occupancy map, format 8; marching cubes at 256^3)",
    "draco": f"Draco (DracoPy, compression level {DRACO_LEVEL}) over its quantization bits",
    "draco_decimated": "Draco after quadric decimation (fast-simplification) to a fraction of the faces",
}


@dataclass
class ShapeBenchConfig:
    """What to run."""

    src: Path
    out: Path
    qualities: tuple[int, ...] = NXC_QUALITIES
    iters: int | None = None
    device: str = "auto"
    max_meshes: int | None = None
    decimate_keep: tuple[float, ...] = DECIMATE_KEEP
    decimate_bits: tuple[int, ...] = DECIMATE_BITS
    group: int | None = None  # meshes fitted side by side (default: all on a GPU, one on a CPU)
    workers: int | None = None  # processes measuring the baselines (default: all cores but one on a GPU machine)

    @classmethod
    def quick(cls, src: Path, out: Path, device: str = "auto") -> "ShapeBenchConfig":
        """A CPU-sized run: 4 qualities (about 2-16 KB; widest spread first) with 400-iteration fits, a thinner Draco grid."""
        return cls(src, out, qualities=(1, 5, 8, 3), iters=400, device=device, decimate_bits=(8, 10))


def list_meshes(cfg: ShapeBenchConfig) -> list[Path]:
    shape = for_name("shape")
    paths = sorted(p for p in cfg.src.iterdir() if p.suffix.lower() in shape.extensions)
    return paths[: cfg.max_meshes] if cfg.max_meshes else paths


@lru_cache(maxsize=4)
def _original(path: Path) -> tuple[Mesh, SurfaceIndex]:
    """The mesh and its surface index, made once per process (baseline workers reuse them)."""
    mesh = for_name("shape").read(path).data
    return mesh, mesh.surface_index()


def _baseline_point(path: Path, bits: int, keep: float) -> dict:
    """One Draco point (after decimation to ``keep`` of the faces when under 1), or the floor when ``bits`` is 0.

    A top-level function, so that worker processes can run it.
    """
    mesh, index = _original(path)
    if bits == 0:
        return _floor_point(path.stem, mesh, index)
    return _draco_point(path.stem, mesh, index, bits, keep)


def _draco_point(name: str, mesh: Mesh, index: SurfaceIndex, bits: int, keep: float) -> dict:
    import DracoPy
    import fast_simplification

    t0 = time.perf_counter()
    v, f = mesh.vertices, mesh.faces
    if keep < 1:
        v, f = fast_simplification.simplify(v.astype(np.float32), f.astype(np.int32), target_reduction=1 - keep)
    data = DracoPy.encode(np.asarray(v, dtype=np.float32), np.asarray(f, dtype=np.uint32), quantization_bits=bits,
                          compression_level=DRACO_LEVEL)
    encode_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    dec = DracoPy.decode(data)
    decode_seconds = time.perf_counter() - t0
    decoded = Mesh(np.asarray(dec.points, dtype=np.float64), np.asarray(dec.faces, dtype=np.int64).reshape(-1, 3))
    m = shape_metrics(mesh, decoded, METRICS, index)
    codec = "draco" if keep == 1 else "draco_decimated"
    return {"mesh": name, "codec": codec, "quality": f"q{bits}_keep{keep:g}", "bits": bits, "keep": keep,
            "bytes": len(data), "faces": int(len(decoded.faces)), **m, "encode_seconds": encode_seconds,
            "decode_seconds": decode_seconds, "device": "cpu"}


def _nxcodec_points(paths: list[Path], quality: int, cfg: ShapeBenchConfig) -> list[dict]:
    """Fit the meshes together at one quality (one stack on a GPU); decode each on the CPU and measure it."""
    shape = for_name("shape")
    signals = [shape.read(p) for p in paths]
    opts = EncodeOptions(quality=quality, iters=cfg.iters, device=cfg.device, coding_workers=None)
    points = []
    for path, (res, decoded, decode_seconds) in zip(paths, encode_and_decode(shape, signals, opts, "cpu")):
        points.append({"mesh": path.stem, "codec": "nxcodec", "quality": quality, "bytes": len(res.data),
                       "faces": int(len(decoded.faces)), **res.metrics,
                       **{f"float_{k}": v for k, v in res.float_metrics.items() if k in ("chamfer_l1", "iou", "sdf_l1")},
                       "format": res.data[4],
                       "n_params": res.n_params, "encode_seconds": res.encode_seconds,
                       "decode_seconds": decode_seconds, "device": res.device, "fitted_together": len(paths)})
    return points


def _floor_point(name: str, mesh: Mesh, index: SurfaceIndex) -> dict:
    """The original against itself with fresh samples: what the metrics read for a perfect codec."""
    m = shape_metrics(mesh, mesh, replace(METRICS, seed=METRICS.seed + 1), index)
    return {"mesh": name, "codec": "floor", "quality": 0, "bytes": 0, **m}


def run(cfg: ShapeBenchConfig, log: Callable[[str], None] = print) -> dict:
    """Measure every missing point, then write the summaries; returns the equal-Chamfer table.

    Qualities run in turn, each fitting every mesh together (on a GPU; one at a time on a
    CPU) while the floor and Draco points run in worker processes
    (:func:`nxcodec.bench.runner.run_points`).
    """
    store = PointStore(cfg.out / "points.jsonl", ("mesh", "codec", "quality"))
    meshes = list_meshes(cfg)
    grid = [(0, 0.0)] + [(bits, 1.0) for bits in DRACO_BITS] + [(b, k) for k in cfg.decimate_keep for b in cfg.decimate_bits]
    jobs = [(p, bits, keep) for p in meshes for bits, keep in grid if (p.stem, *_baseline_key(bits, keep)) not in store]
    size = cfg.group or (len(meshes) if on_gpu(cfg.device) else 1)
    rounds = grouped_rounds(cfg.qualities, meshes, size, lambda p, q: (p.stem, "nxcodec", q) in store,
                            lambda chunk, q: _nxcodec_points(chunk, q, cfg),
                            lambda p, q: {"mesh": p.stem, "codec": "nxcodec", "quality": q})

    def report(p: dict) -> None:
        log(f"{p['mesh']} nxcodec q{p['quality']}: {p['bytes']} bytes, Chamfer-L1 {p['chamfer_l1']:.5f}, "
            f"IoU {p['iou']:.4f}, encode {p['encode_seconds']:.1f} s/mesh on {p['device']} "
            f"({p['fitted_together']} together)")

    run_points(store, _baseline_point, jobs, rounds, default_workers(cfg.device, cfg.workers),
               after_round=lambda: summarise(cfg, store.values(), store.failures()), log=report)
    return summarise(cfg, store.values(), store.failures())


def _baseline_key(bits: int, keep: float) -> tuple[str, object]:
    if bits == 0:
        return "floor", 0
    return ("draco" if keep == 1 else "draco_decimated"), f"q{bits}_keep{keep:g}"


def envelope(points: list[dict]) -> list[tuple[int, float]]:
    """The lower envelope (Pareto front) of (bytes, Chamfer): each point beats every smaller one."""
    front: list[tuple[int, float]] = []
    for p in sorted(points, key=lambda p: (p["bytes"], p["chamfer_l1"])):
        if not front or p["chamfer_l1"] < front[-1][1]:
            front.append((p["bytes"], p["chamfer_l1"]))
    return front


def bytes_at_chamfer(front: list[tuple[int, float]], chamfer: float) -> float:
    """Bytes the envelope needs for ``chamfer`` (log-log interpolation); NaN outside its range."""
    for (b0, c0), (b1, c1) in zip(front, front[1:]):
        if c1 <= chamfer <= c0:
            t = (math.log(chamfer) - math.log(c0)) / (math.log(c1) - math.log(c0))
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return float("nan")


def _curve(codec: str, points: list[dict]) -> dict:
    """Means over meshes per level, in CompressAI's layout (levels by ascending bytes)."""
    levels: dict = {}
    for p in points:
        levels.setdefault(p["quality"], []).append(p)
    order = sorted(levels, key=lambda q: np.mean([p["bytes"] for p in levels[q]]))
    results: dict = {"quality": order}
    for f in FIELDS:
        results[f] = [float(np.mean([p[f] for p in levels[q]])) for q in order]
    results["encoding_time"], results["decoding_time"] = results.pop("encode_seconds"), results.pop("decode_seconds")
    results["meshes"] = [len(levels[q]) for q in order]
    return {"name": codec, "description": DESCRIPTIONS[codec], "results": results}


def summarise(cfg: ShapeBenchConfig, points: list[dict], failures: list[dict] = ()) -> dict:
    """Per-codec JSONs, the per-mesh CSV, the equal-Chamfer table, the plot and the run's metadata; ``failures``
    (points nxcodec could not code) are listed under the table."""
    names = [p.stem for p in list_meshes(cfg)]
    points = [p for p in points if p["mesh"] in names]
    failures = [p for p in failures if p["mesh"] in names]
    for codec in ("nxcodec", "draco", "draco_decimated"):
        mine = [p for p in points if p["codec"] == codec]
        if mine:
            write_json(cfg.out / f"{codec}.json", _curve(codec, mine))
    cols = ["mesh", "codec", "quality", "bytes", "chamfer_l1", "chamfer_l1_stderr", "iou", "normal_consistency",
            "fscore", "faces", "encode_seconds", "decode_seconds", "device"]
    rows = [",".join(cols)] + [",".join(str(p.get(c, "")) for c in cols)
                              for p in sorted(points, key=lambda p: (p["mesh"], p["codec"], p["bytes"]))]
    write_bytes_atomic(cfg.out / "per_mesh.csv", ("\n".join(rows) + "\n").encode(), force=True)
    settings = METRICS
    meta = {"machine": machine_name(cfg.device), "commit": git_commit(), "torch": torch.__version__,
            "meshes": names, "iters": cfg.iters, "qualities": list(cfg.qualities), "decode_resolution": 256,
            "metrics": {"chamfer": "L1, point-to-surface, both directions averaged, / bounding-box diagonal of the "
                        "original", "surface_points_per_side": settings.surface_points,
                        "volume_points_for_iou": settings.volume_points, "fscore_threshold": "1% of the diagonal"}}
    write_json(cfg.out / "meta.json", meta)
    table: dict = {}
    lines = ["| mesh | quality | nxcodec bytes | Chamfer-L1 | IoU | Draco envelope bytes at that Chamfer | ratio |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        front = envelope([p for p in points if p["mesh"] == name and p["codec"].startswith("draco")])
        for p in sorted((p for p in points if p["mesh"] == name and p["codec"] == "nxcodec"), key=lambda p: p["bytes"]):
            ref = bytes_at_chamfer(front, p["chamfer_l1"])
            ratio = p["bytes"] / ref if ref == ref else float("nan")
            table.setdefault(name, []).append({"quality": p["quality"], "bytes": p["bytes"], "chamfer_l1": p["chamfer_l1"],
                                               "iou": p["iou"], "draco_bytes": ref, "ratio": ratio})
            ref_text = (f"{ref:.0f}" if ref == ref else "no Draco points yet" if not front
                        else "beyond the envelope's best" if p["chamfer_l1"] < front[-1][1]
                        else "above the envelope's worst")
            lines.append(f"| {name} | {p['quality']} | {p['bytes']} | {p['chamfer_l1']:.5f} | {p['iou']:.4f} | {ref_text} | "
                         + (f"{ratio:.2f} |" if ratio == ratio else "- |"))
    floors = [p for p in points if p["codec"] == "floor"]
    stderr = [p["chamfer_l1_stderr"] for p in points if p["codec"] == "nxcodec"]
    lines.append("")
    lines.append(f"Chamfer-L1 is point-to-surface, {settings.surface_points} points a side, averaged over both "
                 "directions, as a fraction of the original's bounding-box diagonal. Noise floor (the original against "
                 "itself, fresh samples): " + ", ".join(f"{p['mesh']} {p['chamfer_l1']:.2e}" for p in floors)
                 + (f"; standard error of nxcodec's Chamfer estimates at most {max(stderr):.1e}." if stderr else "."))
    lines += failure_lines(failures, "mesh", "quality", "quality {}")
    lines.append(f"Measured on {meta['machine']}, commit {meta['commit']}, fits of "
                 f"{cfg.iters or 'preset'} iterations, decode at 256^3.")
    write_bytes_atomic(cfg.out / "table.md", ("\n".join(lines) + "\n").encode(), force=True)
    write_json(cfg.out / "table.json", table)
    plot_shapes(points, names, cfg.out / "shape_rd.png")
    return table


def plot_shapes(points: list[dict], names: list[str], output: Path) -> None:
    """Bytes against Chamfer and against IoU, one row per mesh, log bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.6 * len(names)), dpi=110, squeeze=False)
    styles = {"nxcodec": dict(marker="o", lw=2), "draco": dict(marker="s", lw=1), "draco_decimated": dict(marker=".", lw=0)}
    for row, name in zip(axes, names):
        mine = [p for p in points if p["mesh"] == name]
        for codec, style in styles.items():
            pts = sorted((p for p in mine if p["codec"] == codec), key=lambda p: p["bytes"])
            if pts:
                row[0].plot([p["bytes"] for p in pts], [p["chamfer_l1"] for p in pts], label=codec, **style)
                row[1].plot([p["bytes"] for p in pts], [p["iou"] for p in pts], label=codec, **style)
        front = envelope([p for p in mine if p["codec"].startswith("draco")])
        if front:
            row[0].plot(*zip(*front), ls="--", color="k", lw=1, label="Draco envelope")
        for ax, what in zip(row, ("Chamfer-L1 / diagonal", "volumetric IoU")):
            ax.set_xscale("log")
            ax.set_xlabel("bytes")
            ax.set_ylabel(what)
            ax.set_title(name, fontsize=9)
            ax.grid(alpha=0.3)
        row[0].set_yscale("log")
        row[0].axvspan(2000, 20000, color="0.9", zorder=0)
        if row[0].get_legend_handles_labels()[0]:  # a mesh with no point yet (a run in progress) has no legend
            row[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = output.with_name(f".{output.name}.part.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(output)


def check_source(src: Path) -> None:
    if not src.is_dir():
        raise InputError(f"{src}: not a directory")
