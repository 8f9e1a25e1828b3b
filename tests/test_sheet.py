"""Side-by-side sheets and the demo: baselines at equal bytes, panel placement, labels."""

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import real_image
from PIL import Image, ImageFilter

from nxcodec.baselines import NAMES, QUALITY_RANGE, at_size, available_codecs, pillow_point
from nxcodec import cli
from nxcodec.cli import main
from nxcodec.sheet import Panel, detailed_square, draw_sheet, equal_bytes_sheet

ROOT = Path(__file__).resolve().parents[1]


def test_at_size_is_the_largest_file_within_the_budget():
    im = Image.fromarray(real_image((64, 48)))
    assert set(available_codecs()) == {"jpeg", "webp", "avif"}  # this Pillow writes all three
    for codec in available_codecs():
        p = at_size(im, codec, 900)
        assert p.n_bytes <= 900 and p.quality < QUALITY_RANGE[codec][1]
        assert pillow_point(im, codec, p.quality + 1).n_bytes > 900  # one step up would not fit
        assert at_size(im, codec, 10).quality == QUALITY_RANGE[codec][0]  # nothing fits: the smallest file


def test_the_crop_is_the_most_detailed_square():
    flat = np.full((40, 60, 3), 128, np.uint8)
    flat[20:30, 35:45] = np.indices((10, 10)).sum(0)[..., None] % 2 * 255  # a checkerboard
    left, top, right, bottom = detailed_square(flat, 10)
    assert (left, top, right, bottom) == (35, 20, 45, 30)


def test_panels_and_their_2x_crops_land_where_the_sheet_says():
    a = real_image((40, 24))
    b = 255 - a
    sheet = draw_sheet([Panel("original", a), Panel("nxcodec", b, 123, 20.5)])
    pixels = np.asarray(sheet.image)
    assert sheet.labels == ["original 40x24", "nxcodec: 123 bytes, PSNR 20.50 dB"]
    assert sheet.image.width > 2 * 40 and sheet.image.height > 24 + 2 * 12
    left, top, right, bottom = sheet.image_boxes[1]
    assert np.array_equal(pixels[top:bottom, left:right], b)
    x0, y0, x1, y1 = sheet.crop
    assert x1 - x0 == y1 - y0 == 12
    left, top, right, bottom = sheet.crop_boxes[1]
    assert np.array_equal(pixels[top:bottom, left:right], b[y0:y1, x0:x1].repeat(2, 0).repeat(2, 1))
    below = pixels[bottom : bottom + 10, left:right]
    assert (below < 100).any()  # the crop's label is drawn under it


def test_equal_bytes_sheet_has_every_codec_labelled(tmp_path):
    original = Image.fromarray(real_image((48, 32)))
    stand_in = np.asarray(original.filter(ImageFilter.BLUR))  # plays nxcodec's decoding
    path = tmp_path / "sheet.png"
    points = equal_bytes_sheet(path, original, 900, stand_in, 25.0)
    assert [p.codec for p in points] == ["jpeg", "webp", "avif"]
    assert all(p.n_bytes <= 900 for p in points)
    with Image.open(path) as sheet:
        labels = sheet.text["Description"].splitlines()
        assert sheet.width >= 5 * 48 and sheet.height >= 32 + 2 * 16
    assert labels == ["original 48x32", "nxcodec: 900 bytes, PSNR 25.00 dB"] + [
        f"{NAMES[p.codec]}: {p.n_bytes} bytes, PSNR {p.psnr:.2f} dB" for p in points]


def test_demo_prints_four_codecs_and_writes_the_sheet(tmp_path, monkeypatch):
    sample = tmp_path / "small.png"
    Image.fromarray(real_image((40, 32))).save(sample)
    monkeypatch.setattr(cli, "SAMPLE", sample)  # the bundled 256x256 sample takes a minute
    sheet = tmp_path / "demo.png"
    res = CliRunner().invoke(main, ["demo", "--iters", "30", "--device", "cpu", "--sheet", str(sheet)])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.output.splitlines() if line.strip()}
    for codec in ("nxcodec", "JPEG", "WebP", "AVIF"):
        assert codec in rows and int(rows[codec][1]) > 0
    assert f"side by side: {sheet.resolve()}" in res.output
    with Image.open(sheet) as im:
        labels = im.text["Description"].splitlines()
        assert im.width > 5 * 40
    assert [label.split()[0].rstrip(":") for label in labels] == ["original", "nxcodec", "JPEG", "WebP", "AVIF"]
    assert labels[1].startswith(f"nxcodec: {rows['nxcodec'][1]} bytes")
