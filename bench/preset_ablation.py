"""Variants of the format 3 image presets (network sizes, lambda) and of the fit's schedule, on Kodak crops.

Fits the same crops (side by side, one stack) with each preset and each variant of it from
the same start, codes every fit into a real stream and reports its rate, PSNR and
rate-distortion cost (MSE on [0, 1] + lambda x bpp, lambda the preset's). A variant is a
name and the preset or schedule fields it changes, ``name:field=value+field=value`` (a
field of ``LatentPreset``, a number of ``LatentSchedule`` such as ``ste_frac``, or its warm-up ``race``
written as rounds ``candidates x fraction`` joined by ``/``, e.g. ``race=3x0.05/2x0.08``, ``race=none`` for
none); ``base`` is the preset itself. Crops under ``presets.SMALL_IMAGE_PIXELS`` get a preset's
``syn_width_small`` where it has one (quality 5), not its ``syn_width``. One JSON line per crop, quality, fit length
and variant is appended to ``--out``.

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


SCHEDULE_NUMBERS = {f.name: f.type.removesuffix(" | None") for f in fields(LatentSchedule)  # but --iters, the length
                    if f.type.removesuffix(" | None") in ("int", "float") and f.name != "iters"}


def parse_variant(text: str) -> tuple[str, dict, dict]:
    """``name:field=value+field=value`` -> (name, {preset field: value}, {schedule field: value}), values typed
    as the fields."""
    name, _, changes = text.partition(":")
    types = {f.name: f.type.removesuffix(" | None") for f in fields(presets.LatentPreset) if f.name != "quality"}
    preset, schedule = {}, {}
    for item in filter(None, changes.split("+")):
        key, _, value = item.partition("=")
        try:
            if key in types:
                preset[key] = {"int": int, "float": float, "str": str}[types[key]](value)
            elif key == "race":
                schedule[key] = parse_race(value)
            elif key in SCHEDULE_NUMBERS:
                schedule[key] = {"int": int, "float": float}[SCHEDULE_NUMBERS[key]](value)
            else:
                raise SystemExit(f"{key!r} is neither a preset field nor a number of the schedule one can vary")
        except ValueError:
            raise SystemExit(f"{item!r}: {value!r} is not a value of {key}") from None
    return name, preset, schedule


def parse_race(text: str) -> tuple[tuple[int, float], ...]:
    """``3x0.05/2x0.08`` -> ((3, 0.05), (2, 0.08)); ``none`` -> () (ValueError if malformed)."""
    if text == "none":
        return ()
    rounds = []
    for item in text.split("/"):
        n, x, frac = item.partition("x")
        if not x:
            raise ValueError(item)
        rounds.append((int(n), float(frac)))
    return tuple(rounds)


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "1000")
    ap.add_argument("--variants", default="base", help="Comma-separated variants, name:field=value+... [base].")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variants.split(",")]
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    for iters in args.iters:
        for q in args.qualities:
            for vname, changes, schedule in variants:
                preset = replace(presets.latent_preset(q), **changes)
                cfg = config_for(preset, d)
                model = LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
                t0 = time.perf_counter()
                fit(model, target, preset.lam, LatentSchedule.for_preset(preset, iters, **schedule),
                    seed=args.seed)
                seconds = time.perf_counter() - t0
                for img, coded in coded_crops(model, cfg, names, signals, preset.lam):
                    append_row(args.out, {"image": img, "size": args.size, "quality": q, "variant": vname,
                                          "changes": {**changes, **schedule}, "iters": iters, **coded,
                                          "fit_seconds": round(seconds, 1),
                                          "seed": args.seed, "commit": git_commit(), "machine": machine_name("cpu"),
                                          "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
