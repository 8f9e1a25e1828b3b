"""The Python API: ``encode(path_or_array) -> bytes``, ``decode(bytes) -> array`` and ``decode_file``.

Importing it loads no torch: decoding a format 3 image needs numpy only, and the encoder
is imported when something is encoded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nxcodec import signals
from nxcodec.decoder import decode_stream, decode_to_file, describe_stream
from nxcodec.io import check_source, read_stream
from nxcodec.limits import Limits

if TYPE_CHECKING:
    from nxcodec.codec import EncodeResult


def encode_file(
    source: str | Path | np.ndarray | object,
    quality: int | None = None,
    rate: float | None = None,
    iters: int | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    modality: str | None = None,
    format: int | None = None,
) -> "EncodeResult":
    """Encode a file, or an array (an image unless ``modality`` says otherwise), with a full report.

    ``quality`` is 1..9 (None: the default, 5). ``format`` is the stream version to write
    (images: 12, latent grids, by default, 2 under 4096 pixels; 2, one coordinate network). Every failure a
    caller can cause (a missing or unreadable file, an unsupported array, an option out of
    range, the GPU running out of memory) raises an :class:`nxcodec.errors.NxcError`
    subclass with a one-line message.
    """
    from nxcodec.codec import EncodeOptions, encode_signal

    if not isinstance(source, (str, os.PathLike)):  # an array, or a mesh for modality="shape"
        mod = signals.for_name(modality or "image")
        signal = mod.from_array(source)
    else:
        path = Path(source)
        check_source(path)
        mod = signals.for_name(modality) if modality else signals.for_path(path)
        signal = mod.read(path)
    opts = EncodeOptions(rate=rate, iters=iters, device=device, seed=seed, progress=progress, format=format)
    if quality is not None:
        opts.quality = quality
    return encode_signal(mod, signal, opts)


def encode(source: str | Path | np.ndarray, **kwargs) -> bytes:
    """Compress a file or an array into ``.nxc`` bytes (keyword arguments as :func:`encode_file`)."""
    return encode_file(source, **kwargs).data


def decode(data: bytes, device: str = "cpu", limits: Limits | None = None, resolution: int | None = None) -> Any:
    """Decode ``.nxc`` bytes to the signal's array (an image as ``(H, W, C)`` uint8/uint16) or a shape's mesh.

    ``limits`` (:class:`nxcodec.limits.Limits`) lower what a stream may make the decoder do;
    a stream beyond them raises :class:`nxcodec.errors.StreamError` before any work.
    ``resolution`` is a shape's marching-cubes grid (the stream's default if None; an error for other signals).
    """
    options = {"resolution": resolution} if resolution is not None else {}
    return decode_stream(data, device, limits, **options)[1]


def info(data: bytes) -> dict[str, Any]:
    """What ``.nxc`` bytes declare, from the header alone (nothing decoded, no network run), as ``nxcodec info
    --json`` prints it: ``version``, ``latent_grids`` (False for the coordinate networks of versions 1 and 2),
    ``modality`` ("image", "audio" or "shape"), ``bytes``, ``rate`` and ``rate_unit``, ``signal`` (the descriptor's
    fields, SPEC.md sections 2, 10.2, 11.2: an image's ``width``, ``height``, ``channels``, ``bit_depth``; a clip's
    ``frames``, ``sample_rate``, ``channels``, ``sample_format`` ...; a shape's ``centre``, ``scale``, ``trunc``)
    and ``summary``, the (label, text) lines of ``nxcodec info`` (a label may repeat, or be empty on a line that
    goes on the one before). An invalid stream raises :class:`nxcodec.errors.StreamError`."""
    return describe_stream(data)


def decode_file(source: str | Path, output: str | Path, force: bool = False, device: str = "cpu",
                limits: Limits | None = None, resolution: int | None = None) -> Path:
    """Decode the stream file ``source`` into the signal file ``output``, as ``nxcodec decode`` does.

    The output's extension picks its format (``.png``, ``.wav``, ``.ply`` ...); an existing
    output is replaced only with ``force``, and a failed decode leaves nothing under its name.
    Audio is written segment by segment, so unlike :func:`decode` this takes clips of any
    length a stream may declare. ``resolution`` is a shape's marching-cubes grid.
    """
    output = Path(output)
    options = {"resolution": resolution} if resolution is not None else {}
    decode_to_file(read_stream(Path(source)), output, force, device, limits, **options)
    return output
