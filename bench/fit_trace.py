"""Trace a format 3 image fit: every crop's relaxed and hard-rounded loss as the fit goes on, on Kodak crops.

The fit minimises a relaxed loss (soft rounding plus noise) and then, in its straight-through
phase, the hard-rounded one; what a stream pays is the hard-rounded one. Every ``--every``
iterations of the fit after its warm-up race (and at its last), this records each crop's
relaxed loss (the one the step just computed) and its hard-rounded loss, MSE on [0, 1] +
lambda x latent bits per pixel (no network bits: nothing is coded), with that PSNR and latent
bpp. Variants are written as for ``bench/preset_ablation.py`` (``name:field=value+...``). One
JSON line per variant, fit length and traced iteration is appended to ``--out``.

    python bench/fit_trace.py ../shared/data/kodak --size 128 --qualities 5 --iters 2000,5000 \\
        --variants base,held:ste_latent_lr=0 --out bench/results/fit_trace_128_cpu.jsonl
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

import nxcodec.fit.latent as fit_latent
from optimizer_ablation import append_row, crop_parser, kodak_crops
from preset_ablation import parse_variant
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit import presets
from nxcodec.fit.latent_code import config_for


def hard_rounded(model: fit_latent.LatentModel, target: torch.Tensor, lam: float) -> dict[str, list[float]]:
    """Each signal's loss with its latents hard-rounded (MSE on [0, 1] + ``lam`` x latent bpp), PSNR and latent bpp."""
    with torch.no_grad():
        grids, bits = model.quantized_latents("ste")
        mse = ((model.synthesize(grids)[2] - target) ** 2).mean(dim=(1, 2)) / 4
    bpp = bits / (model.height * model.width)
    return {"hard": [round(float(x), 8) for x in mse + lam * bpp],
            "psnr": [round(float(x), 3) for x in -10 * torch.log10(mse)],
            "latent_bpp": [round(float(x), 4) for x in bpp]}


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "2000")
    ap.add_argument("--variants", default="base", help="Comma-separated variants, name:field=value+... [base].")
    ap.add_argument("--every", type=int, default=100, help="Iterations between two traced ones [100].")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    fit_optimise = fit_latent.optimise
    for iters in args.iters:
        for q in args.qualities:
            for vname, changes, schedule_changes in [parse_variant(v) for v in args.variants.split(",")]:
                preset = replace(presets.latent_preset(q), **changes)
                cfg = config_for(preset, d)
                model = fit_latent.LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
                start = time.perf_counter()
                row = {"size": args.size, "quality": q, "variant": vname, "changes": {**changes, **schedule_changes},
                       "iters": iters, "images": names}

                def traced(model, schedule, step, seed=0):
                    if schedule.race or "race" in schedule.desc:  # a warm-up: not traced
                        return fit_optimise(model, schedule, step, seed)
                    count = 0

                    def step_traced(mode: str, pretrain: bool):
                        nonlocal count
                        loss, status = step(mode, pretrain)
                        if count % args.every == 0 or count == schedule.iters - 1:
                            append_row(args.out, {**row, "it": count,
                                                  "phase": "straight-through" if mode == "ste" else "relaxed",
                                                  "relaxed": [round(float(x), 8) for x in loss],
                                                  **hard_rounded(model, target, preset.lam),
                                                  "seconds": round(time.perf_counter() - start, 1),
                                                  "commit": git_commit(), "machine": machine_name("cpu")})
                        count += 1
                        return loss, status

                    return fit_optimise(model, schedule, step_traced, seed)

                fit_latent.optimise = traced
                try:
                    fit_latent.fit(model, target, preset.lam,
                                   fit_latent.LatentSchedule.for_preset(preset, iters, **schedule_changes),
                                   seed=args.seed)
                finally:
                    fit_latent.optimise = fit_optimise


if __name__ == "__main__":
    main()
