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


def decode_stream(data: bytes, device: str = "cpu", **options: Any) -> tuple[Decoded, Any]:
    """Decode a stream to the signal's array (``StreamError`` for any defect).

    ``options`` are the modality's decode-time choices (a shape's ``resolution``).
    """
    if stream_version(data) == LATENT_VERSION:
        from nxcodec.latent import stream

        if options:
            raise InputError(f"image streams take no decode option {', '.join(sorted(options))}")
        from nxcodec.signals.imagefile import ImageFiles

        descriptor, array = stream.decode(data)
        return Decoded(ImageFiles(), descriptor), array
    from nxcodec.codec import decode_networks

    return decode_networks(data, device, **options)
