"""Where a latent shape spends its bytes: networks, the occupancy map, and latents by grid and by distance to the
surface.

Encodes a mesh (``--quality``, ``--iters``), then walks the decoded latents in decode
order with the stream's own context model, and charges every latent the bits of its
residual under its table (``-log2(f / 2^16)``, the ideal code length the rANS coder
meets within a few bytes). A vertex is *far* when the mesh's truncated distance there
is +-1 (at least the truncation away from the surface), else *near*. This measures
whether the context model alone makes far latents nearly free, the alternative being an
occupancy grid that codes only the near cells (issue 14): the committed result is format
5's (commit b6a2f11); format 7 codes such a map, and its latents outside it cost nothing.

    python bench/shape_latent_bits.py ../shared/data/meshes/stanford_bunny.obj --quality 3 --iters 400 \
        --out bench/results/shape_latent_bits_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.latent import context, tables
from nxcodec.latent import shape as latent_shape
from nxcodec.latent.stream import context_models, walk_latents
from nxcodec.signals import for_name


def latent_bits(image: latent_shape.LatentShape) -> list[np.ndarray]:
    """Each latent's ideal code length in bits, grid by grid (finest first), as the decoder would read it (0 for
    the latents a version 7 stream does not code)."""
    scales = tables.COARSE  # shape streams (versions 5 to 8)
    scale_tables = scales.tables()
    bits = [np.zeros(g.shape) for g in image.grids]

    def charge(level: int, pos, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        r = (image.grids[level][pos] - mu) // context.ONE
        limit = scales.residual_limit(scale)
        freq = np.empty(r.size)
        for s in np.unique(scale):
            mine = scale == s
            freq[mine] = scale_tables[s][(r + limit)[mine]]
        bits[level][pos] = tables.PREC - np.log2(freq)
        return r

    masks = None if image.occupancy is None else image.occupancy.latent_masks(image.descriptor.grid_log2,
                                                                               image.config.levels)
    walk_latents(image.config, image.descriptor.grid, context_models(image.config, image.tensors), charge, scales, masks)
    return bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mesh", type=Path)
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    shape = for_name("shape")
    signal = shape.read(args.mesh)
    t0 = time.perf_counter()
    res = encode_signal(shape, signal, EncodeOptions(quality=args.quality, iters=args.iters, device="cpu"))
    seconds = time.perf_counter() - t0
    image = latent_shape.decode_latents(res.data)
    net_bits = sum(float(np.sum(tables.PREC - np.log2(t.table()[t.ints.ravel() - t.lo]))) for t in image.tensors.values())
    grids = []
    for level, b in enumerate(latent_bits(image)):
        n = b.shape[0]
        axis = np.linspace(-1.0, 1.0, n)
        vertices = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        far = np.abs(shape.truncated_distance(signal, vertices)) >= 1.0
        flat = b.ravel()
        grids.append({"level": level, "side": n, "latents": int(flat.size), "far": int(far.sum()),
                      "near_bytes": float(flat[~far].sum() / 8), "far_bytes": float(flat[far].sum() / 8),
                      "far_bits_per_latent": float(flat[far].mean()) if far.any() else 0.0,
                      "near_bits_per_latent": float(flat[~far].mean()) if (~far).any() else 0.0})
    out = {"mesh": args.mesh.stem, "quality": args.quality, "iters": args.iters, "bytes": len(res.data),
           "network_bytes": net_bits / 8,
           "occupancy_bytes": latent_shape.read_header(res.data).sizes.get("occupancy", 0), "grids": grids, "chamfer_l1": res.metrics["chamfer_l1"],
           "encode_seconds": seconds, "machine": machine_name("cpu"), "commit": git_commit()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    far = sum(g["far_bytes"] for g in grids)
    near = sum(g["near_bytes"] for g in grids)
    print(f"{out['mesh']} q{args.quality}: {len(res.data)} bytes: networks {net_bits / 8:.0f}, occupancy map "
          f"{out['occupancy_bytes']}, latents near the "
          f"surface {near:.0f}, far from it {far:.0f} ({sum(g['far'] for g in grids)} of "
          f"{sum(g['latents'] for g in grids)} latents)")
    for g in grids:
        print(f"  grid {g['level']} ({g['side']}^3): near {g['near_bytes']:.0f} B "
              f"({g['near_bits_per_latent']:.3f} bit/latent), far {g['far_bytes']:.0f} B "
              f"({g['far_bits_per_latent']:.4f} bit/latent, {g['far']} latents)")


if __name__ == "__main__":
    main()
