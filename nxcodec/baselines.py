"""Classical codecs measured beside nxcodec (Pillow's JPEG, WebP and AVIF for images)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

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


def jpeg_at_size(image: Image.Image, max_bytes: int) -> Point:
    """The best JPEG (Pillow) whose file is not larger than ``max_bytes`` (quality 1 if none is)."""
    lo, hi = 1, 95
    best = pillow_point(image, "jpeg", 1)
    while lo <= hi:
        mid = (lo + hi) // 2
        p = pillow_point(image, "jpeg", mid)
        if p.n_bytes <= max_bytes:
            best, lo = p, mid + 1
        else:
            hi = mid - 1
    return best
