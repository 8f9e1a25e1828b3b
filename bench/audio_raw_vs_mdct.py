"""Raw waveform against MDCT coefficients as the plane a latent codec codes: same machinery, lambda and fit.

The raw clip is laid out as a (rows, 1024) raster plane (consecutive samples along a
row); the MDCT plane is frames x 1024 coefficients (hop 1024). Both are fitted for 300
iterations at one lambda on the first 3 s and coded by the audio plane coder; the
rate counts the plane's whole body. ``--out`` appends one JSON line per plane, with the
commit and the machine.

    python bench/audio_raw_vs_mdct.py siren_gt_bach 1.6e-4 --out results.jsonl
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit.latent_code import code_audio_plane
from nxcodec.latent import mdct
from nxcodec.latent.stream import LatentConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip", help="a clip of ../shared/data/audio, without .wav")
    ap.add_argument("lam", type=float, help="the fit's lambda")
    ap.add_argument("--out", type=Path, help="append one JSON line per plane to this file")
    args = ap.parse_args()
    clip, lam, commit = args.clip, args.lam, git_commit()
    x, sr = sf.read(f'../shared/data/audio/{clip}.wav', dtype='float64')
    x = x[: 3 * sr]
    for kind in ("raw", "mdct"):
        if kind == "raw":
            n = -(-len(x) // 1024) * 1024
            plane = np.zeros(n); plane[: len(x)] = x; plane = plane.reshape(-1, 1024)
        else:
            plane = mdct.forward(x, 1024)
        cfg = LatentConfig(5, 16, 2, 1, 0, 16, 2, 0, 4)
        m = LatentModel(cfg, 1, plane.shape, 1, seed=0)
        t = time.time()
        fit(m, torch.tensor(plane.reshape(1, -1, 1), dtype=torch.float32), lam, LatentSchedule(iters=300))
        weights = {k: v.detach().numpy() for k, v in m.coded_tensors(0).items()}
        lat = [l[0].detach().numpy().astype(np.float64) for l in m.latents]
        c = code_audio_plane(plane, cfg, weights, lat, lam, None)
        vals = c.samples
        y = vals.reshape(-1)[: len(x)] if kind == "raw" else np.concatenate([mdct.Inverse(1024).push(vals)])[: len(x)]
        mse = np.mean((np.clip(y, -1, 1) - x) ** 2)
        kbps, psnr, seconds = 8 * len(c.data) / 3 / 1000, 10 * np.log10(4 / mse), time.time() - t
        print(clip, kind, f"lam {lam}: {kbps:.2f} kbps PSNR {psnr:.2f} dB ({seconds:.0f}s)", flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps({"clip": clip, "plane": kind, "lam": lam, "iters": 300, "seconds_of_audio": 3,
                                    "kbps": kbps, "psnr": psnr, "fit_and_code_s": seconds, "commit": commit,
                                    "machine": machine_name("cpu")}) + "\n")


if __name__ == "__main__":
    main()
