"""CPU decode time of version 3 image streams: the whole decode, entropy decoding to pixels.

Fits each image briefly (decode time does not depend on how well the fit went, only on
the image size and the networks), writes the stream, then decodes it ``--repeat`` times
in this process with numpy only and reports the median and its parts (entropy decoding
with the context model, synthesis). Also reports the decoder's multiply-adds per pixel.

    python bench/decode_speed.py ../shared/data/kodak --images 4 --quality 5 --out bench/results/decode_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.latent import stream
from nxcodec.signals import for_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="Folder of images (sorted by name).")
    ap.add_argument("--images", type=int, default=4, help="How many images [4].")
    ap.add_argument("--quality", type=int, default=5, help="nxcodec quality [5].")
    ap.add_argument("--iters", type=int, default=30, help="Fitting iterations (decode time does not depend on them) [30].")
    ap.add_argument("--repeat", type=int, default=5, help="Decodes per stream; the median is reported [5].")
    ap.add_argument("--out", type=Path, required=True, help="JSON to write.")
    args = ap.parse_args()
    commit = git_commit()  # the commit this run starts from
    image = for_name("image")
    rows = []
    for path in sorted(args.src.glob("*.png"))[: args.images]:
        array = np.asarray(Image.open(path).convert("RGB"))
        res = encode_signal(image, image.from_array(array), EncodeOptions(quality=args.quality, iters=args.iters,
                                                                           device="cpu"))
        totals, entropy, synth = [], [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            latents = stream.decode_latents(res.data)
            t1 = time.perf_counter()
            stream.reconstruct(latents)
            t2 = time.perf_counter()
            totals.append(t2 - t0)
            entropy.append(t1 - t0)
            synth.append(t2 - t1)
        h = stream.read_header(res.data)
        rows.append({"image": path.stem, "width": array.shape[1], "height": array.shape[0], "bytes": len(res.data),
                     "decode_seconds": statistics.median(totals), "entropy_seconds": statistics.median(entropy),
                     "synthesis_seconds": statistics.median(synth),
                     "mac_per_pixel": h.config.mac_per_pixel(h.descriptor.channels)})
        print(f"{path.stem}: {rows[-1]['decode_seconds']:.3f} s (entropy {rows[-1]['entropy_seconds']:.3f}, "
              f"synthesis {rows[-1]['synthesis_seconds']:.3f}), {rows[-1]['mac_per_pixel']:.0f} MAC/pixel", flush=True)
    summary = {"machine": machine_name("cpu"), "commit": commit, "quality": args.quality, "iters": args.iters,
               "median_decode_seconds": statistics.median(r["decode_seconds"] for r in rows), "images": rows}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"median decode: {summary['median_decode_seconds']:.3f} s over {len(rows)} images on {summary['machine']}")


if __name__ == "__main__":
    main()
