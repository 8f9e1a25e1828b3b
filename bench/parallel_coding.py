"""How long coding a fitted stack of images takes in one process and in several (``EncodeOptions.coding_workers``).

Fits Kodak crops side by side (short fits: coding time hardly depends on the fit's length),
then codes the stack with each ``--workers`` count in turn, ``--repeats`` times, checking
that every count writes the same streams. One JSON line per coding is appended to
``--out``: workers, seconds, the streams' total bytes, the commit and the machine.

    python bench/parallel_coding.py ../shared/data/kodak --images 1,2,3,4 --size 512 --qualities 5 \\
        --iters 50 --workers 1,2 --out bench/results/parallel_coding_cpu.jsonl
"""

from __future__ import annotations

import time

import numpy as np

from optimizer_ablation import append_row, crop_parser, kodak_crops, settings
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit.latent_code import code_in_parallel


def main() -> None:
    ap = crop_parser(__doc__.splitlines()[0], "100")
    ap.add_argument("--workers", default="1,2", help="Process counts to code with, comma-separated [1,2].")
    ap.add_argument("--repeats", type=int, default=2, help="Codings per process count, interleaved [2].")
    args = ap.parse_args()
    names, signals, target = kodak_crops(args)
    d = signals[0].descriptor
    for iters, preset, cfg in settings(args, d):
        model = LatentModel(cfg, len(signals), (d.height, d.width), d.channels, seed=args.seed)
        fit(model, target, preset.lam, LatentSchedule.for_preset(preset, iters), seed=args.seed)
        jobs = [(d, cfg, {n: t.detach().numpy() for n, t in model.coded_tensors(j).items()},
                 [lat[j].detach().numpy().astype(np.float64) for lat in model.latents], sig.data, preset.lam, None,
                 False) for j, sig in enumerate(signals)]
        streams = None
        for _ in range(args.repeats):
            for workers in (int(v) for v in args.workers.split(",")):
                t0 = time.perf_counter()
                coded = code_in_parallel(jobs, workers)
                seconds = time.perf_counter() - t0
                data = [c.data for c in coded]
                if streams is not None and data != streams:
                    raise SystemExit(f"{workers} workers wrote other streams than the first coding")
                streams = data
                append_row(args.out, {"images": names, "size": f"{d.width}x{d.height}", "quality": preset.quality,
                                      "iters": iters, "workers": workers, "seconds": round(seconds, 2),
                                      "bytes": sum(map(len, data)), "commit": git_commit(),
                                      "machine": machine_name("cpu")})


if __name__ == "__main__":
    main()
