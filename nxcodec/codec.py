"""The encoder: signal -> fitted, quantized, entropy-coded stream, in any format (the format 2 pipeline is here).

``encode_signals`` runs the pipeline for each section of each signal (an image is one):
pick a network (preset or rate target), fit it, choose quantization steps by
rate-distortion, fine-tune under quantization; then it writes each stream and decodes it
once to report what a user will get. Sections whose networks have the same shape are
fitted side by side as one stack (several images, or the windows of many clips; see
:func:`~nxcodec.model.stack.family`). Images are written as format 12 (latent grids,
``nxcodec.fit.latent_image``) unless format 2 is asked for. The decoder of versions 1 and 2
is ``nxcodec.networks``.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

from nxcodec import container
from nxcodec.decoder import decode_stream
from nxcodec.errors import NxcError, UsageError
from nxcodec.fit import presets
from nxcodec.fit.losses import LossFn
from nxcodec.fit.qat import quantization_aware_fit
from nxcodec.fit.train import FitSettings, fit_stack, take
from nxcodec.model import ModelConfig, NeuralExperts
from nxcodec.model.stack import ModelStack, family
from nxcodec.networks import device_name, out_of_gpu_memory, resolve_device, routed
from nxcodec.quant import quantize_model, search_steps
from nxcodec.signals import Modality, Signal

EVAL_POINTS = 1 << 15  # points used to measure distortion during step search
QAT_FRAC = 0.15
FIRST_LAYER = ("encoder.0.weight", "encoder.0.bias")
STACK_POINTS = 1 << 19  # training points per step, all networks of a stack together (bounds memory)
# On a GPU: 64 networks of 2**14 points. A 48 kbps audio window (a 1-expert net of 11k
# weights, layers of 70/70/47/47 units) keeps about 1.5 kB of activations per point, so
# 2**20 points hold about 1.5 GB: far below the memory of a data-centre GPU.
STACK_POINTS_GPU = 1 << 20


@dataclass
class EncodeOptions:
    """What the user asked for."""

    quality: int = presets.DEFAULT_QUALITY
    rate: float | None = None  # target in the modality's unit (bpp for images)
    iters: int | None = None
    device: str = "auto"
    seed: int = 0
    progress: bool = False
    config: Any = None  # a fixed ModelConfig (format 2) or LatentConfig (formats 12, 11 and 8) instead of the preset's
    format: int | None = None  # stream version to write (None: the modality's default, or the config's format)
    # Processes that code the fitted images, audio planes or meshes of a stack (formats 12, 11 and 8): None, one each up
    # to one per core, for large ones. Spawned processes import the caller's main script, so a script that asks
    # for them needs the ``if __name__ == "__main__":`` guard; the default, 1, codes them in this process.
    coding_workers: int | None = 1


@dataclass
class EncodeResult:
    """The stream and what it cost and gives."""

    data: bytes
    rate: float
    rate_unit: str
    metrics: dict[str, float]
    float_metrics: dict[str, float]
    encode_seconds: float
    device: str
    configs: list[ModelConfig]
    n_params: int
    restarts: int = 0


def check_options(opts: EncodeOptions) -> None:
    """Refuse options out of range with one line (``UsageError``) before any work."""
    if opts.rate is None:
        presets.get(opts.quality)  # the quality's range check, for every modality
    elif not isinstance(opts.rate, (int, float)) or not opts.rate > 0 or opts.rate == float("inf"):
        raise UsageError(f"the rate target must be a positive number, not {opts.rate!r}")
    if opts.iters is not None and (not isinstance(opts.iters, int) or opts.iters < 1):
        raise UsageError(f"iterations must be an integer of at least 1, not {opts.iters!r}")
    if not isinstance(opts.seed, int):
        raise UsageError(f"the seed must be an integer, not {opts.seed!r}")
    if opts.coding_workers is not None and (not isinstance(opts.coding_workers, int) or opts.coding_workers < 1):
        raise UsageError(f"coding workers must be an integer of at least 1 or None, not {opts.coding_workers!r}")


def _step_codes(stack: ModelStack, coords: torch.Tensor, target: torch.Tensor, lengths: list[int], lam_db: float,
                gen: torch.Generator) -> list[dict[str, int]]:
    """Rate-distortion step search for every network of a stack at once.

    Distortion is measured by top-1 routed prediction on a random sample of each signal's
    points (the same number for every network: at most ``EVAL_POINTS``, at most the
    shortest section's length).
    """
    m = coords.shape[0]
    k = min(EVAL_POINTS, *lengths)
    idx = torch.stack([torch.randperm(n, generator=gen)[:k] for n in lengths]).to(coords.device)
    x, y = take(coords, idx), take(target, idx)

    def distortion(networks: list[dict[str, torch.Tensor]]) -> list[float]:
        pred = stack.predict(x, stack.stacked(networks))
        return ((pred.clamp(-1, 1) - y) ** 2).mean(dim=(1, 2)).tolist()

    networks = [stack.coded_tensors(i) for i in range(m)]
    return search_steps(networks, distortion, [c.parameter_count() for c in stack.cfgs], lam_db)


@dataclass
class _Job:
    """One section of one signal, waiting for its network."""

    signal: int  # index among the signals being encoded
    start: int
    stop: int
    config: ModelConfig
    coords: torch.Tensor  # the section's training set (its grid, for an image)
    target: torch.Tensor


@dataclass
class _FittedSection:
    config: ModelConfig
    tensors: "OrderedDict[str, torch.Tensor]"
    codes: dict[str, int]
    float_model: NeuralExperts  # the fitted network before quantization, for the float metrics
    restarts: int


@dataclass
class _Group:
    """Sections of one network family, fitted side by side as one stack (padded to the longest)."""

    jobs: list[_Job]
    stack: ModelStack
    coords: torch.Tensor
    target: torch.Tensor
    lengths: torch.Tensor  # points of each section (the rest of its row is padding)
    iters: int
    loss: LossFn  # the modality's fitting loss, for fine-tuning too


def _padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """``(M, n_max, ...)``: each part followed by copies of its last row up to the longest."""
    n = max(p.shape[0] for p in parts)
    return torch.stack([p if p.shape[0] == n else torch.cat([p, p[-1:].expand(n - p.shape[0], *p.shape[1:])])
                        for p in parts])


def _fit_group(
    jobs: list[_Job], iters: int, lam_db: float, opts: EncodeOptions, device: torch.device, gen: torch.Generator,
    label: str, loss: LossFn,
) -> tuple[_Group, list[_FittedSection]]:
    """Fit the networks of a group side by side and choose their steps (fine-tuning comes later)."""
    coords = _padded([j.coords for j in jobs]).to(device)
    target = _padded([j.target for j in jobs]).to(device)
    lengths = [j.coords.shape[0] for j in jobs]
    counts = torch.tensor(lengths, device=device)
    stack = ModelStack.fresh([j.config for j in jobs], len(jobs), device)
    settings = FitSettings(iters=iters, progress=opts.progress, desc=label)
    logs = fit_stack(stack, coords, target, settings, gen, loss_fn=loss, lengths=counts)
    codes = _step_codes(stack, coords, target, lengths, lam_db, gen)
    sections = [_FittedSection(j.config, stack.coded_tensors(i), codes[i], stack.model(i).eval(), logs[i].restarts)
                for i, j in enumerate(jobs)]
    return _Group(jobs, stack, coords, target, counts, iters, loss), sections


def _fine_tune_group(group: _Group, sections: list[_FittedSection], gen: torch.Generator) -> None:
    """Quantization-aware fine-tuning with the sections' final steps; their tensors become the tuned ones."""
    settings = FitSettings()
    quantization_aware_fit(group.stack, group.coords, group.target, [f.codes for f in sections],
                           int(group.iters * QAT_FRAC), settings.lr * 0.1, settings.batch, gen, group.lengths,
                           group.loss)
    for i, f in enumerate(sections):
        f.tensors = OrderedDict((k, v.cpu()) for k, v in group.stack.coded_tensors(i).items())


def _write(modality: Modality, desc: Any, fitted: list[_FittedSection], shift: int = 0) -> bytes:
    """The stream with every step code but the first layer's made ``shift`` quarter-octaves coarser.

    The first layer multiplies the coordinates, so its errors become phase errors that
    grow with the coordinate range and w0 (a sine network over a long audio window loses
    10 dB or more to them); it holds a handful of weights, so keeping the step search's
    choice for it costs next to nothing.
    """
    sections = [container.Section(f.config, quantize_model(f.tensors, _shifted(f.codes, shift, f.tensors)))
                for f in fitted]
    return container.write(container.Stream(modality.id, modality.pack_descriptor(desc), sections))


def _shifted(codes: dict[str, int], shift: int, tensors: "OrderedDict[str, torch.Tensor]") -> dict[str, int]:
    """Step codes ``shift`` quarter-octaves coarser, the first layer's and single values' excepted (see :func:`_write`).

    A tensor of one value is stored in its table entry (its prior's range) and costs no
    payload bits at any step, so coarsening it saves nothing: at 32 kbps a shift of 11
    made the output bias's step 0.35 and cost 14 dB before fine-tuning (speech-male).
    """
    return {n: c if n in FIRST_LAYER or tensors[n].numel() == 1 else max(c - shift, 0) for n, c in codes.items()}


def _meet_rate(write: Callable[[int], bytes], bits_allowed: float) -> tuple[bytes, int]:
    """The stream with the step codes shifted together to the finest setting that fits ``bits_allowed``, and the shift.

    Sizes are measured on the written stream, header and coder flush included. The
    encoder calls this twice: on the fitted weights, to settle the steps that
    quantization-aware fine-tuning then trains under, and on the tuned weights.
    """
    for shift in range(-8, 64):
        try:
            data = write(shift)
        except ValueError:  # a step too fine for the coder's integer range
            continue
        if 8 * len(data) <= bits_allowed:
            return data, shift
    raise NxcError("the rate target is too small for this signal; raise the target")


def _budget(modality: Modality, desc: Any, opts: EncodeOptions) -> tuple[presets.Preset, float]:
    """The preset (iterations, lambda) and the parameters per sample for one signal."""
    n = modality.num_samples(desc)
    policy = presets.NETWORK_POLICIES[modality.name]
    if opts.rate is None:
        preset = policy.preset(opts.quality)
        return preset, preset.params_per_sample
    if not opts.rate > 0:
        raise NxcError("the rate target must be positive")
    bits_per_sample = modality.bits_allowed(desc, opts.rate) / n
    return policy.preset_for_rate(bits_per_sample), bits_per_sample / policy.bits_per_parameter


def _groups(jobs: list[_Job], iters: list[int], limit: int) -> list[list[_Job]]:
    """Jobs that can share a stack (one network family, the same iterations and lambda), at most ``limit`` each.

    Sections of different lengths and widths share a stack (padded to the longest and the
    widest); within a family, jobs are ordered by size so that each stack pads little.
    """
    by_key: dict[tuple, list[_Job]] = {}
    for j in jobs:
        by_key.setdefault((family(j.config), j.coords.shape[1:], iters[j.signal]), []).append(j)
    out = []
    for g in by_key.values():
        g = sorted(g, key=lambda j: (j.config.parameter_count(), j.coords.shape[0]))
        n = -(-len(g) // limit)  # as few stacks as the limit allows, of even sizes
        out += [g[i * len(g) // n : (i + 1) * len(g) // n] for i in range(n)]
    return out


def _stack_limit(device: torch.device) -> int:
    """Networks per stack: ``STACK_POINTS`` training points per step (``STACK_POINTS_GPU`` on a GPU)."""
    return max(1, (STACK_POINTS_GPU if device.type == "cuda" else STACK_POINTS) // FitSettings.batch)


def encode_signals(modality: Modality, signals_: list[Signal], opts: EncodeOptions) -> list[EncodeResult]:
    """Fit, quantize and code several signals of one modality, each in its format (``opts.format``, or the
    modality's default for the signal), fitting same-sized networks side by side.

    Options out of range raise :class:`UsageError`, and CUDA running out of memory a
    :class:`ResourceError` that says what to try, before or instead of a traceback.
    """
    check_options(opts)
    if opts.format is not None and opts.format not in modality.formats:
        raise UsageError(f"{modality.name} streams can be written as format "
                         f"{' or '.join(map(str, modality.formats))}, not {opts.format}")
    formats = [opts.format or (2 if isinstance(opts.config, ModelConfig) else modality.default_format(s.descriptor))
               for s in signals_]
    for signal, version in zip(signals_, formats):
        modality.check_format(signal.descriptor, version)
    try:
        latent = [i for i, f in enumerate(formats) if f == modality.latent_format]
        others = [i for i, f in enumerate(formats) if f != modality.latent_format]
        if not latent:
            return _encode_networks(modality, signals_, opts)
        done = dict(zip(latent, modality.encode_latent([signals_[i] for i in latent], opts)))
        if others:
            done.update(zip(others, _encode_networks(modality, [signals_[i] for i in others], opts)))
        return [done[i] for i in range(len(signals_))]
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        what = f"fitting {len(signals_)} files together" if len(signals_) > 1 else "fitting"
        raise out_of_gpu_memory(what, "a smaller --group, the CPU (--device cpu) or a lower --quality") from None


def _encode_networks(modality: Modality, signals_: list[Signal], opts: EncodeOptions) -> list[EncodeResult]:
    """Format 2: fit, quantize and code several signals of one modality, fitting same-sized networks side by side.

    Every section of every signal gets its own network; sections whose networks are of one
    family (any lengths; see :func:`_groups`) are fitted as one stack (at most
    ``STACK_POINTS`` points per step, ``STACK_POINTS_GPU`` on a GPU). Each
    result's ``encode_seconds`` is its share of the whole run's time.
    """
    t0 = time.perf_counter()
    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    descs = [s.descriptor for s in signals_]
    budgets = [_budget(modality, d, opts) for d in descs]
    iters = [opts.iters if opts.iters is not None else preset.iters for preset, _ in budgets]
    if min(iters, default=1) < 1:
        raise NxcError("iterations must be at least 1")
    jobs = []
    for i, (signal, desc) in enumerate(zip(signals_, descs)):
        shape = presets.NETWORK_POLICIES[modality.name].network_shape(desc)
        targets = modality.targets(signal)
        for start, stop in modality.sections(desc):
            cfg = opts.config or shape.fit_budget(modality.channels(desc), budgets[i][1] * (stop - start))
            jobs.append(_Job(i, start, stop, cfg, *modality.training_set(signal, targets, start, stop)))
    fitted: dict[tuple[int, int], _FittedSection] = {}
    stacks: list[tuple[_Group, list[_FittedSection]]] = []
    groups = _groups(jobs, iters, _stack_limit(device))
    for g, group in enumerate(groups):
        label = f"fit {modality.name}" + (f" {g + 1}/{len(groups)}" if len(groups) > 1 else "")
        lead = group[0].signal
        stacked, sections = _fit_group(group, iters[lead], budgets[lead][0].lam_db, opts, device, gen, label,
                                       modality.loss)
        stacks.append((stacked, sections))
        fitted.update(((j.signal, j.start), f) for j, f in zip(group, sections))

    def sections_of(i: int) -> list[_FittedSection]:
        return [fitted[(j.signal, j.start)] for j in jobs if j.signal == i]

    if opts.rate is not None:  # settle each signal's steps for its rate target before fine-tuning under them
        for i, desc in enumerate(descs):
            mine = sections_of(i)
            write = functools.partial(_write, modality, desc, mine)  # write(shift) -> stream
            shift = _meet_rate(write, modality.bits_allowed(desc, opts.rate))[1]
            for f in mine:
                f.codes = _shifted(f.codes, shift, f.tensors)
    for stacked, sections in stacks:
        _fine_tune_group(stacked, sections, gen)

    results = []
    for i, desc in enumerate(descs):
        mine = sections_of(i)
        if opts.rate is None:
            data = _write(modality, desc, mine)
        else:
            write = functools.partial(_write, modality, desc, mine)
            data = _meet_rate(write, modality.bits_allowed(desc, opts.rate))[0]
        results.append((data, mine))
    encode_seconds = (time.perf_counter() - t0) / len(signals_)

    out = []
    for (data, mine), signal, desc in zip(results, signals_, descs):
        float_array = modality.reconstruct(desc, [routed(f.float_model) for f in mine], device)
        _, decoded = decode_stream(data, device=str(device))  # what a user gets, checked on the fitting device
        out.append(EncodeResult(
            data=data,
            rate=modality.rate(desc, len(data)),
            rate_unit=modality.rate_unit,
            metrics=modality.metrics(signal.data, decoded),
            float_metrics=modality.metrics(signal.data, float_array),
            encode_seconds=encode_seconds,
            device=device_name(device),
            configs=[f.config for f in mine],
            n_params=sum(f.config.parameter_count() for f in mine),
            restarts=sum(f.restarts for f in mine),
        ))
    return out


def encode_signal(modality: Modality, signal: Signal, opts: EncodeOptions) -> EncodeResult:
    """Fit, quantize and code one signal."""
    return encode_signals(modality, [signal], opts)[0]
