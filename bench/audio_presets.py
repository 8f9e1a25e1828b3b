"""The audio presets' lambdas (nxcodec.fit.presets.AUDIO_LATENT_PRESETS), derived from measured first fits.

usage: python bench/audio_presets.py [SWEEP.jsonl] [SPAN.jsonl]

Two files of bench/audio_lambda_sweep.py rows (defaults under bench/results/):

- the sweep (``audio_lambda_sweep_v9_cpu.jsonl``): three clips at many lambdas, the shape of the
  rate curve;
- the span (``audio_quality_span_v9_cpu.jsonl``): the other seven benchmark clips (and, at
  some lambdas, the three again) at a few lambdas near the ends of the range; with the sweep's
  rows it gives the level of the curve on all ten clips.

The ten-clip mean rate at a lambda is estimated as the three-clip mean (log-log interpolated
between the sweep's lambdas) times the ten-clip / three-clip ratio, which is measured at the
span's lambdas and interpolated linearly in log lambda between them (held outside). Quality q
aims at 8 * sqrt(2)**(q - 1) kbps (8 to 128); its lambda, rounded to two digits, is found by
bisection. Prints each measured ratio and then the preset table; nothing is written.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def mean_rates(paths: list[Path], clips: int) -> dict[float, float]:
    """Mean kbps per lambda over the lambdas measured on ``clips`` distinct clips (the last row of a clip wins)."""
    rows: dict[float, dict[str, float]] = defaultdict(dict)
    for path in paths:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows[r["lam"]][r["clip"]] = r["kbps"]
    return {lam: sum(v.values()) / len(v) for lam, v in sorted(rows.items()) if len(v) == clips}


def interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear interpolation of ``ys`` over increasing ``xs``, held constant outside them."""
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def main() -> None:
    sweep_path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "audio_lambda_sweep_v9_cpu.jsonl"
    span_path = Path(sys.argv[2]) if len(sys.argv) > 2 else RESULTS / "audio_quality_span_v9_cpu.jsonl"
    sweep, span = mean_rates([sweep_path], 3), mean_rates([sweep_path, span_path], 10)
    log_lams = [math.log(l) for l in sweep]
    log_rates = [math.log(r) for r in sweep.values()]

    def three_clip(lam: float) -> float:
        if not min(sweep) <= lam <= max(sweep):
            raise SystemExit(f"lambda {lam:g} is outside the sweep ({min(sweep):g} .. {max(sweep):g})")
        return math.exp(interp(math.log(lam), log_lams, log_rates))

    ratio_lams = [math.log(l) for l in span]
    ratios = [span[l] / three_clip(l) for l in span]
    for lam, r in zip(span, ratios):
        print(f"lambda {lam:g}: ten clips {span[lam]:.1f} kbps, three clips {three_clip(lam):.1f}: ratio {r:.3f}")

    def ten_clip(lam: float) -> float:
        return three_clip(lam) * interp(math.log(lam), ratio_lams, ratios)

    print("quality  lambda    estimated ten-clip kbps")
    for q in range(1, 10):
        target = 8 * math.sqrt(2) ** (q - 1)
        lo, hi = math.log(min(sweep)), math.log(max(sweep))  # the rate falls as lambda grows
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if ten_clip(math.exp(mid)) < target else (mid, hi)
        lam = float(f"{math.exp(lo):.2g}")
        print(f"{q:7d}  {lam:<8.2g}  {ten_clip(lam):6.1f}")


if __name__ == "__main__":
    main()
