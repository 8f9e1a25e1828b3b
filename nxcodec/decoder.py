"""Decoding any ``.nxc`` stream: the version byte picks the decoder.

Version 3 image streams decode with numpy alone (``nxcodec.latent``); versions 1 and 2
(coordinate networks) load torch on demand. Nothing here imports the fitting code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nxcodec import signals
from nxcodec.errors import InputError, StreamError
from nxcodec.limits import Limits

LATENT_VERSION = 3


@dataclass
class Decoded:
    """What a stream decodes to: the modality (or, for version 3, its image writer) and the descriptor."""

    modality: Any
    descriptor: Any


def stream_version(data: bytes) -> int:
    """The version byte of a stream (``StreamError`` if it is not one)."""
    if len(data) < 5 or data[:4] != b"\x89NXC":
        raise StreamError("not an nxcodec stream (bad magic)")
    return data[4]


def output_kind(data: bytes) -> Any:
    """The modality a stream decodes to (name, output extensions, writer), from its header alone."""
    if stream_version(data) == LATENT_VERSION:
        from nxcodec.signals.imagefile import ImageFiles

        return ImageFiles()
    from nxcodec import container

    return signals.for_id(container.read_header(data)[0])


def check_latent_limits(data: bytes, limits: Limits) -> None:
    """Refuse a version 3 stream beyond ``limits`` from its header alone (samples, MACs per pixel, total work)."""
    from nxcodec.latent import stream

    h = stream.read_header(data)
    d = h.descriptor
    samples, macs = d.width * d.height * d.channels, h.config.mac_per_pixel(d.channels)
    if samples > limits.max_samples:
        raise StreamError(f"the stream decodes to {samples} samples, over this decoder's limit of {limits.max_samples}")
    if macs > limits.max_macs or macs * d.width * d.height > limits.max_work:
        raise StreamError(f"decoding the stream would take {macs * d.width * d.height:.3g} multiply-adds, over this "
                          f"decoder's limit")


def decode_stream(data: bytes, device: str = "cpu", limits: Limits | None = None,
                  **options: Any) -> tuple[Decoded, Any]:
    """Decode a stream to the signal's array (``StreamError`` for any defect).

    ``options`` are the modality's decode-time choices (a shape's ``resolution``).
    ``limits`` bound what the stream may make the decoder do (the spec's by default):
    everything they bound is checked once the header is parsed, before any entropy
    decoding, network evaluation or output allocation.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"a stream is bytes, not {type(data).__name__}")
    data = bytes(data)
    if stream_version(data) == LATENT_VERSION:
        from nxcodec.latent import stream
        from nxcodec.signals.imagefile import ImageFiles

        unknown = set(options) - {"max_faces"}
        if unknown:
            raise InputError(f"image streams take no decode option {', '.join(sorted(unknown))}")
        check_latent_limits(data, limits or Limits())
        descriptor, array = stream.decode(data)
        return Decoded(ImageFiles(), descriptor), array
    from nxcodec.codec import decode_networks

    return decode_networks(data, device, limits, **options)
