"""A fit-side ablation's rows as a table: each variant's cost per crop against a base variant's.

The crop benchmarks (``decode_order.py``, ``preset_ablation.py``, ``coarse_context.py`` ...) append one
JSON line per crop, quality and variant, each with its rate-distortion ``cost``. This prints, for every
(crop size, fit length, quality), each variant's change in cost per crop against ``--base`` fitted from
the same seed, and their mean, as a Markdown table, so the README's percentages come from a command.
A row repeated (same crop, size, length, quality, seed and variant) counts once: the last one.

    python bench/ablation_table.py bench/results/decode_order_2000_cpu.jsonl --key order --base two-pass
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def load(path: Path, key: str) -> dict[tuple, dict[str, dict[tuple, float]]]:
    """{(size, iters, quality): {variant: {(image, seed): cost}}} from the JSON lines at ``path``."""
    groups: dict[tuple, dict[str, dict[tuple, float]]] = defaultdict(lambda: defaultdict(dict))
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            group = (row.get("size"), row.get("iters"), row["quality"])
            groups[group][row[key]][(row["image"], row.get("seed", 0))] = row["cost"]
    return groups


def table(groups: dict[tuple, dict[str, dict[tuple, float]]], base: str) -> str:
    """The Markdown table of every variant's change in cost against ``base``, in percent."""
    lines = []
    for (size, iters, quality), variants in sorted(groups.items(), key=lambda g: tuple(map(str, g[0]))):
        if base not in variants:
            continue
        crops = sorted(variants[base])
        lines += [f"\nsize {size}, {iters} iterations, quality {quality} (cost against {base}, %):\n",
                  "| variant | " + " | ".join(f"{image} (seed {seed})" if seed else image for image, seed in crops)
                  + " | mean |", "|---" * (len(crops) + 2) + "|"]
        for name, costs in variants.items():
            if name == base:
                continue
            changes = [100 * (costs[c] / variants[base][c] - 1) if c in costs else None for c in crops]
            known = [x for x in changes if x is not None]
            mean = f"{sum(known) / len(known):+.1f}" if known else "-"
            lines.append(f"| {name} | " + " | ".join("-" if x is None else f"{x:+.1f}" for x in changes)
                         + f" | {mean} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="JSON lines file of a crop benchmark.")
    ap.add_argument("--key", default="variant", help="The field that names a row's variant [variant].")
    ap.add_argument("--base", required=True, help="The variant the others are compared with.")
    args = ap.parse_args()
    print(table(load(args.results, args.key), args.base))


if __name__ == "__main__":
    main()
