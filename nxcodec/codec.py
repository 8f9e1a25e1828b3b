"""The codec: signal -> fitted, quantized, entropy-coded stream, and back.

``encode_signal`` runs the pipeline: pick a network (preset or rate target), fit it,
choose quantization steps by rate-distortion, fine-tune under quantization, write the
stream, and decode it once to report what a user will get. ``decode_stream`` is the whole
decoder: parse, rebuild the network from the stream, evaluate it on the grid in chunks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from nxcodec import container, signals
from nxcodec.errors import NxcError
from nxcodec.fit import presets
from nxcodec.fit.qat import quantization_aware_fit
from nxcodec.fit.train import FitSettings, fit
from nxcodec.model import ModelConfig, NeuralExperts
from nxcodec.quant import QuantizedTensor, dequantize, quantize_model, search_steps
from nxcodec.signals import Modality, Signal

DECODE_CHUNK = 1 << 16
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
    config: ModelConfig
    n_params: int
    restarts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


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


def load_tensors(model: NeuralExperts, tensors: "OrderedDict[str, QuantizedTensor]") -> None:
    """Set the model's weights to the dequantized stream tensors."""
    params = model.coded_tensors()
    with torch.no_grad():
        for name, qt in tensors.items():
            p = params[name]
            p.copy_(torch.from_numpy(dequantize(qt.ints, qt.code)).reshape(p.shape))


def predict_grid(model: NeuralExperts, modality: Modality, descriptor: Any, device: torch.device) -> np.ndarray:
    """Routed predictions over the whole grid, converted chunk by chunk to the signal's samples."""
    n = modality.num_samples(descriptor)
    parts = []
    for start in range(0, n, DECODE_CHUNK):
        coords = modality.coords(descriptor, start, min(start + DECODE_CHUNK, n)).to(device)
        values = model.forward_routed(coords)[0].float().cpu().numpy()
        parts.append(modality.to_samples(descriptor, values))
    return modality.assemble(descriptor, np.concatenate(parts))


def _rate_search(
    model: NeuralExperts,
    coords: torch.Tensor,
    target: torch.Tensor,
    lam_db: float,
    gen: torch.Generator,
) -> dict[str, int]:
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


def _meet_rate(
    tensors: "OrderedDict[str, torch.Tensor]", codes: dict[str, int], write: Callable[[dict[str, int]], bytes], bits_allowed: float
) -> bytes:
    """The stream with all step codes shifted together to the finest setting that fits ``bits_allowed``.

    Sizes are measured on the written stream, header and coder flush included.
    """
    for shift in range(-8, 64):
        shifted = {n: max(c - shift, 0) for n, c in codes.items()}
        try:
            data = write(shifted)
        except ValueError:  # a step too fine for the coder's integer range
            continue
        if 8 * len(data) <= bits_allowed:
            return data
    raise NxcError("the rate target is too small for this signal; raise --bpp")


def encode_signal(modality: Modality, signal: Signal, opts: EncodeOptions) -> EncodeResult:
    """Fit, quantize and code one signal."""
    t0 = time.perf_counter()
    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    desc = signal.descriptor
    n = modality.num_samples(desc)
    out_dim = modality.channels(desc)
    shape = modality.network_shape(desc)
    if opts.rate is not None:
        if not opts.rate > 0:
            raise NxcError("the rate target must be positive")
        bits_per_sample = modality.bits_allowed(desc, opts.rate) / n
        preset = presets.preset_for_rate(bits_per_sample)
        cfg = shape.fit_budget(out_dim, bits_per_sample * n / presets.BITS_PER_PARAMETER)
    else:
        preset = presets.get(opts.quality)
        cfg = shape.fit_budget(out_dim, preset.params_per_sample * n)
    if opts.config is not None:
        cfg = opts.config
    iters = opts.iters if opts.iters is not None else preset.iters
    if iters < 1:
        raise NxcError("--iters must be at least 1")

    coords = modality.coords(desc).to(device)
    target = modality.targets(signal).to(device)
    model = NeuralExperts(cfg).to(device)
    settings = FitSettings(iters=iters, progress=opts.progress, desc=f"fit {modality.name}")
    log = fit(model, coords, target, settings, gen)
    float_array = predict_grid(model, modality, desc, device)
    float_metrics = modality.metrics(signal.data, float_array)

    codes = _rate_search(model, coords, target, preset.lam_db, gen)
    quantization_aware_fit(model, coords, target, codes, int(iters * QAT_FRAC), settings.lr * 0.1, settings.batch, gen)
    tensors = OrderedDict((k, v.detach().cpu()) for k, v in model.coded_tensors().items())

    def write(step_codes: dict[str, int]) -> bytes:
        quantized = quantize_model(tensors, step_codes)
        return container.write(container.Stream(modality.id, modality.pack_descriptor(desc), cfg, quantized))

    if opts.rate is None:
        data = write(codes)
    else:
        data = _meet_rate(tensors, codes, write, modality.bits_allowed(desc, opts.rate))
    encode_seconds = time.perf_counter() - t0

    _, decoded = decode_stream(data, device="cpu")
    return EncodeResult(
        data=data,
        rate=modality.rate(desc, len(data)),
        rate_unit=modality.rate_unit,
        metrics=modality.metrics(signal.data, decoded),
        float_metrics=float_metrics,
        encode_seconds=encode_seconds,
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        config=cfg,
        n_params=cfg.parameter_count(),
        restarts=log.restarts,
    )


@dataclass
class Decoded:
    """What a stream decodes to."""

    modality: Modality
    descriptor: Any


def decode_stream(data: bytes, device: str = "cpu") -> tuple[Decoded, np.ndarray]:
    """Decode a stream to the signal's array (``StreamError`` for any defect)."""
    stream = container.read(data)
    modality = signals.for_id(stream.modality)
    desc = modality.unpack_descriptor(stream.descriptor)
    if stream.config.out_dim != modality.channels(desc) or stream.config.in_dim != modality.coord_dim:
        from nxcodec.errors import StreamError

        raise StreamError("model config does not match the signal it describes")
    dev = resolve_device(device)
    model = NeuralExperts(stream.config)
    load_tensors(model, stream.tensors)
    model.to(dev).eval()
    return Decoded(modality, desc), predict_grid(model, modality, desc, dev)
