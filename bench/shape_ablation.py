"""Shape coding ablations on one mesh: smaller 3-D contexts, fewer grids started from the distance, and
coding only the latents around an occupancy grid's occupied cells.

Each variant changes one thing of format 6's shape coder for this run only, encodes the
mesh at ``--quality`` with ``--iters`` iterations on one CPU thread, and appends a JSON
line: bytes, the networks' share (ideal code lengths of their integers), parameters,
Chamfer-L1 and the field's error.

Variants:

- ``base``: format 6 as it is (27 coarse and 14 same-grid contexts).
- ``small``: the parent and its 6 face neighbours in the coarser grid, the 6 face
  neighbours in the same grid (encoder and decoder read the same swapped tables).
- ``c7``: those 7 coarse contexts and the 14 same-grid ones.
- ``initN``: only the N finest grids start from the distance, the others at zero.
- ``armWxL``: context models of L hidden layers W wide (the presets: 8x2).
- ``occL``: an estimate of occupancy coding, which no format has yet. The cells of grid L
  are *occupied* when the surface may lie within the truncation of them (``|sdf|`` at the
  centre below the truncation plus the half diagonal). Only latents at corners of
  occupied cells (of every grid, nested) are fitted and charged; training samples in
  free cells are dropped; the field in a free cell is the sign of its centre's distance.
  The stream is still format 6 (so its ``bytes`` include the zeroed latents), and
  ``estimate_bytes`` counts the networks plus the ideal code lengths of the kept latents
  only, without the occupancy map itself.

    python bench/shape_ablation.py ../shared/data/meshes/stanford_bunny.obj occ1 \\
        --quality 3 --iters 400 --out bench/results/shape_ablation_cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import nxcodec.fit.latent_shape as fit_shape
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.fit import presets
from nxcodec.latent import context, tables
from nxcodec.latent import shape as latent_shape
from nxcodec.signals import for_name, meshfile

FACES = ((-1, 0, 0), (0, -1, 0), (0, 0, -1), (1, 0, 0), (0, 1, 0), (0, 0, 1))


def smaller_contexts(variant: str) -> None:
    coarse, same = ((0, 0, 0), *FACES), context.OFFSETS[3][1]
    if variant == "small":
        same = FACES
    context.OFFSETS[3] = (coarse, same)
    fit_shape.COARSE_OFFSETS_3D, fit_shape.SAME_OFFSETS_3D = coarse, same


def context_model(width: int, layers: int) -> None:
    config_for = fit_shape.config_for
    fit_shape.config_for = lambda preset: replace(config_for(preset), arm_width=width, arm_layers=layers)


def finest_start(keep: int) -> None:
    start = fit_shape.start_from_distance

    def start_finest(model, distance) -> None:
        start(model, distance)
        with torch.no_grad():
            for lat in model.latents[keep:]:
                lat.zero_()

    fit_shape.start_from_distance = start_finest


class Occupancy:
    """The occupied cells of grid ``level``, their signs, and the latents each grid keeps."""

    def __init__(self, shape, signal, grid_log2: int, levels: int, level: int) -> None:
        d = signal.descriptor
        self.cells = 1 << (grid_log2 - level)
        self.h = 2.0 / self.cells
        axis = -1 + self.h * (np.arange(self.cells) + 0.5)
        centres = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        sdf = shape._index(signal).signed_distance(meshfile.from_network(d, centres)) / d.scale
        self.occupied = (np.abs(sdf) < d.trunc + self.h * np.sqrt(3) / 2).reshape((self.cells,) * 3)
        self.sign = np.where(sdf >= 0, 1.0, -1.0).reshape((self.cells,) * 3)
        self.masks = [self._corners(self._cells_of(grid_log2 - l, level - l)) for l in range(levels)]

    def _cells_of(self, log2_cells: int, finer: int) -> np.ndarray:
        """Occupancy of the cells of a grid with ``2**log2_cells`` cells per axis (``finer`` levels finer)."""
        occ = self.occupied
        if finer >= 0:
            r = 1 << finer
            return occ.repeat(r, 0).repeat(r, 1).repeat(r, 2)
        r, c = 1 << -finer, 1 << log2_cells
        return occ.reshape(c, r, c, r, c, r).any(axis=(1, 3, 5))

    @staticmethod
    def _corners(cells: np.ndarray) -> np.ndarray:
        padded, c = np.pad(cells, 1), cells.shape[0]
        mask = np.zeros((c + 1,) * 3, bool)
        for a in (0, 1):
            for b in (0, 1):
                for e in (0, 1):
                    mask |= padded[a : a + c + 1, b : b + c + 1, e : e + c + 1]
        return mask

    def lookup(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cell = np.clip(np.floor((points + 1) / self.h), 0, self.cells - 1).astype(np.int64)
        return self.occupied[tuple(cell.T)], self.sign[tuple(cell.T)]


def occupancy_coding(occ: Occupancy, shape) -> None:
    masks = [torch.from_numpy(m).float().reshape(1, -1) for m in occ.masks]

    class OccupiedField(latent_shape.Field):
        def __call__(self, points: np.ndarray) -> np.ndarray:
            inside, out = occ.lookup(np.asarray(points, np.float64))
            out = out.copy()
            if inside.any():
                out[inside] = super().__call__(points[inside])
            return out

    class MaskedModel(fit_shape.ShapeModel):
        def quantized_latents(self, mode: str):
            bits = torch.zeros(self.m, device=self.latents[0].device)
            out: list = [None] * self.cfg.levels
            coarser = None
            for level in range(self.cfg.levels - 1, -1, -1):
                keep, y = masks[level].to(self.latents[0].device), self.latents[level]
                size = tuple(y.shape[1:])
                idx_a, idx_b = self._passes(size, y.device)
                flat = y.reshape(self.m, -1) * keep
                first_a, first_b = self._first_layers(coarser, size, idx_a, idx_b)
                y_a, b_a = self._quantize(flat[:, idx_a], *self._arm_from_first("arm_a", first_a), mode)
                grid = torch.zeros_like(flat).index_copy(1, idx_a, y_a * keep[:, idx_a])
                mu, log2_scale = self._arm_from_first("arm_b", first_b(grid.view(self.m, *size)))
                y_b, b_b = self._quantize(flat[:, idx_b], mu, log2_scale, mode)
                grid = grid.index_copy(1, idx_b, y_b * keep[:, idx_b]).view(self.m, *size)
                bits = bits + (b_a * keep[:, idx_a]).sum(1) + (b_b * keep[:, idx_b]).sum(1)
                out[level] = coarser = grid
            return out, bits

    fit = fit_shape.fit_shapes

    def fit_then_clear(model, *args, **kwargs):
        losses = fit(model, *args, **kwargs)
        with torch.no_grad():
            for lat, keep in zip(model.latents, masks):
                lat.mul_(keep.view(1, *lat.shape[1:]).to(lat))
        return losses

    points = type(shape).training_points

    def occupied_points(self, signal):
        p, t = points(self, signal)
        keep = torch.from_numpy(occ.lookup(p.numpy().astype(np.float64))[0])
        return p[keep], t[keep]

    latent_shape.Field = OccupiedField
    fit_shape.ShapeModel = MaskedModel
    fit_shape.fit_shapes = fit_then_clear
    type(shape).training_points = occupied_points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mesh", type=Path)
    ap.add_argument("variant", help="base, small, c7, armWxL, initN or occL")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file, appended to")
    args = ap.parse_args()
    torch.set_num_threads(1)
    shape = for_name("shape")
    signal = shape.read(args.mesh)
    preset = presets.SHAPE_LATENT_PRESETS[args.quality]
    occ = None
    if args.variant in ("small", "c7"):
        smaller_contexts(args.variant)
    elif args.variant.startswith("arm"):
        context_model(*(int(x) for x in args.variant[3:].split("x")))
    elif args.variant.startswith("init"):
        finest_start(int(args.variant[4:]))
    elif args.variant.startswith("occ"):
        occ = Occupancy(shape, signal, preset.grid_log2, min(preset.levels, preset.grid_log2 + 1), int(args.variant[3:]))
        occupancy_coding(occ, shape)
    elif args.variant != "base":
        raise SystemExit(f"unknown variant {args.variant}")
    t0 = time.perf_counter()
    res = encode_signal(shape, signal, EncodeOptions(quality=args.quality, iters=args.iters, device="cpu"))
    seconds = time.perf_counter() - t0
    image = latent_shape.decode_latents(res.data)
    net_bits = sum(float(np.sum(tables.PREC - np.log2(t.table()[t.ints.ravel() - t.lo]))) for t in image.tensors.values())
    row = {"mesh": args.mesh.stem, "variant": args.variant, "quality": args.quality, "iters": args.iters,
           "bytes": len(res.data), "network_bytes": round(net_bits / 8), "params": res.n_params,
           "chamfer_l1": res.metrics["chamfer_l1"], "sdf_l1": res.metrics["sdf_l1"]}
    if occ is not None:
        from shape_latent_bits import latent_bits  # bench/, beside this script

        bits = latent_bits(image)
        kept = sum(float(b[m].sum()) for b, m in zip(bits, occ.masks)) / 8
        row.update(occupied_cells=int(occ.occupied.sum()), kept_latents=[round(float(m.mean()), 3) for m in occ.masks],
                   estimate_bytes=round(len(res.data) - sum(float(b.sum()) for b in bits) / 8 + kept))
    row.update(encode_seconds=round(seconds, 1), machine=machine_name("cpu"), commit=git_commit())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
