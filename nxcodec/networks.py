"""Decoding versions 1 and 2 (coordinate networks): rebuild each section's network from the stream and evaluate it
on the signal's grid, chunk by chunk (SPEC.md sections 3 to 7).

This module and what it imports are the whole decoder of those versions: nothing of the fitting code.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from nxcodec import container, signals
from nxcodec.decoder import Decoded
from nxcodec.errors import ResourceError, StreamError, UsageError
from nxcodec.limits import Limits, check as check_limits
from nxcodec.model import NeuralExperts
from nxcodec.signals.base import Field
from nxcodec.steps import QuantizedTensor, dequantize

# Decoded networks (versions 1 and 2) are evaluated in binary64 on every device
# (SPEC.md section 7): float32 results differ between CPU families and BLAS kernels by
# enough to move 0.5-1% of 16-bit audio samples by one code value, and routing is an
# argmax over float logits; in binary64 they agree except at near-exact ties.
DECODE_DTYPE = torch.float64


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; an unavailable CUDA is a clear error."""
    if not isinstance(name, str):
        raise UsageError(f"a device is a name such as cpu or cuda:0, not {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("CUDA was requested but no GPU is available; use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"there is no {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def out_of_gpu_memory(doing: str, hint: str) -> ResourceError:
    """The one line that replaces CUDA's out-of-memory error: what ran out and what to try."""
    return ResourceError(f"the GPU ran out of memory while {doing}; try {hint}")


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
    """The network as the decoder evaluates it: hard top-1 routing, in the precision of the model's weights.

    Coordinates are converted to that precision first (exactly, from binary32 to binary64
    for a decoded network), and the outputs stay in it.
    """
    dtype = next(model.parameters()).dtype
    return lambda coords: model.forward_routed(coords.to(dtype))[0]


def decode_networks(data: bytes, device: str = "cpu", limits: Limits | None = None,
                    **options: Any) -> tuple[Decoded, Any]:
    """Decode a version 1 or 2 stream (coordinate networks) to the signal's array (``StreamError`` for any defect).

    Each network is evaluated in binary64 (``DECODE_DTYPE``), its binary32 weights
    converted exactly, so that every CPU and GPU decodes the same samples.

    ``options`` are the modality's decode-time choices (a shape's ``resolution``).
    ``limits`` bound what the stream may make the decoder do (the spec's by default):
    everything they bound is checked once the header and the section tables are parsed,
    before any entropy decoding, network evaluation or output allocation.
    """
    limits = limits or Limits()
    modality_id, descriptor, configs, layout = container.read_header(data)
    modality = signals.for_id(modality_id)
    desc = modality.unpack_descriptor(descriptor)
    ranges = modality.sections(desc)
    if len(ranges) != len(configs):
        raise StreamError(f"stream has {len(configs)} sections where its signal needs {len(ranges)}")
    for cfg in configs:
        if cfg.out_dim != modality.channels(desc) or cfg.in_dim != modality.coord_dim:
            raise StreamError("model config does not match the signal it describes")
    if "max_faces" in modality.decode_options:
        options = {**options, "max_faces": min(options.get("max_faces") or limits.max_faces, limits.max_faces)}
    check_limits(configs, modality.decode_points(desc, **options), modality.decoded_samples(desc), layout.table_work,
                 limits)
    dev = resolve_device(device)
    stream = container.read(data)
    try:
        fields = []
        for section in stream.sections:
            model = NeuralExperts(section.config)
            load_tensors(model, section.tensors)
            model.to(dev, DECODE_DTYPE).eval()
            fields.append(routed(model))
        return Decoded(modality, desc), modality.reconstruct(desc, fields, dev, **options)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise out_of_gpu_memory("decoding", "the CPU (--device cpu)" + (
            " or a lower --resolution" if "resolution" in modality.decode_options else "")) from None
