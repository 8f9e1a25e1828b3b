"""Operations one iteration of the image fit (format 6) runs, by pass and kind: what a GPU launches kernels for.

Counts every tensor operation that is not a view (torch's dispatcher, on the CPU, so no device is needed) in the
forward pass, the backward pass and the optimizer step of one iteration on the first Kodak image cropped to
SIZE x SIZE with the given number of grids; ``--gpu-path`` takes the fit's GPU branches (unfold gathers).

    python bench/fit_ops.py ../shared/data/kodak --size 256 --levels 7 [--gpu-path] [--out results.jsonl]

``--out`` appends one JSON line: every operation's count by pass, with the commit and the machine.
"""

from __future__ import annotations

import argparse
import collections
import json
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fit_speed import _stack
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit import latent as fit_latent
from nxcodec.fit import presets
from nxcodec.fit.latent import LatentModel, _optimizer
from nxcodec.fit.latent_code import config_for

VIEWS = {"view", "expand", "slice", "select", "unsqueeze", "squeeze", "transpose", "permute", "t", "detach", "alias",
         "_unsafe_view", "as_strided", "unflatten", "narrow", "mT", "reshape", "_reshape_alias", "split", "unbind",
         "unfold"}


class Count(TorchDispatchMode):
    """Counts the operations dispatched meanwhile, views left out."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket).split(".")[-1]
        if name not in VIEWS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--levels", type=int, default=7)
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--gpu-path", action="store_true", help="take the fit's GPU branches")
    ap.add_argument("--out", type=Path, help="append the counts as one JSON line to this file")
    args = ap.parse_args()
    commit = git_commit()
    if args.gpu_path:
        fit_latent.few_kernels = lambda t: True
    desc, target = _stack(sorted(args.src.glob("*.png")), 1, args.size, torch.device("cpu"))
    preset = presets.latent_preset(args.quality)
    model = LatentModel(replace(config_for(preset, desc), levels=args.levels), 1, (desc.height, desc.width),
                        desc.channels)
    latents = list(model.latents)
    rest = [p for p in model.parameters() if all(p is not q for q in latents)]
    opt = _optimizer(model, [{"params": latents, "base": 0.3, "lr": 0.3}, {"params": rest, "base": 1e-2, "lr": 1e-2},
                             {"params": [], "base": 1e-2, "lr": 1e-2}], preset.optimizer)

    def loss() -> torch.Tensor:
        grids, bits = model.quantized_latents("soft0.3:0.2")
        return ((model.synthesize(grids)[2] - target) ** 2).mean() + bits.sum() * 1e-3

    for _ in range(2):  # the optimizer's state exists from the first step
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
    with Count() as forward:
        value = loss()
    with Count() as backward:
        opt.zero_grad()
        value.backward()
    with Count() as step:
        opt.step()
    passes = {"forward": forward.counts, "backward": backward.counts, "optimizer": step.counts}
    for name, counts in passes.items():
        print(f"{name:9s} {sum(counts.values()):5d}  " + ", ".join(f"{k} {v}" for k, v in counts.most_common(8)))
    if args.out:
        record = {"commit": commit, "machine": machine_name("cpu"), "size": args.size, "levels": args.levels,
                  "quality": args.quality, "gpu_path": args.gpu_path,
                  **{name: {"total": sum(c.values()), "ops": dict(c.most_common())} for name, c in passes.items()}}
        with args.out.open("a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
