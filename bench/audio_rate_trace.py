"""What the audio encoder's rate control does under ``--kbps``, fit by fit and plane by plane.

    python bench/audio_rate_trace.py smstools_orchestra,smstools_piano --kbps 24 [--rate-first 0.9] [--out FILE]

The clips of ../shared/data/audio are encoded together, as ``nxcodec bench audio --group N`` fits them, on one
thread (as a benchmark worker). Each line says what happened: an attempt at the clips (with each clip's lambda
over its rate plan's), a fit (its iterations and the planes' lambdas), a coded plane (its bits over its share of
the target, its mean squared error, whether trimming was allowed) or a plane over its share, the clips that
missed, and each clip's final rate and PSNR. ``--rate-first`` overrides ``RATE_FIRST`` (the part of the target
the first fit aims at) for the run. The lines are printed and, with ``--out``, written there after a header
naming the commit and machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nxcodec import signals
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions
from nxcodec.fit import latent_audio

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio"


def traced(lines: list[str]) -> None:
    """Wrap the encoder's fitting, coding and attempts so that each appends its line to ``lines``."""
    fit, code, attempt = latent_audio._fit, latent_audio.code_in_parallel, latent_audio._encode_clips

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    def traced_fit(model, target, lams, schedule, seed, device):
        say(f"  fit {schedule.iters} iterations, lambdas {' '.join(f'{lam:.3e}' for lam in lams)}")
        return fit(model, target, lams, schedule, seed, device)

    def traced_code(jobs, workers=1, coder=None):
        out = code(jobs, workers, coder)
        for job, res in zip(jobs, out):
            lam, share, trim = job[4], job[5], job[6]
            if hasattr(res, "data"):
                say(f"    plane coded: {8 * len(res.data)} bits, {8 * len(res.data) / share:.3f} of its share; "
                    f"mse {res.mse:.4e}; lambda {lam:.3e}; trimming {'allowed' if trim else 'not allowed'}")
            else:
                say(f"    plane not coded: {res} ({getattr(res, 'bits', 0) / share:.3f} of its share); lambda {lam:.3e}")
        return out

    def traced_attempt(*args):
        say(f"attempt: clips {args[3]}, lambda over the plan's {args[5]}")
        missed = attempt(*args)
        say(f"  missed (clip, overshoot): {missed}")
        return missed

    latent_audio._fit, latent_audio.code_in_parallel, latent_audio._encode_clips = traced_fit, traced_code, traced_attempt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", help="clip names of ../shared/data/audio (without .wav), comma-separated")
    ap.add_argument("--kbps", type=float, required=True, help="rate target")
    ap.add_argument("--rate-first", type=float, help="RATE_FIRST for this run [default: the encoder's]")
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the clips [default: ../shared/data/audio]")
    ap.add_argument("--out", type=Path, help="also write the trace here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.rate_first is not None:
        latent_audio.RATE_FIRST = args.rate_first
    lines = [f"# commit {git_commit()}, {machine_name('cpu')}, {args.clips} at {args.kbps} kbps, "
             f"RATE_FIRST {latent_audio.RATE_FIRST}"]
    traced(lines)
    audio = signals.for_name("audio")
    names = args.clips.split(",")
    t0 = time.perf_counter()
    results = latent_audio.encode_audio(audio, [audio.read(args.data / f"{n}.wav") for n in names],
                                        EncodeOptions(rate=args.kbps, device="cpu", seed=0))
    for name, res in zip(names, results):
        lines.append(f"{name}: {res.rate:.2f} kbps, {audio.summary(res.metrics)}")
        print(lines[-1])
    lines.append(f"{time.perf_counter() - t0:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
