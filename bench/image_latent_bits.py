"""Where a latent image spends its bits: networks, and latents by grid and by decode pass.

Encodes the central ``--size`` crop of a Kodak image (``--quality``, ``--iters``), then
walks the decoded latents in decode order with the stream's own context models and charges
every latent the bits of its residual under its table (``16 - log2`` of its frequency, plus
its escape's bits; the ideal code length the rANS coder meets within a few bytes). Pass A
latents read only the coarser grid, pass B ones their pass A neighbours as well (SPEC.md
9.6), so the split tells how much of the rate has a context in its own grid. The image is coded in
two passes (a version 12 stream without the raster context, whose latents have no passes).

    python bench/image_latent_bits.py ../shared/data/kodak --image 1 --size 384 --quality 5 --iters 400 \\
        --out bench/results/image_latent_bits_q5_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.fit import presets
from nxcodec.fit.latent_code import config_for, tensor_bits
from nxcodec.latent import context, stream, tables
from nxcodec.signals import for_name


def pass_bits(image: stream.LatentImage) -> list[dict]:
    """Per grid (finest first) and pass: latents, their bits and the share of nonzero residuals."""
    scales = stream.latent_tables(stream.VERSION, image.config)
    cost, base = scales.costs
    rows = []

    def charge(level: int, pos, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        q = (image.grids[level][pos] - mu) // context.ONE
        r, symbol, escapes = stream.split_residuals(q, scales.residual_limit(scale))
        bits = float(np.sum(cost[base[scale] + symbol]) + np.sum(tables.escape_bits(escapes)))
        parity = int(sum(p[0] for p in pos) % 2)
        rows.append({"level": level, "pass": "AB"[parity], "latents": int(r.size), "bits": bits,
                     "bits_per_latent": bits / r.size, "nonzero": float(np.mean(r != 0))})
        return r

    stream.walk_latents(image.config, image.grids[0].shape, stream.context_models(image.config, image.tensors),
                        charge, scales)
    return sorted(rows, key=lambda row: (row["level"], row["pass"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="The Kodak folder.")
    ap.add_argument("--image", type=int, default=1, help="Kodak number [1].")
    ap.add_argument("--size", type=int, default=384, help="Centre crop side [384].")
    ap.add_argument("--quality", type=int, default=5, help="Preset [5].")
    ap.add_argument("--iters", type=int, default=None, help="Fit length [the preset's].")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write.")
    args = ap.parse_args()
    commit = git_commit()
    im = np.asarray(Image.open(args.src / f"kodim{args.image:02d}.png").convert("RGB"))
    h, w, s = *im.shape[:2], args.size
    image_kind = for_name("image")
    signal = image_kind.from_array(im[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2].copy())
    t0 = time.perf_counter()
    config = replace(config_for(presets.LATENT_PRESETS[args.quality], signal.descriptor), flags=0)
    res = encode_signal(image_kind, signal, EncodeOptions(quality=args.quality, iters=args.iters, device="cpu",
                                                          config=config))
    seconds = time.perf_counter() - t0
    decoded = stream.decode_latents(res.data)
    rows = pass_bits(decoded)
    latent = sum(row["bits"] for row in rows)
    out = {"image": f"kodim{args.image:02d}", "size": s, "quality": args.quality, "iters": args.iters,
           "bytes": len(res.data), "network_bytes": tensor_bits(decoded.tensors) / 8, "latent_bytes": latent / 8,
           "pass_a_share": sum(row["bits"] for row in rows if row["pass"] == "A") / latent, "grids": rows,
           "psnr": res.metrics.get("psnr"), "encode_seconds": seconds, "machine": machine_name("cpu"), "commit": commit}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['image']} {s}x{s} q{args.quality}: {len(res.data)} bytes, networks {out['network_bytes']:.0f}, "
          f"latents {latent / 8:.0f} ({100 * out['pass_a_share']:.0f}% in pass A)")
    for row in rows:
        print(f"  grid {row['level']} pass {row['pass']}: {row['latents']} latents, {row['bits'] / 8:.0f} B, "
              f"{row['bits_per_latent']:.3f} bit each, {100 * row['nonzero']:.1f}% nonzero")


if __name__ == "__main__":
    main()
