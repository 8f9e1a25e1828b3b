"""The README's audio table from a results folder of ``nxcodec bench audio``.

    python bench/audio_table.py bench/results/audio_quick_cpu [../shared/data/audio]

With the clips' folder it also gives the PSNR of silence (all samples 0) on the same
excerpts, the floor below which a decoder has learnt nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

KEYS = ("psnr", "seg_snr", "estoi")  # the per-clip table's values, in its order


def interp_psnr(curve: dict, kbps: float) -> float | None:
    """PSNR of a baseline at ``kbps``, linear in log-rate between its measured levels (None outside them)."""
    r = curve["results"]
    pts = sorted((k, p) for k, p in zip(r["kbps"], r["psnr"]) if p is not None)
    ks = [k for k, _ in pts]
    if not pts or kbps < ks[0] or kbps > ks[-1]:
        return None
    return float(np.interp(np.log(kbps), np.log(ks), [p for _, p in pts]))


def _at(points: list[dict], kbps: float, key: str) -> float | None:
    """A baseline's ``key`` on one clip at ``kbps``, linear in log-rate between its levels (None outside)."""
    pts = sorted((p["kbps"], p[key]) for p in points if p.get(key) is not None)
    if not pts or not pts[0][0] <= kbps <= pts[-1][0]:
        return None
    return float(np.interp(np.log(kbps), np.log([k for k, _ in pts]), [v for _, v in pts]))


def lowest(curve_points: list[tuple[float, float | None]]) -> tuple[float, float] | None:
    """A baseline's lowest-rate point (kbps, value): a bound for rates below it, where the baseline cannot
    go and would score no better if it could."""
    pts = sorted((k, v) for k, v in curve_points if v is not None)
    return pts[0] if pts else None


def cell(value: float | None, floor: tuple[float, float] | None, mine: float, kbps: float) -> str:
    """A baseline's value at nxcodec's rate with nxcodec's lead, or below its range its lowest point's."""
    if value is not None:
        return f"{value:.2f} ({mine - value:+.2f})"
    if floor is not None and kbps < floor[0]:
        return f"{floor[1]:.2f} at its lowest rate, {floor[0]:.0f} kbps ({mine - floor[1]:+.2f})"
    return "-"


def triple(values: tuple[float | None, ...]) -> str:
    """PSNR / segmental SNR / ESTOI as a cell ("-" for a value the run did not measure)."""
    return " / ".join("-" if v is None else f"{v:.3f}" if k == 2 else f"{v:.2f}" for k, v in enumerate(values))


def at_rate(theirs: list[dict], kbps: float) -> tuple[tuple[float | None, ...], float | None] | None:
    """A baseline's ``KEYS`` on one clip at ``kbps`` with None as the rate, or below its range its lowest point's
    with that point's rate; None above its range."""
    at = tuple(_at(theirs, kbps, k) for k in KEYS)
    if at[0] is not None:
        return at, None
    floor = lowest([(q["kbps"], tuple(q.get(k) for k in KEYS)) for q in theirs if q.get("psnr") is not None])
    return (floor[1], floor[0]) if floor is not None and kbps < floor[0] else None


def clip_lead(mine: dict, theirs: list[dict]) -> float | None:
    """nxcodec's PSNR lead on one clip over a baseline at nxcodec's rate (below the baseline's range, over its
    lowest point; None above its range)."""
    found = at_rate(theirs, mine["kbps"])
    return None if found is None else mine["psnr"] - found[0][0]


def per_clip(points: list[dict]) -> None:
    """Per clip and nxcodec rate target: nxcodec's PSNR / segmental SNR / ESTOI, and MP3's and Opus's at the rate
    nxcodec reached (below a baseline's lowest rate, its lowest point's, marked "at N kbps")."""
    print("| clip | target kbps | nxcodec kbps | nxcodec PSNR / seg. SNR / ESTOI | MP3 at that rate | Opus at that rate |")
    print("|---|---|---|---|---|---|")
    clips = sorted({p["clip"] for p in points})
    for clip in clips:
        mine = sorted((p for p in points if p["clip"] == clip and p["codec"] == "nxcodec"), key=lambda p: p["kbps"])
        for p in mine:
            cells = []
            for codec in ("mp3", "opus"):
                found = at_rate([q for q in points if q["clip"] == clip and q["codec"] == codec], p["kbps"])
                if found is None:
                    cells.append("-")
                else:
                    values, floor_kbps = found
                    cells.append(triple(values) + ("" if floor_kbps is None else f" at {floor_kbps:.0f} kbps"))
            print(f"| {clip} | {p['level']:g} | {p['kbps']:.2f} | {triple(tuple(p.get(k) for k in KEYS))} | {cells[0]} | {cells[1]} |")


def main(folder: Path) -> None:
    curves = {n: json.loads((folder / f"{n}.json").read_text()) for n in ("nxcodec", "mp3", "opus", "flac")}
    meta = json.loads((folder / "meta.json").read_text())
    print("| codec | level | mean kbps | PSNR dB | SNR dB | seg. SNR dB | ESTOI |")
    print("|---|---|---|---|---|---|---|")
    for name in ("nxcodec", "mp3", "opus"):
        r = curves[name]["results"]
        for i, level in enumerate(r["level"]):
            cells = [f"{r[k][i]:.2f}" if r[k][i] is not None else "-" for k in ("kbps", "psnr", "snr", "seg_snr")]
            estoi = r["estoi"][i] if "estoi" in r else None  # runs before ESTOI was added lack it
            print(f"| {name} | {level:g} | " + " | ".join(cells) + f" | {'-' if estoi is None else f'{estoi:.3f}'} |")
    print(f"| flac | lossless | {curves['flac']['results']['kbps'][0]:.1f} | - | - | - | - |")
    print()
    print("| nxcodec target | nxcodec kbps / PSNR | MP3 PSNR at that rate | Opus PSNR at that rate |")
    print("|---|---|---|---|")
    r = curves["nxcodec"]["results"]
    for level, k, p in zip(r["level"], r["kbps"], r["psnr"]):
        cells = []
        for name in ("mp3", "opus"):
            theirs = curves[name]["results"]
            floor = lowest(list(zip(theirs["kbps"], theirs["psnr"])))
            cells.append(cell(interp_psnr(curves[name], k), floor, p, k))
        print(f"| {level:g} kbps | {k:.2f} / {p:.2f} | {cells[0]} | {cells[1]} |")
    print()
    points = [json.loads(line) for line in (folder / "points.jsonl").read_text().splitlines()]
    ours = [p for p in points if p["codec"] == "nxcodec"]
    for level in r["level"]:
        for codec in ("mp3", "opus"):
            leads = [lead for p in ours if p["level"] == level
                     if (lead := clip_lead(p, [q for q in points if q["clip"] == p["clip"] and q["codec"] == codec]))
                     is not None]
            print(f"nxcodec {level:g} kbps against {codec}, clip by clip at the clip's rate: mean lead "
                  f"{np.mean(leads):+.2f} dB, ahead on {sum(x > 0 for x in leads)} of {len(leads)} clips")
    for level in r["level"]:
        mine = [p for p in ours if p["level"] == level]
        print(f"nxcodec {level:g} kbps: float (before quantization) PSNR {np.mean([p['float_psnr'] for p in mine]):.2f} dB")
    if len(sys.argv) > 2:
        from nxcodec.bench.audio import load_clip
        from nxcodec.signals import for_name

        audio = for_name("audio")
        values = []
        for name in meta["clips"]:
            x = load_clip(next(Path(sys.argv[2]).glob(name + ".*")), meta["max_seconds"]).data
            values.append(audio.metrics(x, np.zeros_like(x))["psnr"])
        print(f"silence (all zeros) on the same excerpts: PSNR {np.mean(values):.2f} dB")
    print()
    per_clip(points)
    print()
    print(f"Machine: {meta['machine']}; commit {meta['commit']}; clips: {len(meta['clips'])}; "
          f"iterations: {meta['iters'] or 'as in the presets'}; excerpt: {meta['max_seconds'] or 'whole clips'}"
          + (" s." if meta["max_seconds"] else "."))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
