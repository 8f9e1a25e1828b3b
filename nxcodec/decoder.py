"""Decoding any ``.nxc`` stream: the version byte (and the modality byte) pick the decoder.

Latent streams (version 3 images, version 4 images and audio, version 5 shapes, version 6 all three, versions 7 and 8
shapes, version 9 images and audio, version 10 long audio, version 11 images and audio with a compact tensor table,
version 12 images with a raster context) decode with numpy alone (``nxcodec.latent``); versions 1 and 2 (coordinate networks) load torch on demand.
Nothing here imports the fitting code.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxcodec import signals
from nxcodec.errors import InputError, OutputError, StreamError
from nxcodec.io import check_writable, write_atomic
from nxcodec.limits import Limits

LATENT_VERSIONS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
# (version, modality) -> the module that reads the stream and the class that writes what it decodes to.
_LATENT = {
    (3, 1): ("nxcodec.latent.stream", "nxcodec.signals.imagefile", "ImageFiles"),
    (4, 1): ("nxcodec.latent.stream", "nxcodec.signals.imagefile", "ImageFiles"),
    (4, 2): ("nxcodec.latent.audio", "nxcodec.signals.audiofile", "AudioFiles"),
    (5, 3): ("nxcodec.latent.shape", "nxcodec.signals.meshfile", "MeshFiles"),
}
_LATENT.update({(6, 1): _LATENT[3, 1], (6, 2): _LATENT[4, 2], (6, 3): _LATENT[5, 3]})  # the same layouts, with escapes
_LATENT[7, 3] = _LATENT[8, 3] = _LATENT[5, 3]  # shapes with an occupancy map (8: and built-in context models)
_LATENT.update({(9, 1): _LATENT[3, 1], (9, 2): _LATENT[4, 2]})  # images and audio with finer latent tables
_LATENT[10, 2] = _LATENT[4, 2]  # audio longer than version 9 allows
_LATENT.update({(11, 1): _LATENT[3, 1], (11, 2): _LATENT[4, 2]})  # images and audio with a compact tensor table
_LATENT[12, 1] = _LATENT[3, 1]  # images with a raster context


@dataclass
class Decoded:
    """What a stream decodes to: the modality (or, for a latent stream, its file writer) and the descriptor."""

    modality: Any
    descriptor: Any


MAGIC = b"\x89NXC"
SHORTEST = 12  # magic, version, modality, desc_len and CRC: no stream is shorter (SPEC.md 1)


def stream_version(data: bytes) -> int:
    """The version byte of a stream (``StreamError`` if it is not one)."""
    if not MAGIC.startswith(bytes(data[:4])):
        raise StreamError("not an nxcodec stream (bad magic)")
    if len(data) < SHORTEST:
        raise StreamError(f"stream is truncated ({len(data)} bytes, fewer than the {SHORTEST} of its prefix and CRC)")
    return data[4]


def is_latent(data: bytes) -> bool:
    """Whether a stream is coded on latent grids (versions 3 to 12)."""
    return stream_version(data) in LATENT_VERSIONS


def latent_reader(data: bytes) -> Any:
    """The module that reads a latent stream (``read_header``, ``work``, ``decode``)."""
    kind = _LATENT.get((data[4], data[5] if len(data) > 5 else -1))
    if kind is None:
        raise StreamError(f"version {data[4]} streams carry no modality {data[5] if len(data) > 5 else '(none)'}")
    return importlib.import_module(kind[0])


def check_header(data: bytes) -> None:
    """Parse and check a stream's header, sizes and CRC without decoding it (``StreamError`` if invalid)."""
    if is_latent(data):
        latent_reader(data).read_header(data)
        return
    from nxcodec import container

    container.read_header(data)


def output_kind(data: bytes) -> Any:
    """The modality a stream decodes to (name, output extensions, writer), from its header alone."""
    if is_latent(data):
        latent_reader(data)
        _, module, cls = _LATENT[(data[4], data[5])]
        return getattr(importlib.import_module(module), cls)()
    from nxcodec import container

    return signals.for_id(container.read_header(data)[0])


def describe_stream(data: bytes) -> dict[str, Any]:
    """What a stream declares, from its header alone (nothing entropy-decoded, no network run): its version, kind
    of signal, descriptor fields (an image's size, a clip's sample rate and length, a shape's frame ...), rate,
    and ``summary``, the labelled lines ``nxcodec info`` prints. ``StreamError`` for a stream that is not valid."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"a stream is bytes, not {type(data).__name__}")
    data = bytes(data)
    latent = is_latent(data)
    if latent:
        reader = latent_reader(data)  # and the stream's file writer for its kind: no fitting code is imported
        kind, descriptor, summary = output_kind(data), reader.read_header(data).descriptor, reader.info(data)
    else:
        kind, descriptor, summary = _network_stream(data)
    fields: dict[str, Any] = {}
    for name, value in dataclasses.asdict(descriptor).items():  # a shape's frame, nested in its grid's, is flattened
        fields.update(value if isinstance(value, dict) else {name: value})
    if "sample_format" in fields:  # audio: the WAV sample type it decodes to, by name (SPEC.md 2a's code beside it)
        fields["subtype"] = descriptor.subtype
    return {"version": data[4], "latent_grids": latent, "modality": kind.name, "bytes": len(data),
            "rate": kind.rate(descriptor, len(data)), "rate_unit": kind.rate_unit, "signal": fields,
            "summary": summary}


def _network_stream(data: bytes) -> tuple[Any, Any, list[tuple[str, str]]]:
    """A version 1 or 2 stream's modality, descriptor and the lines ``nxcodec info`` shows of it."""
    from nxcodec import container

    modality_id, raw, configs, layout = container.read_header(data)
    modality = signals.for_id(modality_id)
    descriptor = modality.unpack_descriptor(raw)
    parts = [("header", layout.header), ("signal descriptor", layout.descriptor), ("section count field", 2),
             ("model configs", layout.config), ("tensor tables", layout.tensor_table),
             ("payloads with their lengths", layout.payload), ("CRC", layout.crc)]  # in stream order
    summary = [("signal", modality.describe(descriptor)),
               ("rate", f"{modality.rate(descriptor, len(data)):.4f} {modality.rate_unit} (whole file)"),
               ("sections", str(layout.n_sections)), ("parameters", str(layout.parameters)),
               ("bytes", ", ".join(f"{name} {size} bytes" for name, size in parts)),
               *((f"model {i}", container.describe_config(cfg)) for i, cfg in enumerate(configs[:8]))]
    if len(configs) > 8:
        summary.append(("", f"... and {len(configs) - 8} more sections"))
    return modality, descriptor, summary


def check_latent_limits(data: bytes, limits: Limits, streamed: bool = False, **options: Any) -> None:
    """Refuse a latent stream beyond ``limits`` from its header alone (samples, MACs per sample, total work).

    A ``streamed`` decode holds one segment, not the signal: ``max_samples`` (samples held in memory) does not
    bound it; the work limits do."""
    samples, macs, work = latent_reader(data).work(data, **options)
    if samples > limits.max_samples and not streamed:
        raise StreamError(f"the stream decodes to {samples} samples, over this decoder's limit of {limits.max_samples}")
    if macs > limits.max_macs or work > limits.max_work:
        raise StreamError(f"decoding the stream would take {work:.3g} multiply-adds, over this decoder's limit")


def decode_stream(data: bytes, device: str = "cpu", limits: Limits | None = None, streamed: bool = False,
                  **options: Any) -> tuple[Decoded, Any]:
    """Decode a stream to the signal's array (``StreamError`` for any defect).

    With ``streamed``, a stream whose reader can decode block by block (latent audio:
    ``decode_streamed``) gives an object the modality's writer consumes block by block,
    so a long clip is written in one segment's memory (and ``limits.max_samples``, on samples held in memory,
    does not apply).

    ``options`` are the modality's decode-time choices (a shape's ``resolution``).
    ``limits`` bound what the stream may make the decoder do (the spec's by default):
    everything they bound is checked once the header is parsed, before any entropy
    decoding, network evaluation or output allocation.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"a stream is bytes, not {type(data).__name__}")
    data = bytes(data)
    if is_latent(data):
        reader = latent_reader(data)
        allowed = getattr(reader, "DECODE_OPTIONS", ())
        unknown = set(options) - set(allowed) - {"max_faces"}
        if unknown:
            raise InputError(f"this stream takes no decode option {', '.join(sorted(unknown))}")
        limits = limits or Limits()
        options = {k: v for k, v in options.items() if k in allowed}
        if "max_faces" in allowed:
            options["max_faces"] = min(options.get("max_faces") or limits.max_faces, limits.max_faces)
        lazy = streamed and hasattr(reader, "decode_streamed")
        check_latent_limits(data, limits, lazy, **options)
        descriptor, array = reader.decode_streamed(data, **options) if lazy else reader.decode(data, **options)
        return Decoded(output_kind(data), descriptor), array
    from nxcodec.networks import decode_networks

    return decode_networks(data, device, limits, **options)


def decode_to_file(data: bytes, output: Path, force: bool = False, device: str = "cpu",
                   limits: Limits | None = None, **options: Any) -> Decoded:
    """Decode a stream into the signal file ``output`` (its extension picks the format), atomically.

    The output's name and folder are checked before any decoding, and nothing is left under
    its name if decoding fails. Audio is written segment by segment as it decodes, so a clip
    of any length the stream may declare takes one segment's memory.
    """
    kind = output_kind(data)
    if output.suffix.lower() not in kind.output_extensions:
        raise OutputError(f"{output}: a decoded {kind.name} is written as "
                          f"{' or '.join(kind.output_extensions)}; name the output accordingly")
    check_writable(output, force)
    decoded, array = decode_stream(data, device, limits, streamed=True, **options)
    write_atomic(output, lambda tmp: decoded.modality.write_as(decoded.descriptor, array, tmp, output.suffix), force)
    return decoded
