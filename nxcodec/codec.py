"""The codec: signal -> fitted, quantized, entropy-coded stream, and back.

``encode_signal`` runs the pipeline for each section of the signal (an image is one):
pick a network (preset or rate target), fit it, choose quantization steps by
rate-distortion, fine-tune under quantization; then it writes the stream and decodes it
once to report what a user will get. ``decode_stream`` is the whole decoder: parse,
rebuild each section's network from the stream, evaluate it on the grid in chunks.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from nxcodec import container, signals
from nxcodec.errors import NxcError, StreamError
from nxcodec.fit import presets
from nxcodec.fit.qat import quantization_aware_fit
from nxcodec.fit.train import FitSettings, fit
from nxcodec.model import ModelConfig, NeuralExperts
from nxcodec.quant import QuantizedTensor, dequantize, quantize_model, search_steps
from nxcodec.signals import Modality, Signal
from nxcodec.signals.base import Field

EVAL_POINTS = 1 << 15  # points used to measure distortion during step search
QAT_FRAC = 0.15


@dataclass
class EncodeOptions:
    """What the user asked for."""

    quality: int = presets.DEFAULT_QUALITY
    rate: float | None = None  # target in the modality's unit (bpp for images)
    iters: int | None = None
    device: str = "auto"
    seed: int = 0
    progress: bool = False
    config: ModelConfig | None = None  # a fixed network instead of the preset's (experiments, conformance)


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


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; an unavailable CUDA is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NxcError("CUDA was requested but no GPU is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise NxcError(f"unknown device '{name}'") from None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def load_tensors(model: NeuralExperts, tensors: "OrderedDict[str, QuantizedTensor]") -> None:
    """Set the model's weights to the dequantized stream tensors."""
    params = model.coded_tensors()
    with torch.no_grad():
        for name, qt in tensors.items():
            p = params[name]
            p.copy_(torch.from_numpy(dequantize(qt.ints, qt.code)).reshape(p.shape))


def routed(model: NeuralExperts) -> Field:
    """The network as the decoder evaluates it: hard top-1 routing."""
    return lambda coords: model.forward_routed(coords)[0]


def _step_codes(
    model: NeuralExperts, coords: torch.Tensor, target: torch.Tensor, lam_db: float, gen: torch.Generator
) -> dict[str, int]:
    """Rate-distortion step search, with distortion measured by routed decoding of a point sample."""
    idx = torch.randperm(coords.shape[0], generator=gen)[:EVAL_POINTS].to(coords.device)
    ref = {k: v.detach().clone() for k, v in model.coded_tensors().items()}
    probe = NeuralExperts(model.cfg).to(coords.device)
    probe_params = probe.coded_tensors()

    def distortion(tensors: dict[str, torch.Tensor]) -> float:
        with torch.no_grad():
            for name, t in tensors.items():
                probe_params[name].copy_(t)
            pred = probe.forward_routed(coords[idx])[0]
            return float(((pred.clamp(-1, 1) - target[idx]) ** 2).mean())

    return search_steps(ref, distortion, model.cfg.parameter_count(), lam_db)


@dataclass
class _FittedSection:
    config: ModelConfig
    tensors: "OrderedDict[str, torch.Tensor]"
    codes: dict[str, int]
    float_model: NeuralExperts  # the fitted network before quantization, for the float metrics
    restarts: int


def _fit_section(
    modality: Modality, signal: Signal, targets: torch.Tensor, start: int, stop: int, cfg: ModelConfig, iters: int,
    lam_db: float, opts: EncodeOptions, device: torch.device, gen: torch.Generator, label: str,
) -> _FittedSection:
    coords, target = (t.to(device) for t in modality.training_set(signal, targets, start, stop))
    model = NeuralExperts(cfg).to(device)
    settings = FitSettings(iters=iters, progress=opts.progress, desc=label)
    log = fit(model, coords, target, settings, gen)
    float_model = copy.deepcopy(model).eval()
    codes = _step_codes(model, coords, target, lam_db, gen)
    quantization_aware_fit(model, coords, target, codes, int(iters * QAT_FRAC), settings.lr * 0.1, settings.batch, gen)
    tensors = OrderedDict((k, v.detach().cpu()) for k, v in model.coded_tensors().items())
    return _FittedSection(cfg, tensors, codes, float_model, log.restarts)


def _write(modality: Modality, desc: Any, fitted: list[_FittedSection], shift: int = 0) -> bytes:
    """The stream with every step code made ``shift`` quarter-octaves coarser."""
    sections = []
    for f in fitted:
        codes = {n: max(c - shift, 0) for n, c in f.codes.items()}
        sections.append(container.Section(f.config, quantize_model(f.tensors, codes)))
    return container.write(container.Stream(modality.id, modality.pack_descriptor(desc), sections))


def _meet_rate(write: Callable[[int], bytes], bits_allowed: float) -> bytes:
    """The stream with all step codes shifted together to the finest setting that fits ``bits_allowed``.

    Sizes are measured on the written stream, header and coder flush included.
    """
    for shift in range(-8, 64):
        try:
            data = write(shift)
        except ValueError:  # a step too fine for the coder's integer range
            continue
        if 8 * len(data) <= bits_allowed:
            return data
    raise NxcError("the rate target is too small for this signal; raise the target")


def encode_signal(modality: Modality, signal: Signal, opts: EncodeOptions) -> EncodeResult:
    """Fit, quantize and code one signal."""
    t0 = time.perf_counter()
    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    desc = signal.descriptor
    n = modality.num_samples(desc)
    shape = modality.network_shape(desc)
    if opts.rate is not None:
        if not opts.rate > 0:
            raise NxcError("the rate target must be positive")
        bits_per_sample = modality.bits_allowed(desc, opts.rate) / n
        preset = presets.preset_for_rate(bits_per_sample)
        params_per_sample = bits_per_sample / presets.BITS_PER_PARAMETER
    else:
        preset = presets.get(opts.quality)
        params_per_sample = preset.params_per_sample
    iters = opts.iters if opts.iters is not None else preset.iters
    if iters < 1:
        raise NxcError("iterations must be at least 1")

    ranges = modality.sections(desc)
    targets = modality.targets(signal)
    fitted = []
    for i, (start, stop) in enumerate(ranges):
        cfg = opts.config or shape.fit_budget(modality.channels(desc), params_per_sample * (stop - start))
        label = f"fit {modality.name}" + (f" {i + 1}/{len(ranges)}" if len(ranges) > 1 else "")
        fitted.append(_fit_section(modality, signal, targets, start, stop, cfg, iters, preset.lam_db, opts, device, gen,
                                   label))

    if opts.rate is None:
        data = _write(modality, desc, fitted)
    else:
        data = _meet_rate(lambda shift: _write(modality, desc, fitted, shift), modality.bits_allowed(desc, opts.rate))
    encode_seconds = time.perf_counter() - t0

    float_array = modality.reconstruct(desc, [routed(f.float_model) for f in fitted], device)
    _, decoded = decode_stream(data, device="cpu")
    return EncodeResult(
        data=data,
        rate=modality.rate(desc, len(data)),
        rate_unit=modality.rate_unit,
        metrics=modality.metrics(signal.data, decoded),
        float_metrics=modality.metrics(signal.data, float_array),
        encode_seconds=encode_seconds,
        device=device_name(device),
        configs=[f.config for f in fitted],
        n_params=sum(f.config.parameter_count() for f in fitted),
        restarts=sum(f.restarts for f in fitted),
    )


@dataclass
class Decoded:
    """What a stream decodes to."""

    modality: Modality
    descriptor: Any


def decode_stream(data: bytes, device: str = "cpu", **options: Any) -> tuple[Decoded, Any]:
    """Decode a stream to the signal's array (``StreamError`` for any defect).

    ``options`` are the modality's decode-time choices (a shape's ``resolution``).
    """
    stream = container.read(data)
    modality = signals.for_id(stream.modality)
    desc = modality.unpack_descriptor(stream.descriptor)
    ranges = modality.sections(desc)
    if len(ranges) != len(stream.sections):
        raise StreamError(f"stream has {len(stream.sections)} sections where its signal needs {len(ranges)}")
    dev = resolve_device(device)
    fields = []
    for section in stream.sections:
        cfg = section.config
        if cfg.out_dim != modality.channels(desc) or cfg.in_dim != modality.coord_dim:
            raise StreamError("model config does not match the signal it describes")
        model = NeuralExperts(cfg)
        load_tensors(model, section.tensors)
        model.to(dev).eval()
        fields.append(routed(model))
    return Decoded(modality, desc), modality.reconstruct(desc, fields, dev, **options)
