"""Variants of the format 3 image presets (network sizes, lambda), on Kodak crops.

Fits the same crops (side by side, one stack) with each preset and each variant of it from
the same start, codes every fit into a real stream and reports its rate, PSNR and
rate-distortion cost (MSE on [0, 1] + lambda x bpp, lambda the preset's). A variant is a
name and the preset fields it changes, ``name:field=value+field=value``; ``base`` is the
preset itself. One JSON line per crop, quality, fit length and variant is appended to
``--out``.

    python bench/preset_ablation.py ../shared/data/kodak --images 1,2 --size 512 --qualities 1 \\
        --iters 1000 --variants base,refine6:refine_width=6 --out bench/results/preset_ablation_cpu.jsonl
"""

from __future__ import annotations

import time
from dataclasses import fields, replace

import torch

from optimizer_ablation import append_row, coded_crops, crop_parser, kodak_crops
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit import presets
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit.latent_code import config_for


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:field=value+field=value`` -> (name, {field: value}), values typed as the preset's fields."""
    name, _, changes = text.partition(":")
    types = {f.name: f.type for f in fields(presets.LatentPreset)}
    out = {}
    for item in filter(None, changes.split("+")):
        key, _, value = item.partition("=")
        if key not in types or key == "quality":
            raise SystemExit(f"{key!r} is not a preset field one can vary")
        out[key] = {"int": int, "float": float, "str": str}[types[key]](value)
    return name, out


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "1000")
    ap.add_argument("--variants", default="base", help="Comma-separated variants, name:field=value+... [base].")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variants.split(",")]
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    for iters in (int(v) for v in args.iters.split(",")):
        for q in (int(v) for v in args.qualities.split(",")):
            for vname, changes in variants:
                preset = replace(presets.latent_preset(q), **changes)
                cfg = config_for(preset, d)
                model = LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
                t0 = time.perf_counter()
                fit(model, target, preset.lam, LatentSchedule(iters=iters, optimizer=preset.optimizer), seed=args.seed)
                seconds = time.perf_counter() - t0
                for img, coded in coded_crops(model, cfg, names, signals, preset.lam):
                    append_row(args.out, {"image": img, "size": args.size, "quality": q, "variant": vname,
                                          "changes": changes, "iters": iters, **coded, "fit_seconds": round(seconds, 1),
                                          "seed": args.seed, "commit": git_commit(), "machine": machine_name("cpu"),
                                          "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
