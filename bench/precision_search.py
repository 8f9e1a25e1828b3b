"""How the network precisions of a format 3 image are chosen: where they are compared, and per layer or not.

Fits Kodak crops (side by side, one stack, the presets' optimiser), then codes every fit
twice with ``code_plane``. ``--compare band`` compares the precisions on the middle band of
``SEARCH_ROWS`` rows (as images were coded before, and audio planes still are) and on the
whole image (as images are coded now); ``--compare layers`` codes with one precision per
kind of network (fixed-point, float; as images were coded before) and with each layer's
own after that (as they are coded now). One JSON line per crop, quality and fit length is
appended to ``--out``, with both codings' bytes, network bytes, PSNR, rate-distortion cost
(MSE on [0, 1] + lambda x bpp) and search time.

    python bench/precision_search.py ../shared/data/kodak --images 1,4,15,23 --size 256 \\
        --qualities 3,5 --iters 500,2000 --out bench/results/precision_search_cpu.jsonl
    python bench/precision_search.py ../shared/data/kodak --compare layers --qualities 1,3,5,7 \\
        --iters 600 --out bench/results/precision_layers_cpu.jsonl
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from optimizer_ablation import append_row, crop_parser, kodak_crops, settings
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit import latent_code
from nxcodec.fit.latent_code import PlaneSource, code_plane, crop_latents, image_source, tensor_bits
from nxcodec.signals import for_name


def banded(d, cfg, latents: list[np.ndarray], original: np.ndarray, lam: float) -> PlaneSource:
    """``image_source`` with a crop, so that ``code_plane`` compares precisions on a band of rows."""
    def crop(a: int, b: int) -> PlaneSource:
        return image_source(replace(d, height=b - a), cfg, crop_latents(latents, a, b), original[a:b], lam)

    return replace(image_source(d, cfg, latents, original, lam), crop=crop)


def shared_precisions(src: PlaneSource, weights: dict[str, np.ndarray]):
    """``code_plane`` as it was before each layer took its own precision: no layer is searched on its own."""
    layers = latent_code._layers
    latent_code._layers = lambda w: []
    try:
        return code_plane(src, weights, None)
    finally:
        latent_code._layers = layers


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "500,2000")
    ap.add_argument("--compare", choices=("band", "layers"), default="band",
                    help="band: a band of rows against the whole image; layers: one precision per kind of network "
                         "against each layer's own [band].")
    args = ap.parse_args()
    image = for_name("image")
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    for iters, preset, cfg in settings(args, d):
        model = LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
        fit(model, target, preset.lam, LatentSchedule.for_preset(preset, iters), seed=args.seed)
        for j, (name, sig) in enumerate(zip(names, signals)):
            weights = {n: t.detach().numpy() for n, t in model.coded_tensors(j).items()}
            latents = [lat[j].detach().numpy().astype(np.float64) for lat in model.latents]
            whole = image_source(d, cfg, latents, sig.data, preset.lam)
            row = {"image": name, "size": args.size, "quality": preset.quality, "iters": iters,
                   "optimizer": preset.optimizer}
            if args.compare == "band":
                codings = (("band", lambda: code_plane(banded(d, cfg, latents, sig.data, preset.lam), weights, None)),
                           ("whole", lambda: code_plane(whole, weights, None)))
            else:
                codings = (("shared", lambda: shared_precisions(whole, weights)),
                           ("layers", lambda: code_plane(whole, weights, None)))
            for key, code in codings:
                t0 = time.perf_counter()
                best = code()
                psnr = image.metrics(sig.data, best.samples.reshape(sig.data.shape))["psnr"]
                row[key] = {"bytes": len(best.data), "network_bytes": round(tensor_bits(best.image.tensors) / 8),
                            "psnr": round(psnr, 3), "cost": best.cost,
                            "seconds": round(time.perf_counter() - t0, 2)}
            row.update({"seed": args.seed, "commit": git_commit(), "machine": machine_name("cpu"),
                        "threads": torch.get_num_threads()})
            append_row(args.out, row)


if __name__ == "__main__":
    main()
