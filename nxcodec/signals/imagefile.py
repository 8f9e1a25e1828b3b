"""The image descriptor of a stream and writing decoded images, without torch.

Shared by every image format version: the latent decoder (version 3) uses it directly,
the fitting side through :class:`nxcodec.signals.image.ImageModality`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nxcodec.errors import StreamError

MAX_PIXELS = 1 << 27  # the decoder refuses larger images before allocating
MAX_SIDE = 1 << 16
_DESC = struct.Struct("<IIBB")  # width, height, channels, bit depth
_KINDS = {1: "grayscale", 2: "grayscale+alpha", 3: "RGB", 4: "RGBA"}
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what the encoder reads


@dataclass(frozen=True)
class ImageDescriptor:
    """What the decoder needs to rebuild an image."""

    width: int
    height: int
    channels: int
    bit_depth: int

    @property
    def peak(self) -> int:
        return (1 << self.bit_depth) - 1


def pack(d: ImageDescriptor) -> bytes:
    return _DESC.pack(d.width, d.height, d.channels, d.bit_depth)


def unpack(data: bytes) -> ImageDescriptor:
    """Parse and bound-check an image descriptor (``StreamError`` if invalid)."""
    if len(data) != _DESC.size:
        raise StreamError("image descriptor has the wrong size")
    w, h, c, depth = _DESC.unpack(data)
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE and w * h <= MAX_PIXELS):
        raise StreamError(f"declared image size {w}x{h} is beyond the decoder's limits")
    if c not in (1, 2, 3, 4) or depth not in (8, 16) or (depth == 16 and c != 1):
        raise StreamError("declared channels or bit depth are invalid")
    return ImageDescriptor(w, h, c, depth)


def to_samples(d: ImageDescriptor, values: np.ndarray) -> np.ndarray:
    """Network outputs in [-1, 1] to stored samples: ``round((clip(v) + 1) * peak / 2)`` in binary64, half to even
    (SPEC.md 7: binary32 arithmetic here would round some 16-bit samples the other way)."""
    v = np.rint((np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0) + 1.0) * (d.peak / 2.0))
    return v.astype(np.uint8 if d.bit_depth == 8 else np.uint16)


def write(d: ImageDescriptor, array: np.ndarray, path: Path) -> None:
    """Write ``(H, W, C)`` samples as a PNG."""
    if d.bit_depth == 16:
        im = Image.fromarray(array[..., 0].astype(np.uint16))
    else:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[d.channels]
        im = Image.fromarray(array.reshape(d.height, d.width, d.channels).squeeze(-1) if d.channels == 1 else array, mode)
    im.save(path, format="PNG")


def describe(d: ImageDescriptor) -> str:
    return f"image {d.width}x{d.height} {_KINDS[d.channels]} {d.bit_depth}-bit"


def rate(d: ImageDescriptor, n_bytes: int) -> float:
    """Bits per pixel of a stream of ``n_bytes`` (the whole file: SPEC.md section 2)."""
    return 8.0 * n_bytes / (d.width * d.height)


class ImageFiles:
    """What a decoder needs of the image modality: its name, output types, rate and writer."""

    name = "image"
    rate_unit = "bpp"
    rate = staticmethod(rate)
    extensions = EXTENSIONS
    default_extension = ".png"
    output_extensions: tuple[str, ...] = (".png",)

    def write(self, d: ImageDescriptor, array: np.ndarray, path: Path) -> None:
        write(d, array, path)

    def write_as(self, d: ImageDescriptor, array: np.ndarray, path: Path, suffix: str) -> None:
        write(d, array, path)

    def describe(self, d: ImageDescriptor) -> str:
        return describe(d)
