"""Long audio in bounded memory: encode and decode a generated clip through the CLI, timed, with peak memory.

Generates a deterministic stereo clip (decaying partials, a melody, noise; ``--seconds``
long at ``--rate`` Hz, 16-bit WAV), runs ``nxcodec encode`` with a short fit
(``--iters``) and ``nxcodec decode`` in child processes, and records each one's wall
time and peak resident memory, the decoder's real-time factor, and the sizes. Fitting
is cut short on purpose: what is measured is everything around the fit (MDCT, coding,
the stream written and decoded), and whether memory grows with the clip.

    python bench/audio_long.py --seconds 120 --iters 3 --out bench/results/audio_long_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from nxcodec.bench.results import git_commit, machine_name


def clip(seconds: float, rate: int) -> np.ndarray:
    """``(frames, 2)`` float samples: a note every half second over a drone, with a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    note = 220 * 2 ** (np.floor(t * 2) % 12 / 12)  # a rising scale, one note per half second
    phase = 2 * np.pi * np.cumsum(note) / rate
    env = np.exp(-(t * 2 % 1) * 3)
    left = 0.3 * env * np.sin(phase) + 0.1 * np.sin(2 * np.pi * 110 * t)
    right = 0.25 * env * np.sin(phase + 0.3) + 0.1 * np.sin(2 * np.pi * 110 * t + 0.1)
    noise = np.random.default_rng(0).normal(0, 0.003, (t.size, 2))
    return np.stack([left, right], axis=1) + noise


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({status})")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="Clip length [120].")
    ap.add_argument("--rate", type=int, default=44100, help="Sample rate [44100].")
    ap.add_argument("--iters", type=int, default=3, help="Fitting iterations (kept short on purpose) [3].")
    ap.add_argument("--quality", type=int, default=5, help="nxcodec quality (no rate target: a 3-iteration fit "
                    "cannot meet one, its context model has not learnt to predict small scales yet) [5].")
    ap.add_argument("--device", default="cpu", help="Fitting device [cpu].")
    ap.add_argument("--out", type=Path, required=True, help="JSON to write.")
    args = ap.parse_args()
    commit = git_commit()
    with tempfile.TemporaryDirectory() as tmp:
        wav, nxc, dec = Path(tmp) / "long.wav", Path(tmp) / "long.nxc", Path(tmp) / "long.decoded.wav"
        sf.write(wav, clip(args.seconds, args.rate), args.rate, subtype="PCM_16")
        nx = [sys.executable, "-m", "nxcodec"]
        enc_s, enc_mb = run(nx + ["encode", str(wav), "-o", str(nxc), "--quality", str(args.quality), "--iters",
                                  str(args.iters), "--device", args.device])
        dec_s, dec_mb = run(nx + ["decode", str(nxc), "-o", str(dec)])
        info = sf.info(str(dec))
        result = {
            "machine": machine_name(args.device), "commit": commit, "seconds": args.seconds, "rate": args.rate, "channels": 2,
            "iters": args.iters, "quality": args.quality, "stream_bytes": nxc.stat().st_size,
            "kbps": 8 * nxc.stat().st_size / args.seconds / 1000, "wav_bytes": wav.stat().st_size,
            "encode_seconds": enc_s, "encode_peak_mb": enc_mb, "decode_seconds": dec_s, "decode_peak_mb": dec_mb,
            "decode_realtime_factor": args.seconds / dec_s, "decoded_frames": info.frames,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
