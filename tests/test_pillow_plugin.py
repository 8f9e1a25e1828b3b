"""Pillow opens .nxc image streams: size and mode from the header, pixels as nxcodec.decode's, decoded lazily."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fast_encode, real_image
from PIL import Image, UnidentifiedImageError

import nxcodec

ROOT = Path(__file__).resolve().parents[1]


def test_open_reads_size_and_mode_then_decodes_on_load(tmp_path, rgb_stream, rgb_image):
    path = tmp_path / "crop.nxc"
    path.write_bytes(rgb_stream)
    with Image.open(path) as im:
        assert (im.format, im.size, im.mode) == ("NXC", (48, 40), "RGB")
        assert im.tile  # nothing decoded yet
        im.load()
        assert not im.tile
        assert np.array_equal(np.asarray(im), nxcodec.decode(rgb_stream))
    assert Image.open(io.BytesIO(rgb_stream)).size == (48, 40)


CONFORMANCE = ROOT / "bitstream" / "conformance"


@pytest.mark.parametrize("data, size, mode", [
    ((CONFORMANCE / "gray_k2_mgrenc_13x11.nxc").read_bytes(), (13, 11), "L"),
    ((CONFORMANCE / "rgba_k1_sine_24x16.nxc").read_bytes(), (24, 16), "RGBA"),
    (None, (20, 12), "I;16"),
    ((CONFORMANCE / "v9" / "image" / "rgb_k2_refine_48x32.nxc").read_bytes(), (48, 32), "RGB"),  # latent grids
    ((CONFORMANCE / "v9" / "image" / "gray16_k3_21x17.nxc").read_bytes(), (21, 17), "I;16"),
    ((CONFORMANCE / "v6" / "image" / "gray_k1_37x29.nxc").read_bytes(), (37, 29), "L"),
])
def test_every_image_kind_opens_with_its_mode_and_pixels(data, size, mode):
    if data is None:  # no conformance stream is 16-bit: encode one (a short fit)
        data = fast_encode((real_image(size)[..., :1].astype(np.uint16) * 257), iters=30).data
    with Image.open(io.BytesIO(data)) as im:
        assert (im.size, im.mode) == (size, mode)
        assert np.array_equal(np.asarray(im).reshape(size[1], size[0], -1), nxcodec.decode(data))


def test_streams_that_are_not_images_are_not_identified(tmp_path, rgb_stream):
    with pytest.raises(UnidentifiedImageError):
        Image.open(CONFORMANCE / "stereo_k2_3windows_8khz.nxc")
    corrupt = tmp_path / "corrupt.nxc"
    corrupt.write_bytes(rgb_stream[:-5])
    with pytest.raises(UnidentifiedImageError):
        Image.open(corrupt)


def test_import_nxcodec_registers_the_plugin_which_itself_imports_no_torch(tmp_path, rgb_stream):
    (tmp_path / "x.nxc").write_bytes(rgb_stream)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from PIL import Image; import nxcodec; print(Image.open('x.nxc').size)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "(48, 40)", out.stderr
    alone = ("import importlib.util, sys; "
             f"spec = importlib.util.spec_from_file_location('plugin', {str(ROOT / 'nxcodec' / 'pillow_plugin.py')!r}); "
             "spec.loader.exec_module(importlib.util.module_from_spec(spec)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", alone], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
