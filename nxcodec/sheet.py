"""Side-by-side comparison sheets: an original and its decodings by several codecs at equal bytes.

A sheet has two rows: the whole images, each labelled with codec, bytes and PSNR, and the
same square crop of each at 2x zoom (the most detailed square of the original, outlined on
it). ``nxcodec demo`` and ``nxcodec bench image`` both write their sheets with
:func:`equal_bytes_sheet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from nxcodec.baselines import NAMES, Point, at_size, available_codecs
from nxcodec.io import write_atomic

PAD = 8  # pixels around panels
ZOOM = 2
Box = tuple[int, int, int, int]  # left, top, right, bottom


@dataclass
class Panel:
    """One column of a sheet: a name and its (H, W, 3) uint8 pixels, with its size and PSNR if coded."""

    name: str
    pixels: np.ndarray
    n_bytes: int | None = None
    psnr: float | None = None
    note: str = ""  # said after the label, e.g. that no file of this codec is small enough

    @property
    def label(self) -> str:
        if self.n_bytes is None:
            return f"{self.name} {self.pixels.shape[1]}x{self.pixels.shape[0]}"
        return f"{self.name}: {self.n_bytes} bytes, PSNR {self.psnr:.2f} dB" + (f" ({self.note})" if self.note else "")


@dataclass
class Sheet:
    """A drawn sheet, with where each panel's whole image and zoomed crop lie on it."""

    image: Image.Image
    labels: list[str]
    image_boxes: list[Box]
    crop_boxes: list[Box]
    crop: Box  # the cropped square, in the original's pixels


def detailed_square(pixels: np.ndarray, side: int) -> Box:
    """The ``side`` x ``side`` square of the image with the most local contrast (sum of gradients)."""
    gray = pixels.astype(np.float64).mean(axis=2)
    detail = np.zeros_like(gray)
    detail[1:, :] += np.abs(np.diff(gray, axis=0))
    detail[:, 1:] += np.abs(np.diff(gray, axis=1))
    s = np.pad(detail.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # s[y, x] = sum of detail[:y, :x]
    sums = s[side:, side:] - s[:-side, side:] - s[side:, :-side] + s[:-side, :-side]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y), int(x) + side, int(y) + side


def draw_sheet(panels: list[Panel]) -> Sheet:
    """Lay the panels out in columns: whole images on top, their 2x crops below, a label under each."""
    font = ImageFont.load_default()
    h, w = panels[0].pixels.shape[:2]
    side = max(1, min(h, w) // 2)
    crop = detailed_square(panels[0].pixels, side)
    labels = [p.label for p in panels]
    crop_labels = [f"{p.name}, crop at {ZOOM}x" for p in panels]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(int(measure.textlength(t, font=font)) for t in labels + crop_labels)
    text_h = max(measure.textbbox((0, 0), t, font=font)[3] for t in labels) + 6
    col = max(w, ZOOM * side, text_w)
    top2 = PAD + h + text_h + PAD
    sheet = Image.new("RGB", (PAD + len(panels) * (col + PAD), top2 + ZOOM * side + text_h + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    image_boxes, crop_boxes = [], []
    for i, panel in enumerate(panels):
        x = PAD + i * (col + PAD)
        im = Image.fromarray(panel.pixels)
        sheet.paste(im, (x, PAD))
        zoomed = im.crop(crop).resize((ZOOM * side, ZOOM * side), Image.NEAREST)
        sheet.paste(zoomed, (x, top2))
        draw.text((x, PAD + h + 3), labels[i], fill="black", font=font)
        draw.text((x, top2 + ZOOM * side + 3), crop_labels[i], fill="black", font=font)
        image_boxes.append((x, PAD, x + w, PAD + h))
        crop_boxes.append((x, top2, x + ZOOM * side, top2 + ZOOM * side))
    left, top, right, bottom = crop
    draw.rectangle((PAD + left - 1, PAD + top - 1, PAD + right, PAD + bottom), outline="red")  # outside the crop
    return Sheet(sheet, labels, image_boxes, crop_boxes, crop)


def write_sheet(path: Path, panels: list[Panel]) -> Sheet:
    """Draw the panels and write the sheet as a PNG (its labels also go into the PNG's Description)."""
    sheet = draw_sheet(panels)
    info = PngInfo()
    info.add_text("Description", "\n".join(sheet.labels))
    write_atomic(path, lambda tmp: sheet.image.save(tmp, format="PNG", pnginfo=info), force=True)
    return sheet


def equal_bytes_sheet(path: Path, original: Image.Image, nxc_bytes: int, nxc_pixels: np.ndarray, nxc_psnr: float,
                      codecs: list[str] | None = None) -> list[Point]:
    """Code an RGB original with each baseline at the largest size not above nxcodec's, and write the sheet.

    ``codecs`` defaults to every baseline this Pillow writes. Returns the baselines' points
    (a baseline whose smallest file is still larger keeps that smallest file).
    """
    points = [at_size(original, codec, nxc_bytes) for codec in (available_codecs() if codecs is None else codecs)]
    panels = [Panel("original", np.asarray(original)), Panel("nxcodec", nxc_pixels, nxc_bytes, nxc_psnr)]
    panels += [Panel(NAMES[p.codec], p.decoded, p.n_bytes, p.psnr, "" if p.n_bytes <= nxc_bytes else "its smallest")
               for p in points]
    write_sheet(path, panels)
    return points
