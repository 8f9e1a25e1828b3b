"""Seconds per iteration of the image fit (format 6), by stack size and optimizer, and where the time goes.

The full benchmark fits 2000 iterations (plus the warm-up race) per quality: this times short fits of
the first N Kodak images side by side (no race), each after one untimed warm-up fit, then profiles a
few iterations of one stack (torch.profiler: the operators that take the most host and device time,
and the kernel launches per iteration). A fit whose time does not grow with N is bound by the host
launching kernels, not by the device.

    python bench/fit_speed.py ../shared/data/kodak --stacks 1,12,24 --quality 5 --device cuda --out fit_speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit import presets
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit.latent_code import config_for
from nxcodec.signals import for_name


def _stack(paths: list[Path], n: int, size: int | None, device: torch.device):
    image = for_name("image")
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:n]]
    if size:
        arrays = [a[:size, :size] for a in arrays]
    signals = [image.from_array(a) for a in arrays]
    target = torch.stack([image.targets(s) for s in signals]).to(device)
    return signals[0].descriptor, target


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fit(desc, target, preset, optimizer: str, iters: int, device: torch.device) -> float:
    """Seconds per iteration of a fit of ``iters`` (after an untimed one of 5)."""
    cfg = config_for(preset, desc)
    for n, timed in ((5, False), (iters, True)):
        model = LatentModel(cfg, target.shape[0], (desc.height, desc.width), desc.channels).to(device)
        _sync(device)
        t0 = time.perf_counter()
        fit(model, target, preset.lam, LatentSchedule(iters=n, race=(), optimizer=optimizer))
        _sync(device)
    return (time.perf_counter() - t0) / iters


def profile_fit(desc, target, preset, iters: int, device: torch.device, rows: int) -> dict:
    """The operators taking the most host and device time over a fit of ``iters``, and launches per iteration."""
    from torch.profiler import ProfilerActivity, profile

    cfg = config_for(preset, desc)
    model = LatentModel(cfg, target.shape[0], (desc.height, desc.width), desc.channels).to(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fit(model, target, preset.lam, LatentSchedule.for_preset(preset, iters, race=()))
        _sync(device)
    events = prof.key_averages()
    by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out = {"host_table": events.table(sort_by="self_cpu_time_total", row_limit=rows),
           "device_table": events.table(sort_by=by, row_limit=rows)}
    if device.type == "cuda":
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        out["kernels_per_iteration"] = len(kernels) / iters
        out["device_busy_s_per_iteration"] = sum(e.device_time for e in kernels) / 1e6 / iters
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--stacks", default="1,12,24", help="stack sizes to time")
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30, help="timed iterations per fit")
    ap.add_argument("--optimizers", default="soap-synthesis,adam")
    ap.add_argument("--profile-stack", type=int, default=12, help="stack size profiled (0: none)")
    ap.add_argument("--profile-iters", type=int, default=10)
    ap.add_argument("--size", type=int, default=None, help="crop images to SIZE x SIZE (a quick check)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    commit = git_commit()
    device = torch.device(args.device)
    paths = sorted(args.src.glob("*.png"))
    preset = presets.latent_preset(args.quality)
    rows = []
    for n in (int(v) for v in args.stacks.split(",")):
        desc, target = _stack(paths, n, args.size, device)
        n = target.shape[0]  # fewer where the folder has fewer images
        for opt in args.optimizers.split(","):
            s = time_fit(desc, target, preset, opt, args.iters, device)
            rows.append({"stack": n, "optimizer": opt, "s_per_iter": s, "s_per_iter_per_image": s / n})
            print(f"stack {n:3d} {opt:15s} {s * 1000:8.1f} ms/it  {s / n * 1000:7.1f} ms/it/image", flush=True)
    summary = {"machine": machine_name(args.device), "commit": commit, "torch": torch.__version__,
               "quality": args.quality, "size": args.size, "iters": args.iters, "rows": rows}
    if args.profile_stack:
        desc, target = _stack(paths, args.profile_stack, args.size, device)
        prof = profile_fit(desc, target, preset, args.profile_iters, device, 25)
        summary["profile"] = {"stack": args.profile_stack, "iters": args.profile_iters,
                              **{k: v for k, v in prof.items() if not k.endswith("table")}}
        (args.out.with_suffix(".profile.txt")).write_text(prof["host_table"] + "\n" + prof["device_table"] + "\n")
        print(prof["device_table"])
        print({k: v for k, v in summary["profile"].items()})
    args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
