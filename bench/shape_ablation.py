"""Shape coding ablations on one mesh: smaller 3-D contexts, narrower context models, fewer grids started from
the distance.

Each variant changes one thing of the shape coder for this run only, encodes the
mesh at ``--quality`` with ``--iters`` iterations on one CPU thread, and appends a JSON
line: bytes, the networks' share (ideal code lengths of their integers), parameters,
Chamfer-L1 and the field's error.

Variants:

- ``base``: the encoder as it is (27 coarse and 14 same-grid contexts; since format 8 the
  built-in context models wherever the preset's are 8x2).
- ``own``: the stream's own context models, fitted and coded (format 7's way); every
  variant below but ``builtin`` starts from it.
- ``builtin``: the built-in context models at every quality whose models are 8x2 (the
  presets keep their own at qualities 7 and 8).
- ``small``: the parent and its 6 face neighbours in the coarser grid, the 6 face
  neighbours in the same grid (encoder and decoder read the same swapped tables).
- ``c7``: those 7 coarse contexts and the 14 same-grid ones.
- ``initN``: only the N finest grids start from the distance, the others at zero.
- ``armWxL``: context models of L hidden layers W wide (the presets: 8x2).
- ``mapK``: an occupancy map of 2^K cells per axis (the presets: 16^3, K = 4).
- ``coarse``: the fixed-point networks may also be coded with 3 or 4 fractional bits
  (the encoder tries 5 to 9).
- ``shared``: one context model for both passes (pass A uses pass B's weights for the
  coarse contexts and has its own first-layer bias); ``bytes`` is the stream less the copies
  it still stores, ``written`` what was written.
- ``foreign=STREAM``: the context models of another shape's stream (same quality),
  frozen, as a stand-in for a context model built into the decoder; ``bytes`` leaves them out.
  ``foreign=OUT.json`` takes those of bench/train_context_3d.py instead.
- ``netrateX``: the loss also charges X times the fixed-point networks' estimated bits
  (a Laplace prior per tensor at step 2^-7), as it charges the latents'.
- ``truncX``: the distance truncated at X (network coordinates) instead of at the preset's
  0.025 (0.1 until the commit that added this variant); ``--lam`` sets lambda apart from the
  quality's.
- ``gridG``: every quality on a finest grid of 2^G + 1 vertices per axis, with G + 1 grids
  (the presets: G = 5 at qualities 1 to 6, 6 above); the context models stay the preset's.
- ``levelsN``: N grids instead of the preset's (the finest stays the preset's), so fewer coarse
  grids whose latents the synthesis reads.
- ``synW``: experts W wide, and 8x2 context models (so the built-in ones wherever the
  preset asks for them).

Format 7's occupancy map was first measured here, as a variant ``occL`` that estimated its
bytes on format 6 streams (commit 147204f; its rows in
``bench/results/shape_ablation_cpu.jsonl``); since the encoder writes format 7 (9f5e3c4)
``base`` is format 7 and that variant is gone.

    python bench/shape_ablation.py ../shared/data/meshes/stanford_bunny.obj small \\
        --quality 3 --iters 400 --out bench/results/shape_ablation_cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import nxcodec.fit.latent_code as latent_code
import nxcodec.fit.latent_shape as fit_shape
from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.fit import presets
from nxcodec.latent import context, tables
from nxcodec.latent import shape as latent_shape
from nxcodec.signals import for_name

FACES = ((-1, 0, 0), (0, -1, 0), (0, 0, -1), (1, 0, 0), (0, 1, 0), (0, 0, 1))


def smaller_contexts(variant: str) -> None:
    coarse, same = ((0, 0, 0), *FACES), context.OFFSETS[3][1]
    if variant == "small":
        same = FACES
    context.OFFSETS[3] = (coarse, same)
    fit_shape.COARSE_OFFSETS_3D, fit_shape.SAME_OFFSETS_3D = coarse, same


def every_preset(**fields) -> None:
    """Set ``fields`` in every shape preset for this run."""
    for q, p in presets.SHAPE_LATENT_PRESETS.items():
        presets.SHAPE_LATENT_PRESETS[q] = replace(p, **fields)


def context_model(width: int, layers: int) -> None:
    config_for = fit_shape.config_for
    fit_shape.config_for = lambda preset: replace(config_for(preset), arm_width=width, arm_layers=layers)


def finest_start(keep: int) -> None:
    start = fit_shape.start_from_distance

    def start_finest(model, distance) -> None:
        start(model, distance)
        with torch.no_grad():
            for lat in model.latents[keep:]:
                lat.zero_()

    fit_shape.start_from_distance = start_finest


def network_rate(weight: float) -> None:
    """Charge the fixed-point networks' code length in the loss, as if their weights were coded at step 2**-7
    under a Laplace prior fitted per tensor (the stream's weight code), times ``weight``."""
    from nxcodec.fit.latent import laplace_bits

    synthesize = fit_shape.ShapeModel.quantized_latents

    def with_networks(model, mode):
        grids, bits = synthesize(model, mode)
        net = 0
        for key in ("arm_a", "arm_b", "manager"):
            for w, b in model.nets.get(key, []):
                for t in (w, b):
                    r = t.reshape(model.m, -1) * 128.0
                    log2_b = torch.log2(r.abs().mean(dim=1, keepdim=True).clamp(min=0.5))
                    net = net + laplace_bits(r, log2_b).sum(dim=1)
        return grids, bits + weight * net

    fit_shape.ShapeModel.quantized_latents = with_networks


def tensor_bits(t) -> float:
    """Ideal code length of a coded tensor's integers under its table."""
    return float(np.sum(tables.PREC - np.log2(t.table()[t.ints.ravel() - t.lo])))


SHARED = ("arm_a.0.weight", "arm_a.1.weight", "arm_a.1.bias", "arm_a.out.weight", "arm_a.out.bias")


def shared_context_model() -> None:
    """One context model for both passes: pass A reads pass B's coarse-context weights (its same-grid inputs
    are absent) and keeps only its own first-layer bias. The stream still stores arm_a, as copies of arm_b's
    tensors; the row's ``bytes`` leaves those copies (``SHARED``) and their table entries out."""
    from nxcodec.fit.latent import LatentModel

    model_cls, n_same = fit_shape.ShapeModel, len(fit_shape.SAME_OFFSETS_3D)
    first_layers, arm_from_first, coded_tensors = (model_cls._first_layers, LatentModel._arm_from_first,
                                                   LatentModel.coded_tensors)

    def first(model, coarser, size, idx_a, idx_b):
        _, pass_b = first_layers(model, coarser, size, idx_a, idx_b)
        _, _, parent_a, _ = model._indices(size, idx_a.device)
        if coarser is None:
            coarse_a = torch.zeros(model.m, len(idx_a), model.nets["arm_b"][0][0].shape[-1], device=idx_a.device)
        else:
            coarse_a = model._conv(coarser, "arm_b", fit_shape.COARSE_OFFSETS_3D, n_same).index_select(1, parent_a)
        return coarse_a, pass_b

    def arm(model, key, h):
        if key != "arm_a":
            return arm_from_first(model, key, h)
        b = model.nets["arm_b"]
        saved = model.nets["arm_a"]
        model.nets["arm_a"] = [[b[0][0], saved[0][1]], *b[1:]]
        try:
            return arm_from_first(model, key, h)
        finally:
            model.nets["arm_a"] = saved

    def coded(model, i):
        out = coded_tensors(model, i)
        out["arm_a.0.weight"] = out["arm_b.0.weight"][n_same:]
        for name in SHARED[1:]:
            out[name] = out[name.replace("arm_a", "arm_b")]
        return out

    model_cls._first_layers, model_cls._arm_from_first, model_cls.coded_tensors = first, arm, coded


ARMS = ("arm_a.", "arm_b.")


def foreign_context_models(donor_path: Path) -> None:
    """The context models of another shape's stream, frozen: what a context model built into the decoder would
    do, learned on other shapes. The stream still stores them; ``bytes`` leaves them and their table entries
    out."""
    if donor_path.suffix == ".json":  # bench/train_context_3d.py's float weights
        donor = {n: np.asarray(v, dtype=np.float64) for n, v in json.loads(donor_path.read_text())["tensors"].items()}
    else:
        donor = {n: t.values() for n, t in latent_shape.decode_latents(donor_path.read_bytes()).tensors.items()}
    start = fit_shape.start_from_distance

    def start_with_donor(model, distance) -> None:
        start(model, distance)
        for key in ("arm_a", "arm_b"):
            layers = model.nets[key]
            for j, pair in enumerate(layers):
                name = f"{key}.{j}" if j < len(layers) - 1 else f"{key}.out"
                for t, part in zip(pair, ("weight", "bias")):
                    with torch.no_grad():
                        t.copy_(torch.from_numpy(donor[f"{name}.{part}"]).to(t).expand_as(t))
                    t.register_hook(torch.zeros_like)  # frozen: Adam moves nothing without a gradient

    fit_shape.start_from_distance = start_with_donor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mesh", type=Path)
    ap.add_argument("variant", help="base, own, builtin, small, c7, armWxL, mapK, initN, truncX, gridG, levelsN, synW, shared, foreign=STREAM, coarse or netrateX")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--lam", type=float, default=None, help="lambda (default: the quality's)")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file, appended to")
    args = ap.parse_args()
    torch.set_num_threads(1)
    shape = for_name("shape")
    signal = shape.read(args.mesh)
    if args.lam is not None:
        table = presets.SHAPE_LATENT_PRESETS
        table[args.quality] = replace(table[args.quality], lam=args.lam)
    if not args.variant.startswith(("base", "map", "init", "builtin", "trunc", "grid", "levels", "syn")):  # variants of the stream's own models
        every_preset(builtin_context=False)
    if args.variant == "builtin":
        every_preset(builtin_context=True)
    if args.variant in ("small", "c7"):
        smaller_contexts(args.variant)
    elif args.variant.startswith("arm"):
        context_model(*(int(x) for x in args.variant[3:].split("x")))
    elif args.variant.startswith("map"):
        every_preset(occupancy_log2=int(args.variant[3:]))
    elif args.variant.startswith("grid"):
        every_preset(grid_log2=int(args.variant[4:]), levels=int(args.variant[4:]))
    elif args.variant.startswith("levels"):
        every_preset(levels=int(args.variant[6:]))
    elif args.variant.startswith("syn"):
        every_preset(arm_width=8, syn_width=int(args.variant[3:]))
    elif args.variant.startswith("trunc"):
        every_preset(trunc=float(args.variant[5:]))
    elif args.variant.startswith("init"):
        finest_start(int(args.variant[4:]))
    elif args.variant.startswith("foreign="):
        foreign_context_models(Path(args.variant.split("=", 1)[1]))
    elif args.variant == "shared":
        shared_context_model()
    elif args.variant == "coarse":
        latent_code.FIXED_PRECISIONS = (3, 4, *latent_code.FIXED_PRECISIONS)
    elif args.variant.startswith("netrate"):
        network_rate(float(args.variant[7:]))
    elif args.variant not in ("base", "own", "builtin"):
        raise SystemExit(f"unknown variant {args.variant}")
    t0 = time.perf_counter()
    res = encode_signal(shape, signal, EncodeOptions(quality=args.quality, iters=args.iters, device="cpu"))
    seconds = time.perf_counter() - t0
    image = latent_shape.decode_latents(res.data)
    net_bits = sum(tensor_bits(t) for t in image.tensors.values())
    copies = 0.0  # bits of the tensors a shared context model would not store, and of their table entries
    if args.variant == "shared":
        copies = sum(tensor_bits(t) for name, t in image.tensors.items() if name in SHARED)
        net_bits -= copies
        copies += 8 * 9 * len(SHARED)
    elif args.variant.startswith("foreign="):
        copies = sum(tensor_bits(t) for name, t in image.tensors.items() if name.startswith(ARMS))
        net_bits -= copies
        copies += 8 * 9 * sum(name.startswith(ARMS) for name in image.tensors)
    row = {"mesh": args.mesh.stem, "variant": args.variant, "quality": args.quality,
           "lam": presets.SHAPE_LATENT_PRESETS[args.quality].lam, "iters": args.iters,
           "bytes": round(len(res.data) - copies / 8), "written": len(res.data), "network_bytes": round(net_bits / 8), "params": res.n_params,
           "occupancy_bytes": latent_shape.read_header(res.data).sizes.get("occupancy", 0),
           "chamfer_l1": res.metrics["chamfer_l1"], "sdf_l1": res.metrics["sdf_l1"],
           "fixed_shift": image.tensors["arm_a.0.weight"].code // 4 if "arm_a.0.weight" in image.tensors else None}
    row.update(encode_seconds=round(seconds, 1), machine=machine_name("cpu"), commit=git_commit())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
