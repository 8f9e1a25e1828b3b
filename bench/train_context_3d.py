"""Train one 3-D context model on synthetic shapes: a candidate for a context model built into the decoder.

usage: python bench/train_context_3d.py OUT.json [--shapes 16] [--qualities 1,2,3,4,5,6] [--iters 400] [--seed 0]
       python bench/train_context_3d.py --install OUT.json

Overfitted shape streams spend about a third of their bytes on their own two context
models (740 of 981 parameters at the presets' 8x2). bench/shape_ablation.py's ``foreign``
variant showed that another mesh's context models, frozen, code the bunny's latents about
as well. This script makes such a model from shapes that are not in the benchmark:
``--shapes`` random smooth unions of spheres, rounded boxes, capsules and tori with a little
surface ripple, meshed by nxcodec's marching cubes, are fitted side by side as the encoder
fits them (the lambdas of ``--qualities`` in turn, 33^3 grids, occupancy maps), with one context
model pair for the whole stack: every shape's context-model gradients (after the per-shape
clipping) are replaced by their mean over the stack, so the copies stay equal. The shared models' float weights
are written to OUT.json with the run's details; ``shape_ablation.py builtin=OUT.json``
measures them on real meshes. ``--install`` turns such a file into the decoder's built-in
models: every tensor rounded to steps of ``2**-builtin.SHIFT``, written to
``nxcodec/latent/context_3d.json``; it prints the file's SHA-256, which
``nxcodec.latent.builtin.SHA256`` and SPEC.md 14.2 must then pin.

The pair built into format 8 was fitted at commit cbf65b8, when the presets truncated the
distance at 0.1 and their lambdas ran from 4e-2 to 1e-3 (record:
bench/results/context_3d_train_s16_cpu.json). The presets have since moved to a truncation
of 0.025 and other lambdas, which a run now takes; the decoder's pair stays as pinned.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import nxcodec.fit.latent as fit_latent
import nxcodec.fit.latent_shape as fit_shape
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.fit import presets
from nxcodec.fit.latent import LatentSchedule
from nxcodec.latent import builtin
from nxcodec.signals import for_name
from nxcodec.signals.meshfile import ShapeDescriptor, decode_mesh



def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def primitive(rng: np.random.Generator):
    """A random primitive's signed distance (network coordinates, negative inside)."""
    c, rot = rng.uniform(-0.45, 0.45, 3), random_rotation(rng)
    kind = rng.integers(4)
    if kind == 0:
        r = rng.uniform(0.15, 0.4)
        return lambda p: np.linalg.norm(p - c, axis=1) - r
    if kind == 1:
        b, rr = rng.uniform(0.08, 0.35, 3), rng.uniform(0.0, 0.06)

        def box(p):
            q = np.abs((p - c) @ rot) - b
            return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0) - rr
        return box
    if kind == 2:
        a, r = rng.uniform(0.15, 0.4) * rot[0], rng.uniform(0.02, 0.15)

        def capsule(p):
            t = np.clip(((p - c) @ a) / (a @ a), -1, 1)
            return np.linalg.norm(p - c - t[:, None] * a, axis=1) - r
        return capsule
    big, small = rng.uniform(0.15, 0.35), rng.uniform(0.02, 0.1)

    def torus(p):
        q = (p - c) @ rot
        return np.hypot(np.hypot(q[:, 0], q[:, 1]) - big, q[:, 2]) - small
    return torus


def synthetic_shape(rng: np.random.Generator):
    """A smooth union of 2 to 6 primitives with a small ripple on its surface."""
    parts = [primitive(rng) for _ in range(rng.integers(2, 7))]
    k = rng.uniform(0.02, 0.1)
    amp, freq, phase = rng.uniform(0.0, 0.02), rng.uniform(12, 40), rng.uniform(0, 2 * np.pi, 3)

    def sdf(p: np.ndarray) -> np.ndarray:
        d = np.stack([f(p.astype(np.float64)) for f in parts])
        m = d.min(0)
        union = m - k * np.log(np.exp(-(d - m) / k).sum(0))  # exponential smooth minimum
        return union + amp * np.prod(np.sin(freq * p + phase), axis=1)
    return sdf


def tie(model: fit_shape.ShapeModel) -> None:
    """One context model pair for the stack: every copy starts as the first, and each step's gradients (after
    the per-shape clipping, which scales each shape's differently) are replaced by their mean over the stack."""
    shared = [t for key in ("arm_a", "arm_b") for pair in model.nets[key] for t in pair]
    with torch.no_grad():
        for t in shared:
            t.copy_(t[:1].expand_as(t))
    clip = fit_latent.clip_per_signal

    def clip_then_average(params: list[torch.Tensor], limit: float) -> None:
        clip(params, limit)
        for t in shared:
            if t.grad is not None:
                t.grad.copy_(t.grad.mean(0, keepdim=True).expand_as(t.grad))

    fit_latent.clip_per_signal = clip_then_average


def install(trained: Path) -> None:
    """Write the package's built-in models from a training run's float weights."""
    run = json.loads(trained.read_text())
    scale = 2**builtin.SHIFT
    tensors = {name: np.clip(np.rint(np.asarray(v) * scale), -32767, 32767).astype(int).tolist()
               for name, v in run["tensors"].items()}
    record = {"what": "nxcodec built-in 3-D context models (SPEC.md 14.2): integers, step 2**-%d" % builtin.SHIFT,
              "trained": {k: run[k] for k in ("shapes", "iters", "seed", "qualities", "commit")},
              "tensors": tensors}
    data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    builtin.PATH.write_bytes(data)
    print(f"{builtin.PATH}: {len(data)} bytes, SHA-256 {hashlib.sha256(data).hexdigest()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--install", action="store_true", help="write the built-in models from OUT (a finished run)")
    ap.add_argument("--shapes", type=int, default=16)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--qualities", default="1,2,3,4,5,6", help="the presets whose lambdas the shapes take in turn "
                    "(33^3 grids: 1 to 6)")
    args = ap.parse_args()
    if args.install:
        install(args.out)
        return
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    shape = for_name("shape")
    rng = np.random.default_rng(args.seed)
    signals = []
    while len(signals) < args.shapes:
        mesh = decode_mesh(synthetic_shape(rng), ShapeDescriptor((0.0, 0.0, 0.0), 1.0), 96)
        if len(mesh.faces) >= 1000:
            signals.append(shape.from_array(mesh))
    qualities = tuple(int(q) for q in args.qualities.split(","))
    preset = presets.SHAPE_LATENT_PRESETS[qualities[0]]
    cfg = replace(fit_shape.config_for(preset), flags=0)  # its own context models, the ones trained here
    lams = [presets.SHAPE_LATENT_PRESETS[qualities[i % len(qualities)]].lam for i in range(len(signals))]
    signals = [fit_shape.with_truncation(s, preset.trunc) for s in signals]  # as the encoder fits them
    model, points, targets, _ = fit_shape.stack_shapes(shape, signals, cfg, preset, args.seed, torch.device("cpu"))
    tie(model)
    losses = fit_shape.fit_shapes(model, points, targets, lams, LatentSchedule(iters=args.iters, race=()),
                                  fit_shape.BATCH_CPU, seed=args.seed)
    tensors = {name: t.detach().numpy().tolist() for name, t in model.coded_tensors(0).items()
               if name.startswith(("arm_a.", "arm_b."))}
    spread = max(float((t - t[:1]).abs().max().detach())
                 for k in ("arm_a", "arm_b") for pair in model.nets[k] for t in pair)
    out = {"shapes": args.shapes, "iters": args.iters, "seed": args.seed, "qualities": qualities,
           "arm_width": cfg.arm_width, "arm_layers": cfg.arm_layers, "final_losses": [float(x) for x in losses],
           "copies_spread": spread, "tensors": tensors, "seconds": round(time.perf_counter() - t0, 1),
           "machine": machine_name("cpu"), "commit": git_commit()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out) + "\n")
    print(f"{args.shapes} shapes, {args.iters} iterations, {out['seconds']} s; copies differ by {spread:.2e}")


if __name__ == "__main__":
    main()
