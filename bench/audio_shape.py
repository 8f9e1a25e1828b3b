"""Which input encoding and first-layer frequency for audio, measured by encoding.

Encodes an excerpt of one clip with each network shape given as
``encoding:value:experts`` (``sine:0.01:1`` is raw time into a SIREN first layer of
0.01 rad/frame with one expert; ``fourier:14:1`` is 14 octave Fourier features, w0 30)
and prints the decoded and float PSNR and the rate of each. Either at a quality
(``--quality``) or a rate target (``--kbps``).

    python bench/audio_shape.py ../shared/data/audio --clip smstools_speech-female.wav --start 1.0 \
        --seconds 0.5 --quality 6 --iters 1000 sine:0.1:1 fourier:14:1 sine:0.1:3
    python bench/audio_shape.py ../shared/data/audio --clip siren_gt_bach.wav --seconds 1.45 --kbps 32 \
        --iters 400 sine:0.1:1 sine:0.02:1 sine:0.01:1 sine:0.005:1 sine:0.002:1 fourier:16:1

(without ``--start`` the excerpt is the middle of the clip, as ``nxcodec bench audio --quick``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import soundfile as sf

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.model import ENCODING_FOURIER, ENCODING_SINE
from nxcodec.fit import presets
from nxcodec.signals import for_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("shapes", nargs="+")
    ap.add_argument("--clip", default="smstools_speech-female.wav")
    ap.add_argument("--start", type=float, help="excerpt start in seconds [default: centred]")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--quality", type=int, default=6)
    ap.add_argument("--kbps", type=float, help="rate target instead of --quality")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    audio = for_name("audio")
    x, sr = sf.read(args.data / args.clip, dtype="float32", always_2d=True)
    keep = min(len(x), int(args.seconds * sr))
    start = int(args.start * sr) if args.start is not None else (len(x) - keep) // 2
    signal = audio.from_array(x[start : start + keep], sr)
    rows = []
    for spec in args.shapes:
        kind, value, experts = spec.split(":")
        w = signal.descriptor.window
        if kind == "sine":
            shape = replace(presets.AUDIO_SHAPE, encoding=ENCODING_SINE, n_freq=0, n_experts=int(experts),
                            w0_first=max(1, round(float(value) * w / 2)))
        else:
            shape = replace(presets.AUDIO_SHAPE, encoding=ENCODING_FOURIER, n_freq=int(value),
                            n_experts=int(experts), w0_first=30)
        policy = presets.NETWORK_POLICIES["audio"]  # this process only
        presets.NETWORK_POLICIES["audio"] = replace(policy, network_shape=lambda d, s=shape: s)
        t0 = time.perf_counter()
        opts = EncodeOptions(quality=args.quality, rate=args.kbps, iters=args.iters, device=args.device)
        res = encode_signal(audio, signal, opts)
        row = {"shape": spec, "kbps": res.rate, "psnr": res.metrics["psnr"], "float_psnr": res.float_metrics["psnr"],
               "params": res.n_params, "seconds": time.perf_counter() - t0}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        meta = {"machine": machine_name(args.device), "commit": git_commit(), "iters": args.iters,
                "quality": args.quality, "kbps": args.kbps, "clip": args.clip, "start": start / sr,
                "seconds": keep / sr}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
