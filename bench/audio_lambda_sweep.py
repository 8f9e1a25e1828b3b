"""First-fit rate and quality of format 4 audio against lambda: what the audio presets' ``rate`` comes from, and
what the rate model (``nxcodec.fit.rate_model``) predicts for it.

usage: python bench/audio_lambda_sweep.py ITERS SECONDS OUT.jsonl clip1,clip2 lam1,lam2,... [OPTIMIZER]

The middle SECONDS s of each clip of ../shared/data/audio (as ``nxcodec bench audio
--seconds``) is fitted once per lambda for ITERS iterations, started and scheduled as the
encoder's first fit (the clip's planes for every lambda in one stack, with per-plane
lambdas), coded by code_plane with no rate target,
written as a whole v4 stream and decoded; one JSON line per (clip, lambda), appended to OUT, with the
rate model's kbps for the latents (``model_kbps``), the networks' parameters (``params``) and the rate-distortion
cost the fit minimises (``cost``: the MSE of [0, 1] samples + lambda x bits per coefficient). OPTIMIZER
(``LatentSchedule.optimizer``: adam, the default, soap or soap-synthesis) fits the networks.
Run on one thread (OMP_NUM_THREADS=1).
"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
from nxcodec.bench.audio import load_clip
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit import latent_audio, latent_code, presets, rate_model
from nxcodec.fit.latent import LatentModel, fit
from nxcodec.latent import audio
from nxcodec.signals import for_name


def main() -> None:
    torch.set_num_threads(1)
    iters, seconds, out = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    clips, lams = sys.argv[4].split(","), [float(x) for x in sys.argv[5].split(",")]
    optimizer = sys.argv[6] if len(sys.argv) > 6 else "adam"
    A = for_name("audio")
    DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio"  # ../shared/data/audio
    preset = presets.AUDIO_LATENT_PRESETS[5]
    commit, machine = git_commit(), machine_name("cpu")
    for name in clips:
        sig = load_clip(DATA / f"{name}.wav", seconds)
        d = latent_audio.descriptor_for(sig.descriptor, sig.data)
        planes = latent_audio.planes_of(0, d)
        rows, cols = planes[0].size
        assert all(p.size == (rows, cols) for p in planes)
        cfg = latent_audio.config_for(preset, rows, cols)
        targets = [latent_audio.coefficients(p, d, sig.data) for p in planes]
        stack = [t for _ in lams for t in targets]
        lam_list = [l for l in lams for _ in targets]
        target = torch.stack([torch.from_numpy(t.reshape(-1, 1)).float() for t in stack])
        model = LatentModel(cfg, len(stack), (rows, cols), 1, seed=0)
        latent_audio.start_from_coefficients(model, stack, lam_list)
        t0 = time.perf_counter()
        fit(model, target, lam_list, latent_audio.first_schedule(iters, optimizer=optimizer), seed=0)
        fit_s = time.perf_counter() - t0
        for k, lam in enumerate(lams):
            t1 = time.perf_counter()
            bodies, params = [], 0
            for j in range(len(targets)):
                i = k * len(targets) + j
                weights = {n: t.detach().cpu().numpy() for n, t in model.coded_tensors(i).items()}
                params += sum(w.size for w in weights.values())
                latents = [lat[i].detach().cpu().numpy().astype(np.float64) for lat in model.latents]
                bodies.append(latent_code.code_audio_plane(targets[j], cfg, weights, latents, lam, None,
                                                           gain=float(model.input_gain[i])).data)
            data = audio.write(d, bodies)
            code_s = time.perf_counter() - t1
            decoded = audio.decode(data)[1]
            m = A.metrics(sig.data, decoded)
            model_bits = sum(rate_model.PlaneRate(t).bits(lam) for t in targets)
            mse = float(np.mean((decoded.astype(np.float64) - sig.data.astype(np.float64)) ** 2)) / 4
            row = {"clip": name, "lam": lam, "iters": iters, "seconds": seconds, "bytes": len(data),
                   "kbps": 8 * len(data) * d.sample_rate / d.frames / 1000, "psnr": m["psnr"], "seg_snr": m["seg_snr"],
                   "model_kbps": model_bits * d.sample_rate / d.frames / 1000, "params": params,
                   "cost": mse + lam * 8 * len(data) / (d.frames * d.channels), "optimizer": optimizer,
                   "fit_s_all_lams": fit_s, "code_s": code_s, "commit": commit,
                   "machine": machine}
            print(json.dumps(row), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
