"""The audio benchmark: nxcodec at several rates against MP3, Opus and FLAC, in one run.

Baselines go through soundfile (libsndfile) and are measured fairly:

- MP3 (constant bitrate, LAME through libsndfile): libsndfile does not remove the
  encoder's delay (about 1105 samples at 44.1 kHz below 56 kbps), so every lossy decode
  is re-aligned to the original by the lag (within +-``MAX_LAG`` frames) that minimises
  the squared error before any metric is computed.
- Opus only takes 8/12/16/24/48 kHz: the clip is resampled to 48 kHz (polyphase,
  scipy), coded, decoded and resampled back to the clip's rate; the resampling is part
  of what Opus costs here.
- FLAC is the lossless reference line (its size only). FLAC holds integers: float
  clips are stored as 24-bit PCM.

Every lossy point is scored by PSNR, SNR, segmental SNR and ESTOI (:func:`estoi`), a
band-limited measure of how well the decoded signal keeps the original's envelopes.

nxcodec fits every clip of one rate target together (``group`` clips per
``encode_signals`` call: all of them on a GPU, one on a CPU): the windows of all those
clips are networks of one family, so they share one stack and a GPU runs one fit for
them all. The baselines run in worker processes meanwhile (on a GPU machine).

Every (clip, codec, level) point is appended to ``OUT/points.jsonl`` as soon as it is
measured, so an interrupted run resumes; the summaries are rewritten after every group
of fits. The summary is one JSON per codec in the shared (CompressAI-style) layout with
``kbps`` as the rate, a per-clip CSV, the RD plot and a BD-rate / BD-PSNR table.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch
from pystoi import stoi
from scipy.signal import fftconvolve, resample_poly

from nxcodec.bench.bdrate import bd_psnr, bd_rate
from nxcodec.bench.results import failure_lines, git_commit, machine_name, write_json
from nxcodec.bench.runner import (
    PointStore,
    default_workers,
    encode_and_decode,
    grouped_rounds,
    on_gpu,
    run_points,
)
from nxcodec.codec import EncodeOptions, resolve_device
from nxcodec.io import write_bytes_atomic
from nxcodec.signals import for_name
from nxcodec.signals.audio import audio_metrics

NXC_KBPS = (8.0, 12.0, 16.0, 24.0, 32.0, 48.0)
# libsndfile compression levels: MP3 constant bitrate 32..128 kbps at 44.1 kHz (MPEG-1 goes no lower);
# Opus about 10..134 kbps.
MP3_LEVELS = (0.99, 0.96, 0.94, 0.9, 0.8, 0.7)
OPUS_LEVELS = (0.99, 0.97, 0.95, 0.92, 0.9, 0.85, 0.8, 0.7, 0.5)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MAX_LAG = 4096
TOO_SHORT = 1e-5  # what pystoi's ESTOI returns for a clip with too few non-silent frames
DESCRIPTIONS = {
    "nxcodec": "nxcodec (Neural-Experts INR over time, windows of up to 65536 frames, quantized and range-coded), --kbps targets",
    "mp3": "MP3, LAME through libsndfile, constant bitrate, delay removed by best-lag alignment",
    "opus": "Opus in Ogg through libsndfile, at 48 kHz (resampled in and out with scipy resample_poly)",
    "flac": "FLAC through libsndfile, lossless (float clips as 24-bit PCM): size only",
}
FIELDS = {"kbps": "kbps", "psnr": "psnr", "snr": "snr", "seg_snr": "seg_snr", "estoi": "estoi",
          "encode_seconds": "encoding_time", "decode_seconds": "decoding_time"}


@dataclass
class AudioBenchConfig:
    """What to run."""

    src: Path
    out: Path
    kbps: tuple[float, ...] = NXC_KBPS
    iters: int | None = None
    device: str = "auto"
    max_clips: int | None = None
    max_seconds: float | None = None  # keep the middle N seconds of every clip
    group: int | None = None  # clips fitted together per rate (default: all on a GPU, one on a CPU)
    workers: int | None = None  # processes measuring the baselines (default: all cores but one on a GPU machine)

    @classmethod
    def quick(cls, src: Path, out: Path, device: str = "auto") -> "AudioBenchConfig":
        """A CPU-sized run: the middle 1.45 s (one window) of every clip, 4 rates, 400-iteration fits."""
        return cls(src, out, kbps=(16.0, 24.0, 32.0, 48.0), iters=400, device=device, max_seconds=1.45)


def list_clips(cfg: AudioBenchConfig) -> list[Path]:
    audio = for_name("audio")
    paths = sorted(p for p in cfg.src.iterdir() if p.suffix.lower() in audio.extensions)
    return paths[: cfg.max_clips] if cfg.max_clips else paths


def load_clip(path: Path, max_seconds: float | None):
    """The clip as a signal, or its middle ``max_seconds`` (several clips open with silence)."""
    audio = for_name("audio")
    signal = audio.read(path)
    if max_seconds:
        d = signal.descriptor
        keep = min(d.frames, int(max_seconds * d.sample_rate))
        start = (d.frames - keep) // 2
        signal = audio._signal(signal.data[start : start + keep], d.sample_rate, d.sample_format)
    return signal


def align(original: np.ndarray, decoded: np.ndarray, max_lag: int = MAX_LAG) -> tuple[np.ndarray, int]:
    """``decoded`` shifted by the lag in [-max_lag, max_lag] that minimises the squared error, cut to length.

    A positive lag means the decoder's output is late by that many frames (frames that
    the shift leaves uncovered count as zeros).
    """
    n = len(original)
    x = original.astype(np.float64)
    y = np.zeros_like(x)
    m = min(len(decoded), n + max_lag)
    y_full = np.zeros((n + max_lag, x.shape[1]))
    y_full[:m] = decoded[:m]
    best_lag, best_err = 0, math.inf
    # err(lag) = sum x^2 + sum y[lag:lag+n]^2 - 2 sum x * y[lag:lag+n], for lag >= 0 (late decoders);
    # early ones (lag < 0) are checked directly on a few candidates.
    corr = sum(fftconvolve(y_full[:, c], x[::-1, c], mode="valid") for c in range(x.shape[1]))
    e2 = np.concatenate([[0.0], np.cumsum(np.sum(y_full**2, axis=1))])
    lags = np.arange(len(corr))
    err = e2[lags + n] - e2[lags] - 2 * corr
    best_lag = int(np.argmin(err))
    best_err = float(err[best_lag])
    for lag in range(-8, 0):
        cand = np.zeros_like(x)
        cand[-lag:] = decoded[: n + lag]
        e = float(np.sum(cand**2) - 2 * np.sum(cand * x))
        if e < best_err:
            best_lag, best_err = lag, e
    if best_lag >= 0:
        y[: min(n, m - best_lag)] = y_full[best_lag : best_lag + n][: max(0, m - best_lag)]
    else:
        y[-best_lag:] = decoded[: n + best_lag]
    return y.astype(np.float32), best_lag


def _sndfile_roundtrip(data: np.ndarray, rate: int, fmt: str, subtype: str, level: float | None,
                       **kwargs) -> tuple[int, np.ndarray, float, float]:
    """Bytes, decoded samples, encode and decode seconds of one libsndfile format."""
    buf = io.BytesIO()
    buf.name = f"clip.{fmt.lower()}"
    t0 = time.perf_counter()
    extra = {} if level is None else {"compression_level": level}
    sf.write(buf, data, rate, format=fmt, subtype=subtype, **extra, **kwargs)
    encode_seconds = time.perf_counter() - t0
    n_bytes = len(buf.getvalue())
    buf.seek(0)
    t0 = time.perf_counter()
    decoded, _ = sf.read(buf, dtype="float32", always_2d=True)
    return n_bytes, decoded, encode_seconds, time.perf_counter() - t0


def mp3_point(data: np.ndarray, rate: int, level: float) -> dict:
    n_bytes, decoded, enc_s, dec_s = _sndfile_roundtrip(data, rate, "MP3", "MPEG_LAYER_III", level,
                                                        bitrate_mode="CONSTANT")
    aligned, lag = align(data, decoded)
    return _point(data, rate, aligned, n_bytes, enc_s, dec_s, lag=lag)


def opus_point(data: np.ndarray, rate: int, level: float) -> dict:
    up = 48000 if rate not in OPUS_RATES else rate
    g = math.gcd(up, rate)
    t0 = time.perf_counter()
    resampled = resample_poly(data, up // g, rate // g, axis=0).astype(np.float32) if up != rate else data
    resample_s = time.perf_counter() - t0
    n_bytes, decoded, enc_s, dec_s = _sndfile_roundtrip(np.clip(resampled, -1, 1), up, "OGG", "OPUS", level)
    t0 = time.perf_counter()
    back = resample_poly(decoded, rate // g, up // g, axis=0).astype(np.float32) if up != rate else decoded
    back_s = time.perf_counter() - t0
    aligned, lag = align(data, back)
    return _point(data, rate, aligned, n_bytes, enc_s + resample_s, dec_s + back_s, lag=lag)


def flac_point(data: np.ndarray, rate: int, subtype: str) -> dict:
    sub = subtype if subtype in ("PCM_16", "PCM_24", "PCM_S8") else "PCM_24"
    n_bytes, decoded, enc_s, dec_s = _sndfile_roundtrip(data, rate, "FLAC", sub, None)
    return _point(data, rate, decoded[: len(data)], n_bytes, enc_s, dec_s)


def estoi(original: np.ndarray, decoded: np.ndarray, rate: int) -> float | None:
    """Extended short-time objective intelligibility (Jensen and Taal, 2016; the pystoi implementation), the mean
    over channels: how well the decoded signal keeps the envelopes of 15 third-octave bands from 150 Hz to 4.3 kHz
    (both resampled to 10 kHz, silent frames dropped), from 0 to 1. Unlike PSNR it weighs the bands alike and
    ignores what lies above 4.3 kHz; made for speech, it nears 1 above about 30 dB SNR. None for a clip with
    fewer than 30 non-silent frames of 25.6 ms."""
    x = np.asarray(original, dtype=np.float64).reshape(len(original), -1)
    y = np.asarray(decoded, dtype=np.float64).reshape(len(decoded), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pystoi warns, and returns exactly 1e-5, on too few frames
        values = [float(stoi(x[:, c], y[:, c], rate, extended=True)) for c in range(x.shape[1])]
    if TOO_SHORT in values:
        return None
    return float(np.mean(values))


def _point(data: np.ndarray, rate: int, decoded: np.ndarray, n_bytes: int, enc_s: float, dec_s: float,
           **extra) -> dict:
    m = audio_metrics(data, decoded)
    return {"bytes": n_bytes, "kbps": 8.0 * n_bytes * rate / len(data) / 1000.0, "psnr": m["psnr"], "snr": m["snr"],
            "seg_snr": m["seg_snr"], "estoi": estoi(data, decoded, rate), "encode_seconds": enc_s,
            "decode_seconds": dec_s, "device": "cpu", **extra}


def nxcodec_points(names: list[str], signals: list, kbps: float, cfg: AudioBenchConfig) -> list[dict]:
    """Encode several clips together at one rate target; decode each on the fitting device and measure it."""
    audio = for_name("audio")
    opts = EncodeOptions(rate=kbps, iters=cfg.iters, device=cfg.device, coding_workers=None)
    points = []
    coded = encode_and_decode(audio, signals, opts, str(resolve_device(cfg.device)))
    for name, signal, (res, decoded, decode_seconds) in zip(names, signals, coded):
        m = audio.metrics(signal.data, decoded)
        d = signal.descriptor
        points.append({"clip": name, "codec": "nxcodec", "level": kbps, "seconds": d.frames / d.sample_rate,
                       "bytes": len(res.data), "kbps": res.rate, "psnr": m["psnr"], "snr": m["snr"],
                       "seg_snr": m["seg_snr"], "estoi": estoi(signal.data, decoded, d.sample_rate),
                       "float_psnr": res.float_metrics["psnr"],
                       "encode_seconds": res.encode_seconds, "decode_seconds": decode_seconds, "device": res.device,
                       "params": res.n_params, "sections": len(res.configs), "fitted_together": len(signals)})
    return points


def baseline_point(path: Path, max_seconds: float | None, codec: str, level: float) -> dict:
    """One MP3, Opus or FLAC point (a top-level function so that worker processes can run it)."""
    signal = load_clip(path, max_seconds)
    data, rate = signal.data, signal.descriptor.sample_rate
    if codec == "mp3":
        point = mp3_point(data, rate, level)
    elif codec == "opus":
        point = opus_point(data, rate, level)
    else:
        point = flac_point(data, rate, signal.descriptor.subtype)
    point.update(clip=path.stem, codec=codec, level=level, seconds=len(data) / rate)
    return point


def run(cfg: AudioBenchConfig, log: Callable[[str], None] = print) -> dict:
    """Measure every missing point, then write the summaries; returns the BD table.

    Rate targets run in turn; each fits ``group`` clips at a time together (all clips on a
    GPU by default) while the baselines run in worker processes
    (:func:`nxcodec.bench.runner.run_points`).
    """
    store = PointStore(cfg.out / "points.jsonl", ("clip", "codec", "level"))
    paths = list_clips(cfg)
    baselines = [("flac", 0.0)] + [("mp3", lv) for lv in MP3_LEVELS] + [("opus", lv) for lv in OPUS_LEVELS]
    jobs = [(p, cfg.max_seconds, c, lv) for p in paths for c, lv in baselines if (p.stem, c, lv) not in store]
    size = cfg.group or (len(paths) if on_gpu(cfg.device) else 1)
    rounds = grouped_rounds(cfg.kbps, paths, size, lambda p, kbps: (p.stem, "nxcodec", kbps) in store,
                            lambda chunk, kbps: nxcodec_points([p.stem for p in chunk],
                                                               [load_clip(p, cfg.max_seconds) for p in chunk], kbps, cfg),
                            lambda p, kbps: {"clip": p.stem, "codec": "nxcodec", "level": kbps})

    def report(point: dict) -> None:
        log(f"{point['clip']} nxcodec {point['level']:g} kbps: {point['kbps']:.2f} kbps, {point['psnr']:.2f} dB "
            f"(float {point['float_psnr']:.2f}), encode {point['encode_seconds']:.1f} s/clip on "
            f"{point['device']} ({point['fitted_together']} together)")

    run_points(store, baseline_point, jobs, rounds, default_workers(cfg.device, cfg.workers),
               after_round=lambda: summarise(cfg, store.values(), store.failures()), log=report)
    return summarise(cfg, store.values(), store.failures())


def curve(name: str, points: list[dict]) -> dict:
    """Means over the clips per level, in the shared layout (levels by ascending rate)."""
    levels: dict[float, list[dict]] = {}
    for p in points:
        levels.setdefault(p["level"], []).append(p)
    order = sorted(levels, key=lambda lv: np.mean([p["kbps"] for p in levels[lv]]))
    results: dict[str, list] = {"level": order}
    for field, key in FIELDS.items():
        values = [[p.get(field) for p in levels[lv]] for lv in order]  # points of older runs lack "estoi"
        results[key] = [float(np.mean(v)) if all(x is not None and math.isfinite(x) for x in v) else None
                        for v in values]
    results["clips"] = [len(levels[lv]) for lv in order]
    return {"name": name, "description": DESCRIPTIONS[name], "results": results}


def summarise(cfg: AudioBenchConfig, points: list[dict], failures: list[dict] = ()) -> dict:
    """Per-codec JSONs, the per-clip CSV, the RD plot, the BD table and the run's metadata; ``failures`` (points
    nxcodec could not code) are listed under the table, and the means of their levels leave them out."""
    names = {p.stem for p in list_clips(cfg)}
    points = [p for p in points if p["clip"] in names]
    failures = [p for p in failures if p["clip"] in names]
    curves = {}
    for codec in ("nxcodec", "mp3", "opus", "flac"):
        mine = [p for p in points if p["codec"] == codec]
        if mine:
            curves[codec] = curve(codec, mine)
            write_json(cfg.out / f"{codec}.json", curves[codec])
    cols = ["clip", "codec", "level", "seconds", "bytes", "kbps", "psnr", "snr", "seg_snr", "estoi", "float_psnr", "lag",
            "encode_seconds", "decode_seconds", "device"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for p in sorted(points, key=lambda p: (p["clip"], p["codec"], p["level"])):
        w.writerow(p)
    write_bytes_atomic(cfg.out / "per_clip.csv", buf.getvalue().encode(), force=True)
    devices = sorted({p["device"] for p in points if p["codec"] == "nxcodec"})
    meta = {"machine": machine_name(cfg.device), "nxcodec_devices": devices, "commit": git_commit(),
            "torch": torch.__version__, "libsndfile": sf.__libsndfile_version__, "clips": sorted(names),
            "iters": cfg.iters, "kbps": list(cfg.kbps), "max_seconds": cfg.max_seconds, "group": cfg.group}
    write_json(cfg.out / "meta.json", meta)
    table = {}
    lines = ["| against | BD-rate (nxcodec vs it) | BD-PSNR |", "|---|---|---|"]
    ours = curves.get("nxcodec")
    for codec in ("mp3", "opus"):
        if ours is None or codec not in curves or len(ours["results"]["kbps"]) < 4:
            continue
        ref = curves[codec]["results"]
        args = (ref["kbps"], ref["psnr"], ours["results"]["kbps"], ours["results"]["psnr"])
        table[codec] = {"bd_rate_percent": bd_rate(*args), "bd_psnr_db": bd_psnr(*args)}
        lines.append(f"| {codec} | {table[codec]['bd_rate_percent']:+.1f}% | {table[codec]['bd_psnr_db']:+.2f} dB |")
    if "flac" in curves:
        lines.append(f"\nFLAC (lossless): {curves['flac']['results']['kbps'][0]:.1f} kbps on average.")
    lines.append("\nA NaN BD-rate means the PSNR ranges of the two curves do not overlap.")
    lines += ["\n" + line for line in failure_lines(failures, "clip", "level", "{:g} kbps",
                                                     "; the means at that target are over the other clips")]
    lines.append(f"\nMeasured on {meta['machine']} (nxcodec on {', '.join(devices) or '-'}), commit {meta['commit']}, "
                 f"{len(names)} clips" + (f" (their middle {cfg.max_seconds:g} s)" if cfg.max_seconds else "")
                 + (f", {cfg.iters}-iteration fits" if cfg.iters else "") + ".")
    write_bytes_atomic(cfg.out / "bdrate.md", ("\n".join(lines) + "\n").encode(), force=True)
    write_json(cfg.out / "bdrate.json", table)
    plot_audio(curves, cfg.out / "rd.png", f"{len(names)} clips of {cfg.src.name}")
    return table


def plot_audio(curves: dict[str, dict], output: Path, title: str) -> None:
    """PSNR against kbps for the lossy codecs, with FLAC's lossless rate as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for name, c in curves.items():
        r = c["results"]
        if name == "flac":
            ax.axvline(r["kbps"][0], color="grey", ls="--", lw=1.0, label=f"FLAC lossless ({r['kbps'][0]:.0f} kbps)")
            continue
        pts = [(k, p) for k, p in zip(r["kbps"], r["psnr"]) if p is not None]
        style = dict(lw=2.2, marker="o", ms=4) if name == "nxcodec" else dict(lw=1.4, marker=".", ms=5)
        ax.plot([k for k, _ in pts], [p for _, p in pts], label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("kbps (whole file over duration)")
    ax.set_ylabel("PSNR on [-1, 1] samples (dB)")
    ax.set_title(f"Audio rate-distortion, {title}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = output.with_name(f".{output.name}.part.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(output)
