"""Which input encoding for audio: a SIREN first layer over raw time, or octave Fourier features.

Fits 0.5 s of real speech (smstools_speech-female.wav from 1.0 s) at quality 6 with each
network shape given as ``encoding:frequency:experts`` (``sine:0.1:1`` is raw time with a
first-layer frequency of 0.1 rad/frame; ``fourier:14:1`` is 14 octave features with w0 30)
and prints the float and decoded PSNR and the rate of each.

    python bench/audio_shape.py ../shared/data/audio --iters 1000 sine:0.1:1 fourier:14:1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import soundfile as sf

from nxcodec.bench.image import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.model import ENCODING_FOURIER, ENCODING_SINE
from nxcodec.signals import audio as audio_mod
from nxcodec.signals import for_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("shapes", nargs="+")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--quality", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    audio = for_name("audio")
    x, sr = sf.read(args.data / "smstools_speech-female.wav", dtype="float32", always_2d=True)
    signal = audio.from_array(x[sr : sr + sr // 2], sr)
    rows = []
    for spec in args.shapes:
        kind, value, experts = spec.split(":")
        w = signal.descriptor.window
        if kind == "sine":
            shape = replace(audio_mod.AUDIO_SHAPE, encoding=ENCODING_SINE, n_freq=0, n_experts=int(experts),
                            w0_first=max(1, round(float(value) * w / 2)))
        else:
            shape = replace(audio_mod.AUDIO_SHAPE, encoding=ENCODING_FOURIER, n_freq=int(value),
                            n_experts=int(experts), w0_first=30)
        audio.network_shape = lambda d, s=shape: s  # this instance only
        t0 = time.perf_counter()
        res = encode_signal(audio, signal, EncodeOptions(quality=args.quality, iters=args.iters, device=args.device))
        row = {"shape": spec, "kbps": res.rate, "psnr": res.metrics["psnr"], "float_psnr": res.float_metrics["psnr"],
               "params": res.n_params, "seconds": time.perf_counter() - t0}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        meta = {"machine": machine_name(args.device), "commit": git_commit(), "iters": args.iters,
                "quality": args.quality, "clip": "smstools_speech-female.wav 1.0-1.5 s"}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
