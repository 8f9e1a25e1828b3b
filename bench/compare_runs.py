"""Two runs of ``nxcodec bench image`` (or audio) compared point by point: what one change to the codec did.

For every item (image, clip) and level (quality, or an audio run's rate target) both runs coded with nxcodec,
the bytes and PSNR of each and their differences; then per item the BD-rate of the second run against the
first over the levels both have (at least four, as BD-rate needs). Both runs' commits are printed, so the
comparison names what ran.

    python bench/compare_runs.py bench/results/kodak_quick_cpu_v11 bench/results/kodak_quick_cpu_v11_gptq
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nxcodec.bench.bdrate import bd_rate


def nxcodec_points(run: Path) -> dict[tuple[str, int], dict]:
    """The nxcodec points of a run's ``points.jsonl`` by (item, quality)."""
    points = {}
    for line in (run / "points.jsonl").read_text().splitlines():
        p = json.loads(line)
        if p.get("codec") == "nxcodec" and "bytes" in p:
            points[(p.get("image", p.get("clip")), p.get("quality", p.get("level")))] = p
    return points


def compare(before: dict[tuple[str, int], dict], after: dict[tuple[str, int], dict]) -> list[str]:
    """Markdown lines: a row per point both runs have, then the BD-rate per item."""
    common = sorted(set(before) & set(after), key=lambda k: (k[1], k[0]))
    lines = ["| item | level | bytes before | bytes after | change | PSNR before | PSNR after | change |",
             "|---|---|---|---|---|---|---|---|"]
    for key in common:
        a, b = before[key], after[key]
        change = 100 * (b["bytes"] / a["bytes"] - 1)
        lines.append(f"| {key[0]} | {key[1]} | {a['bytes']} | {b['bytes']} | {change:+.1f}% "
                     f"| {a['psnr']:.2f} | {b['psnr']:.2f} | {b['psnr'] - a['psnr']:+.3f} dB |")
    lines.append("")
    for item in sorted({k[0] for k in common}):
        keys = [k for k in common if k[0] == item]
        if len(keys) < 4:
            lines.append(f"{item}: {len(keys)} common levels, too few for a BD-rate")
            continue
        curves = [([run[k]["bytes"] for k in keys], [run[k]["psnr"] for k in keys]) for run in (before, after)]
        lines.append(f"{item}: BD-rate {bd_rate(*curves[0], *curves[1]):+.2f}%")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path, help="The first run's folder (holding points.jsonl).")
    ap.add_argument("after", type=Path, help="The second run's folder.")
    args = ap.parse_args()
    before, after = nxcodec_points(args.before), nxcodec_points(args.after)
    for name, path, run in (("before", args.before, before), ("after", args.after, after)):
        meta = path / "meta.json"  # a run whose points carry no commit (audio's) recorded it there
        default = json.loads(meta.read_text()).get("commit", "unknown") if meta.is_file() else "unknown"
        print(f"{name}: {path} (commits {', '.join(sorted({p.get('commit', default) for p in run.values()}))})")
    print()
    print("\n".join(compare(before, after)))


if __name__ == "__main__":
    main()
