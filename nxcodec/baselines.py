"""Classical codecs measured beside nxcodec (Pillow's JPEG, WebP and AVIF for images)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, features

from nxcodec.signals.base import psnr_from_mse


@dataclass
class Point:
    """One baseline encoding of one image."""

    codec: str
    quality: int
    n_bytes: int
    bpp: float
    psnr: float
    encode_seconds: float
    decode_seconds: float
    decoded: np.ndarray | None = None


_FORMATS = {"jpeg": ("JPEG", {}), "webp": ("WEBP", {"method": 6}), "avif": ("AVIF", {"speed": 4})}


def pillow_point(image: Image.Image, codec: str, quality: int) -> Point:
    """Encode ``image`` with Pillow at ``quality`` and measure size, PSNR over RGB and times."""
    fmt, extra = _FORMATS[codec]
    buf = io.BytesIO()
    t0 = time.perf_counter()
    image.save(buf, format=fmt, quality=quality, **extra)
    t1 = time.perf_counter()
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        decoded = np.asarray(im.convert(image.mode))
    t2 = time.perf_counter()
    ref = np.asarray(image)
    mse = float(np.mean((ref.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    n = buf.tell()
    bpp = 8.0 * n / (image.width * image.height)
    return Point(codec, quality, n, bpp, psnr_from_mse(mse, 255.0), t1 - t0, t2 - t1, decoded)


QUALITY_RANGE = {"jpeg": (1, 95), "webp": (0, 100), "avif": (0, 100)}  # Pillow's useful quality settings
NAMES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}


def available_codecs() -> list[str]:
    """The baselines this Pillow can write (AVIF and WebP depend on how Pillow was built)."""
    return [c for c in _FORMATS if c == "jpeg" or features.check(c)]


def at_size(image: Image.Image, codec: str, max_bytes: int) -> Point:
    """The best ``codec`` file (Pillow) not larger than ``max_bytes``: a binary search over its quality.

    When even the lowest quality is larger, that smallest file is returned (check ``n_bytes``).
    """
    lo, hi = QUALITY_RANGE[codec]
    best = pillow_point(image, codec, lo)
    lo += 1
    while lo <= hi and best.n_bytes <= max_bytes:
        mid = (lo + hi) // 2
        p = pillow_point(image, codec, mid)
        if p.n_bytes <= max_bytes:
            best, lo = p, mid + 1
        else:
            hi = mid - 1
    return best


def jpeg_at_size(image: Image.Image, max_bytes: int) -> Point:
    """The best JPEG not larger than ``max_bytes`` (quality 1 if none is)."""
    return at_size(image, "jpeg", max_bytes)
