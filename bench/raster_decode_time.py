"""How long a decoder would take to entropy-decode a Kodak-size latent pyramid in raster order, against the
format's two passes.

A context in raster order (``decode_order.py``'s causal orders) costs a decoder one sequential step per
wavefront of every grid: the positions whose ``slope * row + col`` is equal read only latents of earlier
wavefronts. Tiles decoded side by side bound the steps per grid by the tile's side. This times the
decoding of the latents of a ``--size`` image (7 grids) in numpy with the format's own pieces (the
interleaved rANS decoder, the fixed-point context model, 21 inputs and 12 wide): for each order, each
step gathers its latents' contexts (12 earlier latents of the tile, 9 of the coarser grid), evaluates
the context model and decodes its symbols. The two-pass row times the format's own ``walk_latents``
(SPEC.md 9.6). Weights and symbols are random (the symbols under the scales they were coded with, so
every stream decodes to its end); what is timed is the work, not the rate. Synthesis comes on top, the
same for every order. Prints a table; ``--out`` writes it as JSON with the machine and the commit.

    python bench/raster_decode_time.py --out bench/results/raster_decode_time_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.latent import rans, tables
from nxcodec.latent.context import ONE, FixedLayer, fixed_mlp, level_sizes, means_and_scales
from nxcodec.latent.stream import LatentConfig, walk_latents

COARSE = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
NEIGHBOURS = {  # slope -> 12 causal offsets whose wavefront is slope * row + col (decode_order.py)
    3: [(0, -1), (0, -2), (0, -3), (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-1, 2), (-2, -1), (-2, 0), (-2, 1),
        (-3, 0)],
    2: [(0, -1), (0, -2), (0, -3), (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-2, -2), (-2, -1), (-2, 0), (-2, 1),
        (-2, 2)],
}
LANES = 256


def random_net(rng: np.random.Generator, fan_in: int, width: int = 12) -> list[FixedLayer]:
    def layer(a: int, b: int) -> FixedLayer:
        return FixedLayer(rng.integers(-60, 60, (a, b)), rng.integers(-60, 60, b), 9, 8)
    return [layer(fan_in, width), layer(width, width), layer(width, 2)]


def wavefront_steps(h: int, w: int, tile: int, slope: int) -> list[np.ndarray]:
    """Per step, the (tile, row, col) of its latents in tile-major order; a tile of 0 is the whole grid."""
    th, tw = (tile, tile) if tile else (h, w)
    r, c = np.indices((h, w)).reshape(2, -1)
    tile_index = (r // th) * (-(-w // tw)) + c // tw
    t = slope * (r % th) + c % tw
    order = np.lexsort((c, r, tile_index, t))
    bounds = np.searchsorted(t[order], np.arange(t.max() + 2))
    ordered = np.stack([tile_index, r % th, c % tw, r, c])[:, order]
    return [ordered[:, a:b] for a, b in zip(bounds, bounds[1:])]


def raster_decode(data: bytes, models: np.ndarray, coder: rans.Tables, sizes: list[tuple[int, int]],
                  net: list[FixedLayer], tile: int, slope: int) -> int:
    """Decode every grid wavefront by wavefront; returns the number of sequential steps."""
    decoder = rans.Decoder(data, coder, LANES)
    k, steps, coarser = 0, 0, None
    offsets = NEIGHBOURS[slope]
    for h, w in reversed(sizes):
        th, tw = (tile, tile) if tile else (h, w)
        n_tiles = (-(-h // th)) * (-(-w // tw))
        pitch = tw + 6  # each tile padded by 3 rows above and 3 columns each side: neighbours outside read 0
        buf = np.zeros((n_tiles, th + 3, pitch))
        flat, tile_size = buf.reshape(-1), (th + 3) * pitch
        same = np.array([a * pitch + b for a, b in offsets])
        if coarser is not None:
            cp = np.pad(coarser.astype(np.float64), 1)
            cflat, cpitch = cp.reshape(-1), cp.shape[1]
            csteps = np.array([a * cpitch + b for a, b in COARSE])
        for tile_index, tr, tc, r, c in wavefront_steps(h, w, tile, slope):
            n = r.size
            ctx = np.zeros((n, len(offsets) + len(COARSE)))
            base = tile_index * tile_size + (tr + 3) * pitch + tc + 3
            ctx[:, : len(offsets)] = flat[base[:, None] + same]
            if coarser is not None:
                ctx[:, len(offsets):] = cflat[((r // 2 + 1) * cpitch + c // 2 + 1)[:, None] + csteps]
            mu, _ = means_and_scales(fixed_mlp(ctx, net), tables.FINE.n)
            flat[base] = decoder.decode(models[k : k + n]) * ONE + mu  # the stream's own scales, so it decodes
            k, steps = k + n, steps + 1
        grid = buf[:, 3:, 3 : 3 + tw].reshape(-(-h // th), -(-w // tw), th, tw).transpose(0, 2, 1, 3)
        coarser = grid.reshape(-(-h // th) * th, -(-w // tw) * tw)[:h, :w].astype(np.int64)
    decoder.finish()  # every symbol read, in the order coded
    return steps


def two_pass_decode(data: bytes, models: np.ndarray, coder: rans.Tables, cfg: LatentConfig,
                    shape: tuple[int, int], rng: np.random.Generator) -> int:
    """The format's own walk (pass A, then pass B, per grid), the symbols read under the stream's scales."""
    decoder = rans.Decoder(data, coder, LANES)
    start = [0]

    def read(level, pos, mu, scale):
        n = pos[0].size
        out = decoder.decode(models[start[0] : start[0] + n])
        start[0] += n
        return out

    walk_latents(cfg, shape, [random_net(rng, 9), random_net(rng, 21)], read, tables.FINE)
    decoder.finish()
    return 2 * cfg.levels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="768x512", help="Image width x height [768x512].")
    ap.add_argument("--levels", type=int, default=7, help="Latent grids [7].")
    ap.add_argument("--orders", default="two-pass,3:0,2:0,3:64,2:64,3:32,2:32",
                    help="Orders: two-pass, or slope:tile (tile 0: none) [two-pass,3:0,2:0,3:64,2:64,3:32,2:32].")
    ap.add_argument("--repeat", type=int, default=5, help="Timed decodes per order; the median is kept [5].")
    ap.add_argument("--out", type=Path, help="JSON file to write the table to.")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    rng = np.random.default_rng(0)
    sizes = level_sizes((h, w), args.levels)
    n = sum(math.prod(s) for s in sizes)
    models = rng.integers(8, tables.FINE.n - 8, n)
    limit = tables.FINE.residual_limit(models)
    symbols = np.clip(np.round(rng.laplace(0, 1, n)), -limit, limit).astype(np.int64) + limit
    coder = rans.Tables(tables.FINE.tables())
    data = rans.encode(symbols, models, coder, LANES)
    cfg = LatentConfig(levels=args.levels, arm_width=12, arm_layers=2, n_experts=1, mgr_width=0, syn_width=8,
                       syn_layers=1, refine_width=0, lanes_log2=8)
    net = random_net(rng, 21)
    rows = []
    for order in args.orders.split(","):
        if order == "two-pass":
            run = lambda: two_pass_decode(data, models, coder, cfg, (h, w), rng)  # noqa: E731
        else:
            slope, tile = (int(x) for x in order.split(":"))
            run = lambda: raster_decode(data, models, coder, sizes, net, tile, slope)  # noqa: E731
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            steps = run()
            times.append(time.perf_counter() - t0)
        rows.append({"order": order, "steps": steps, "seconds": round(statistics.median(times), 4)})
        print(f"| {order} | {steps} | {rows[-1]['seconds']:.3f} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine_name("cpu"), "commit": git_commit(), "size": args.size,
                                        "levels": args.levels, "latents": n, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
