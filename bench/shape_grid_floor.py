"""What a uniform grid of the distance gives without any fit: the Chamfer of the mesh's distance sampled on the grid.

For each mesh and grid size, the mesh's signed distance is sampled at the (2^G + 1)^3
vertices of the cube, interpolated trilinearly (as format 8's decoder interpolates its
grids) and meshed by the decoder's marching cubes; the result is measured as the shape
benchmark measures nxcodec. Twice: the distance truncated as format 8 codes it, and the
exact distance. No fit, no quantization, no rate. It is a reference, not a bound: a fit
chooses the vertex values (and the coarser grids and the experts bend the field between
vertices), so it can land below the sampled field, but the grid's spacing sets the scale
of what it can place. Given the directory of a ``nxcodec bench shape`` run, it also gives
the bytes the Draco + decimation envelope of that run needs for the same Chamfer.

    python bench/shape_grid_floor.py ../shared/data/meshes --grids 5,6 \
        --bench bench/results/shape_v8_g65_cpu --out bench/results/shape_grid_floor_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.bench.shape import METRICS, bytes_at_chamfer, envelope
from nxcodec.fit.latent_shape import with_truncation
from nxcodec.fit.presets import SHAPE_LATENT_PRESETS
from nxcodec.signals import for_name
from nxcodec.signals.meshfile import decode_mesh
from nxcodec.signals.sdf import SurfaceIndex, shape_metrics

RESOLUTION = 256  # marching cubes, as the benchmark decodes


def grid_floor(shape, signal, grid_log2: int, truncated: bool) -> dict:
    """The mesh's distance (in units of the truncation, clamped to +-1 when ``truncated``) on a
    (2^grid_log2 + 1)^3 grid, meshed and measured against the original."""
    n = (1 << grid_log2) + 1
    axis = np.linspace(-1.0, 1.0, n)
    vertices = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    t0 = time.perf_counter()
    distance = shape.truncated_distance if truncated else shape.signed_distance
    values = distance(signal, vertices).reshape(n, n, n)
    if not truncated:
        values = values / signal.descriptor.trunc
    interpolate = RegularGridInterpolator((axis, axis, axis), values, method="linear")
    decoded = decode_mesh(lambda p: interpolate(np.clip(p, -1.0, 1.0)), signal.descriptor, RESOLUTION)
    seconds = time.perf_counter() - t0
    metrics = shape_metrics(signal.data, decoded, METRICS, SurfaceIndex(signal.data))
    return {"grid": n, "truncated": truncated, "chamfer_l1": metrics["chamfer_l1"], "iou": metrics["iou"],
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("meshes", type=Path, help="a mesh file or a directory of them")
    ap.add_argument("--grids", default="5,6", help="log2 of the finest grid's cells per axis, comma-separated")
    ap.add_argument("--bench", type=Path, default=None, help="a shape benchmark's output directory (its envelope)")
    ap.add_argument("--out", type=Path, required=True, help="JSON to write")
    args = ap.parse_args()
    shape = for_name("shape")
    paths = sorted(p for p in args.meshes.iterdir() if p.suffix.lower() in shape.extensions) if args.meshes.is_dir() else [args.meshes]
    baseline = []
    if args.bench is not None:
        rows = [json.loads(line) for line in (args.bench / "points.jsonl").read_text().splitlines() if line]
        baseline = [r for r in rows if r["codec"] in ("draco", "draco_decimated")]
    trunc = SHAPE_LATENT_PRESETS[1].trunc
    rows = []
    for path in paths:
        signal = with_truncation(shape.read(path), trunc)
        front = envelope([r for r in baseline if r["mesh"] == path.stem])
        for g, truncated in ((int(x), t) for x in args.grids.split(",") for t in (True, False)):
            row = {"mesh": path.stem, "trunc": trunc, **grid_floor(shape, signal, g, truncated)}
            at = bytes_at_chamfer(front, row["chamfer_l1"]) if front else math.nan
            row["envelope_bytes"] = None if math.isnan(at) else at  # None: no envelope, or outside its range
            rows.append(row)
            kind = "truncated" if truncated else "exact"
            print(f"{row['mesh']} {row['grid']}^3 {kind}: Chamfer-L1 {row['chamfer_l1']:.5f}, IoU {row['iou']:.4f}, "
                  f"envelope {at:.0f} B at that Chamfer ({row['seconds']:.0f} s)")
    out = {"rows": rows, "resolution": RESOLUTION, "machine": machine_name("cpu"), "commit": git_commit(),
           "envelope_from": str(args.bench) if args.bench else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
