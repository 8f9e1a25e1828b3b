"""Images: PNG, JPEG, BMP, TIFF and WebP in; PNG out at the original size and bit depth.

The grid is one coordinate per pixel centre, x and y each spanning [-1, 1]; samples
are the pixel values scaled to [-1, 1]. Grayscale stays grayscale and alpha is coded as
one more channel.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from nxcodec.errors import InputError
from nxcodec.signals import imagefile
from nxcodec.signals.base import Modality, Signal, psnr_from_mse
from nxcodec.signals.imagefile import MAX_PIXELS, MAX_SIDE, ImageDescriptor

if TYPE_CHECKING:
    import torch

    from nxcodec.codec import EncodeOptions, EncodeResult

_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
LATENT_MIN_PIXELS = 64 * 64  # smaller images are written as format 2 unless asked otherwise


def _check_size(width: int, height: int, where: str = "") -> None:
    """Refuse an image beyond the format's limits (``where``: the message's prefix, such as the file's name)."""
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise InputError(f"{where}image of {width}x{height} pixels exceeds the limits ({MAX_SIDE} pixels a side, "
                         f"{MAX_PIXELS} in all)")


def _to_array(im: Image.Image) -> tuple[np.ndarray, int]:
    """Pixels as ``(H, W, C)`` and the bit depth, converting palettes and other modes."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.int64)
        if a.min() < 0 or a.max() > 65535:
            raise InputError("32-bit integer images are not supported")
        return a.astype(np.uint16)[..., None], 16
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode not in _MODES:
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).reshape(im.height, im.width, _MODES[im.mode]), 8


# The first bytes of each file type the encoder reads (WebP, a RIFF file, is told by its form type)
MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"BM", ".bmp"), (b"II*\x00", ".tif"),
         (b"MM\x00*", ".tif"))


class ImageModality(Modality):
    id = 1
    name = "image"
    extensions = imagefile.EXTENSIONS
    rate_unit = imagefile.ImageFiles.rate_unit
    coord_dim = 2
    default_extension = ".png"
    formats = (2, 12)  # 2: one coordinate network; 12: latent grids (bitstream/SPEC.md sections 9, 12, 15, 17, 18)
    latent_format = 12

    def sniff(self, data: bytes) -> str | None:
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return ".webp"
        return next((ext for magic, ext in MAGIC if data.startswith(magic)), None)

    def encode_latent(self, signals_: list[Signal], opts: EncodeOptions) -> list[EncodeResult]:
        from nxcodec.fit.latent_image import encode_images

        return encode_images(self, signals_, opts)

    def default_format(self, d: ImageDescriptor) -> int:
        """Latent grids, except for icons: a latent stream carries about 200 bytes of tables and
        networks, more than a whole 32x32 image is worth at the rates people use."""
        return self.latent_format if d.width * d.height >= LATENT_MIN_PIXELS else 2

    def read(self, path: Path) -> Signal:
        """The image at ``path``; its size is checked from the header, before any pixel is decoded, so that a small
        file declaring a huge image costs nothing (Pillow's own decompression-bomb limit is higher than ours)."""
        try:
            with warnings.catch_warnings():  # process-wide, so not thread-safe; nxcodec reads files in one thread
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    _check_size(*im.size, where=f"{path}: ")
                    im.load()
                    array, depth = _to_array(im)
        except Image.DecompressionBombError as exc:
            raise InputError(f"{path}: the image is too large to read ({exc})") from None
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"{path}: cannot read image ({exc})") from None
        return self._signal(array, depth)

    def from_array(self, array: np.ndarray) -> Signal:
        a = np.asarray(array)
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
            raise InputError("an image array must be (H, W) or (H, W, C) with 1-4 channels")
        if a.dtype == np.uint8:
            return self._signal(a, 8)
        if a.dtype == np.uint16:
            return self._signal(a, 16)
        raise InputError(f"image arrays must be uint8 or uint16, not {a.dtype}")

    def _signal(self, array: np.ndarray, depth: int) -> Signal:
        h, w, c = array.shape
        if h * w == 0:
            raise InputError("image is empty")
        _check_size(w, h)
        if depth == 16 and c != 1:
            raise InputError("16-bit images are supported in grayscale only")
        return Signal(ImageDescriptor(w, h, c, depth), array)

    def pack_descriptor(self, d: ImageDescriptor) -> bytes:
        return imagefile.pack(d)

    def unpack_descriptor(self, data: bytes) -> ImageDescriptor:
        return imagefile.unpack(data)

    def channels(self, d: ImageDescriptor) -> int:
        return d.channels

    def num_samples(self, d: ImageDescriptor) -> int:
        return d.width * d.height

    def coords(self, d: ImageDescriptor, start: int, stop: int) -> "torch.Tensor":
        """Pixel centres ``(x + 0.5) * 2 / width - 1`` (and so for y), computed in binary64, as binary32 (SPEC.md 7)."""
        import torch

        i = torch.arange(start, stop, dtype=torch.int64)
        x = ((i % d.width).double() + 0.5) * (2.0 / d.width) - 1.0
        y = ((i // d.width).double() + 0.5) * (2.0 / d.height) - 1.0
        return torch.stack([x, y], dim=-1).float()

    def targets(self, signal: Signal) -> "torch.Tensor":
        import torch

        d = signal.descriptor
        v = signal.data.reshape(-1, d.channels).astype(np.float32)
        return torch.from_numpy(v * (2.0 / d.peak) - 1.0)

    def to_samples(self, d: ImageDescriptor, values: np.ndarray) -> np.ndarray:
        return imagefile.to_samples(d, values)

    def assemble(self, d: ImageDescriptor, samples: np.ndarray) -> np.ndarray:
        return samples.reshape(d.height, d.width, d.channels)

    def write(self, d: ImageDescriptor, array: np.ndarray, path: Path) -> None:
        imagefile.write(d, array, path)

    def metrics(self, original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
        peak = 65535.0 if original.dtype == np.uint16 else 255.0
        mse = float(np.mean((original.astype(np.float64) - decoded.astype(np.float64)) ** 2))
        return {"psnr": psnr_from_mse(mse, peak), "mse": mse}

    def rate(self, d: ImageDescriptor, n_bytes: int) -> float:
        return imagefile.rate(d, n_bytes)

    def bits_allowed(self, d: ImageDescriptor, rate: float) -> float:
        return rate * d.width * d.height

    def describe(self, d: ImageDescriptor) -> str:
        return imagefile.describe(d)
