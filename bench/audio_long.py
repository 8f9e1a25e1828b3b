"""Long audio in bounded memory: encode and decode generated clips through the CLI, timed, with peak memory.

For each length in ``--seconds`` (comma-separated), generates a deterministic stereo clip
(decaying partials, a melody, noise; 16-bit WAV at ``--rate`` Hz), runs ``nxcodec encode``
with a short fit (``--iters``) and ``nxcodec decode`` in child processes, and records each
one's wall time and peak resident memory, the decoder's real-time factor, the sizes and
the stream version. Fitting is cut short on purpose: what is measured is everything
around the fit (MDCT, coding, the stream written and decoded), and whether memory grows
with the clip. ``--iters 0`` runs the presets' fit instead, a user's encode (with
``--kbps``, under a rate target): how long a one-minute clip takes on a GPU.

``--decode-segments`` (comma-separated counts) adds decode-only rows: a mono 44.1 kHz
stream of that many 12-second segments, every plane the same coded body (a 7-level
plane of 2^19 coefficients, sparse latents, fixed seed), decoded by ``nxcodec decode``.
It reaches lengths whose encode would take hours on a CPU, version 10's included (more
than 2^27 samples: 256 segments and up).

    python bench/audio_long.py --seconds 60,300,900 --iters 1 --decode-segments 24,300 \
        --out bench/results/audio_long_cpu_v10.json
    python bench/audio_long.py --seconds 60 --iters 0 --kbps 32 --device cuda --out OUT.json
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
from nxcodec.signals.audio import audio_metrics

POLL = 0.05  # seconds between memory samples


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


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and all its descendants now (Linux /proc; 0 once it has gone)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24 of stat: rss in pages
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one child process and its workers together.

    The memory is sampled every ``POLL`` s over the process tree. (The child's ``ru_maxrss``
    would not do: Linux carries the parent's high-water mark into a child started by
    vfork or fork and exec, so it grew with the clip this script generated.)
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(POLL)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode})")
    return seconds, peak / 2**20


def quality(original: Path, decoded: Path) -> dict[str, float]:
    """PSNR (peak-to-peak 2), SNR and segmental SNR of the decoded clip, in dB."""
    a, b = (sf.read(str(p), dtype="float64", always_2d=True)[0] for p in (original, decoded))
    m = audio_metrics(a, b)
    return {"psnr_db": m["psnr"], "snr_db": m["snr"], "seg_snr_db": m["seg_snr"]}


def synthetic_stream(segments: int) -> bytes:
    """A mono 44.1 kHz latent audio stream of ``segments`` equal segments, every plane one fixed coded body."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import audio, context, stream
    from nxcodec.latent.stream import LatentConfig

    cfg = LatentConfig(levels=7, arm_width=16, arm_layers=2, n_experts=1, mgr_width=0, syn_width=16, syn_layers=2,
                       refine_width=0, lanes_log2=3)
    rows, hop_log2 = 512, 10
    rng = np.random.default_rng(0)
    weights = {n: rng.normal(0, 0.3, s).astype(np.float32) for n, s in cfg.tensor_shapes(1).items()}
    for name in weights:
        if name.startswith("arm") and ".out." in name:  # context models predicting mean 0 at the smallest scale
            weights[name][:] = 0 if name.endswith("weight") else np.array([0.0, -1000.0])
    latents = [rng.integers(-2, 3, size) * (rng.random(size) < 0.01)
               for size in context.level_sizes((rows, 1 << hop_log2), cfg.levels)]
    body, _ = stream.write_body(cfg, 1, quantize_networks(weights, 7, 5), [g.astype(np.float64) for g in latents],
                                audio.VERSION)
    frames = segments * rows * (1 << hop_log2) - (1 << hop_log2)  # exactly ``segments`` segments of ``rows`` frames
    d = audio.AudioLatentDescriptor(frames, 44100, 1, 0, hop_log2, audio.STEREO_NONE, rows)
    return audio.write(d, [body] * segments)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", default="120", help="Clip lengths in seconds, comma-separated [120].")
    ap.add_argument("--rate", type=int, default=44100, help="Sample rate [44100].")
    ap.add_argument("--iters", type=int, default=3, help="Fitting iterations (kept short on purpose); 0: the "
                    "presets' own, what a user's encode runs [3].")
    ap.add_argument("--quality", type=int, default=5, help="nxcodec quality, when no --kbps is given [5].")
    ap.add_argument("--kbps", type=float, default=None, help="Rate target instead of --quality (a fit of a few "
                    "iterations cannot meet one: its context model has not learnt to predict small scales yet).")
    ap.add_argument("--device", default="cpu", help="Fitting device [cpu].")
    ap.add_argument("--decode-segments", default="", help="Decode-only rows: synthetic streams of this many "
                    "12 s segments, comma-separated [none].")
    ap.add_argument("--out", type=Path, required=True, help="JSON to write.")
    args = ap.parse_args()
    commit = git_commit()
    nx = [sys.executable, "-m", "nxcodec"]
    target = ["--quality", str(args.quality)] if args.kbps is None else ["--kbps", str(args.kbps)]
    iters = ["--iters", str(args.iters)] if args.iters else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wav, nxc, dec = Path(tmp) / "long.wav", Path(tmp) / "long.nxc", Path(tmp) / "long.decoded.wav"
        for seconds in (float(x) for x in args.seconds.split(",") if x):
            sf.write(wav, clip(seconds, args.rate), args.rate, subtype="PCM_16")
            enc_s, enc_mb = run(nx + ["encode", str(wav), "-o", str(nxc), *target, *iters, "--device", args.device,
                                      "--force"])
            print(f"encoded {seconds:g} s in {enc_s:.1f} s on {args.device}", flush=True)  # kept if the call ends here
            dec_s, dec_mb = run(nx + ["decode", str(nxc), "-o", str(dec), "--force"])
            rows.append({
                "kind": "encode+decode", "seconds": seconds, "rate": args.rate, "channels": 2,
                "version": nxc.read_bytes()[4], "stream_bytes": nxc.stat().st_size,
                "kbps": 8 * nxc.stat().st_size / seconds / 1000, "wav_bytes": wav.stat().st_size,
                "encode_seconds": enc_s, "encode_peak_mb": enc_mb, "decode_seconds": dec_s, "decode_peak_mb": dec_mb,
                "decode_realtime_factor": seconds / dec_s, "decoded_frames": sf.info(str(dec)).frames,
                **quality(wav, dec),
            })
            print(json.dumps(rows[-1]), flush=True)
        wav.unlink(missing_ok=True)
        for segments in (int(x) for x in args.decode_segments.split(",") if x):
            data = synthetic_stream(segments)
            nxc.write_bytes(data)
            dec_s, dec_mb = run(nx + ["decode", str(nxc), "-o", str(dec), "--force"])
            frames = sf.info(str(dec)).frames
            rows.append({"kind": "decode", "segments": segments, "seconds": frames / 44100, "rate": 44100,
                         "channels": 1, "version": data[4], "stream_bytes": len(data), "decode_seconds": dec_s,
                         "decode_peak_mb": dec_mb, "decode_realtime_factor": frames / 44100 / dec_s,
                         "decoded_frames": frames})
            print(json.dumps(rows[-1]), flush=True)
            dec.unlink()
    result = {"machine": machine_name(args.device), "commit": commit, "iters": args.iters or "presets'",
              **({"quality": args.quality} if args.kbps is None else {"kbps_target": args.kbps}), "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
