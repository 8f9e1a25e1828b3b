"""Whether a raster-order context's latents code to what its fit counts: integer tables per scale and phase of the
mean, through the format's rANS coder, against the fit's own bits.

``decode_order.py``'s raster orders round each latent to an integer and count its bits under a Laplace whose mean
``mu`` is not an integer. A format would code ``k = y - round(mu)`` under a table for the scale and for the phase of
``mu`` (``mu - round(mu)`` in ``--phases`` steps). This fits ``causal-slope2-tiles64`` on Kodak crops, builds such
tables (each table: a Laplace of the phase's centre integrated over unit bins, scaled to 2**30 and normalised as
the format's are, residuals beyond the scale's limit clamped and counted), codes the hard-rounded latents with the
format's rANS coder and appends per crop the fit's latent bits and the coded bits to ``--out``. The context model
runs in float here, not in the format's fixed point.

    python bench/raster_coding.py ../shared/data/kodak --images 1,4 --size 256 --qualities 5 --iters 600 \\
        --out bench/results/raster_coding_cpu.jsonl
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from decode_order import CausalSlope2TilesModel
from optimizer_ablation import append_row, crop_parser, kodak_crops, settings
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit.latent import LatentSchedule, fit
from nxcodec.latent import rans, tables


def phase_tables(scales: tables.ScaleSet, phases: int) -> list[np.ndarray]:
    """Table ``s * phases + j``: residuals -A..A of scale index ``s`` for a mean ``(j + 0.5) / phases - 0.5`` above
    the integer nearest to it."""
    out = []
    for s in range(scales.n):
        b = 2.0 ** (scales.log2_bmin + s / tables.SCALES_PER_OCTAVE)
        a = int(scales.residual_limit(s))
        k = np.arange(-a, a + 1, dtype=np.float64)
        for j in range(phases):
            d = (j + 0.5) / phases - 0.5

            def cdf(x: np.ndarray) -> np.ndarray:
                z = (x - d) / b
                return np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))

            p = cdf(k + 0.5) - cdf(k - 0.5)
            out.append(tables.normalise(np.maximum((p * 2.0**30).astype(np.int64), 1), a))
    return out


def coded_bits(model: CausalSlope2TilesModel, scales: tables.ScaleSet, phases: int, coder: rans.Tables
               ) -> list[tuple[float, float, int]]:
    """Per crop: the fit's latent bits, the rANS-coded bits and the residuals clamped to their table."""
    with torch.no_grad():
        grids, bits = model.quantized_latents("ste")
        symbols: list[list[np.ndarray]] = [[] for _ in range(model.m)]
        models: list[list[np.ndarray]] = [[] for _ in range(model.m)]
        clamped = [0] * model.m
        coarser = None
        for level in range(model.cfg.levels - 1, -1, -1):
            value = grids[level]
            h, w = value.shape[1:]
            coarse = model._coarse_context(coarser, (h, w)).to(value)
            ctx = torch.cat([model._same(value), coarse], -1).reshape(model.m, h * w, -1)
            mu, log2_scale = model._arm("arm_a", ctx)
            s = torch.round((log2_scale - scales.log2_bmin) * tables.SCALES_PER_OCTAVE).clamp(0, scales.n - 1).long()
            centre = torch.round(mu)
            j = torch.floor((mu - centre + 0.5) * phases).clamp(0, phases - 1).long()
            k = value.reshape(model.m, -1) - centre
            for i in range(model.m):
                limit = torch.as_tensor(scales.limits)[s[i]]
                clamped[i] += int((k[i].abs() > limit).sum())
                kk = torch.maximum(torch.minimum(k[i], limit), -limit)
                symbols[i].append((kk + limit).long().numpy())
                models[i].append((s[i] * phases + j[i]).numpy())
            coarser = value
    out = []
    for i in range(model.m):
        data = rans.encode(np.concatenate(symbols[i]), np.concatenate(models[i]), coder, 1)  # one lane: 4 bytes of state
        out.append((float(bits[i]), 8.0 * len(data), clamped[i]))
    return out


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "600")
    ap.add_argument("--phases", type=int, default=32, help="Phases of the mean per scale [32].")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    scales = tables.FINE
    coder = rans.Tables(phase_tables(scales, args.phases))
    for iters, preset, cfg in settings(args, d):
        cfg = replace(cfg, flags=0)  # these models build on the two-pass networks (arm_a, arm_b), not version 12's
        model = CausalSlope2TilesModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
        fit(model, target, preset.lam, LatentSchedule.for_preset(preset, iters), seed=args.seed)
        for name, (fit_bits, bits, clamped) in zip(names, coded_bits(model, scales, args.phases, coder)):
            append_row(args.out, {"image": name, "size": args.size, "quality": preset.quality, "iters": iters,
                                  "phases": args.phases, "fit_bits": round(fit_bits), "coded_bits": round(bits),
                                  "change": round(bits / fit_bits - 1, 5), "clamped": clamped, "seed": args.seed,
                                  "commit": git_commit(), "machine": machine_name("cpu")})


if __name__ == "__main__":
    main()
