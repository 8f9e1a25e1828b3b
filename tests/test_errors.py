"""Every failure a caller can cause is an NxcError with one line; CUDA's out-of-memory says what to try."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import nxcodec
from nxcodec import codec, networks
from nxcodec.cli import main
from nxcodec.errors import InputError, NxcError, ResourceError, StreamError, UsageError

ROOT = Path(__file__).resolve().parents[1]
SHAPE = ROOT / "bitstream" / "conformance" / "shape_torus_k2.nxc"
TINY = np.full((6, 5, 3), 100, dtype=np.uint8)


@pytest.mark.parametrize("kwargs", [
    {"quality": 0}, {"quality": 10}, {"quality": "5"}, {"iters": 0}, {"iters": 2.5},
    {"rate": -1.0}, {"rate": float("nan")}, {"rate": float("inf")}, {"rate": "0.5"}, {"seed": "x"},
    {"device": "tpu"}, {"device": 5}, {"device": "cuda:3"}, {"modality": "video"},
])
def test_bad_options_through_the_api_raise_an_nxc_error(kwargs):
    with pytest.raises(NxcError) as info:
        nxcodec.encode(TINY, iters=kwargs.pop("iters", 5), **kwargs)
    assert "\n" not in str(info.value) and str(info.value)


def test_a_bad_quality_is_still_a_value_error_for_old_callers():
    with pytest.raises(ValueError, match="quality"):
        nxcodec.encode(TINY, quality=12)
    assert issubclass(UsageError, NxcError)


@pytest.mark.parametrize("source", [42, None, [[1, 2], [3, 4.5]], np.zeros((2, 2, 7), np.uint8), "missing.png"])
def test_bad_sources_raise_an_input_error(source):
    with pytest.raises(InputError):
        nxcodec.encode(source, iters=5)


@pytest.mark.parametrize("source, message", [("missing.gif", "missing.gif: no such file"), (".", "is a directory")])
def test_a_missing_source_or_a_folder_is_said_so_before_its_type(source, message):
    with pytest.raises(InputError, match=message):
        nxcodec.encode(source, iters=5)


@pytest.mark.parametrize("data", [None, "text", 7, b"", b"\x89NXC"])
def test_bad_streams_raise_an_nxc_error(data):
    with pytest.raises(NxcError):
        nxcodec.decode(data)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` grayscale pixels and holds almost none of them (a few bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + chunk(b"IEND", b""))
    return path


def bmp_header_only(path: Path, width: int, height: int) -> Path:
    """A 24-bit BMP that declares ``width`` x ``height`` pixels and holds none of them."""
    import struct

    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info)
    return path


@pytest.mark.parametrize("name, width, height, message", [
    ("big.png", 12000, 12000, "image of 12000x12000 pixels exceeds the limits"),
    ("big.png", 70000, 10, "image of 70000x10 pixels exceeds the limits (65536 pixels a side"),
    ("big.bmp", 12000, 12000, "image of 12000x12000 pixels exceeds the limits"),
    ("big.png", 30000, 30000, "the image is too large to read (Image size (900000000 pixels)"),
])
def test_an_image_too_large_is_refused_from_its_header(tmp_path, name, width, height, message):
    """The declared size is checked before any pixel is decoded: these files hold next to no pixel data, and are
    refused for their size, not as truncated. 30000 x 30000 is beyond Pillow's own decompression-bomb limit (an
    exception of Pillow's, once a traceback); 12000 x 12000 is below it but beyond nxcodec's 2^27 pixels."""
    make = bmp_header_only if name.endswith(".bmp") else png_header_only
    src = make(tmp_path / name, width, height)
    with pytest.raises(InputError) as caught:
        nxcodec.encode(src, iters=1)
    assert str(caught.value).startswith(f"{src}: {message}")
    res = CliRunner().invoke(main, ["encode", str(src), "--iters", "1"])
    assert res.exit_code == 2 and message in res.output and not (tmp_path / f"{name}.nxc").exists()


def test_an_image_within_nxcodecs_limit_reads_without_pillows_warning(tmp_path):
    """10000 x 10000 is within nxcodec's 2^27 pixels but above Pillow's warning threshold (89M pixels): no warning
    reaches the user; this file, holding no pixels, is then refused as unreadable."""
    import warnings

    src = png_header_only(tmp_path / "tall.png", 10000, 10000)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match="cannot read image"):
            nxcodec.encode(src, iters=1)
    assert not [w for w in seen if "DecompressionBomb" in w.category.__name__]


def test_a_mesh_without_area_is_an_input_error():
    vertices = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    with pytest.raises(InputError, match="no area"):
        nxcodec.encode((vertices, np.array([[0, 1, 2], [1, 2, 3]])), modality="shape", iters=5)


SHEETS = {
    "one_triangle": (np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]])),
    "flat_square": (np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]), np.array([[0, 1, 2], [0, 2, 3]])),
}


@pytest.mark.parametrize("name", sorted(SHEETS))
def test_an_open_sheet_is_refused_before_fitting(tmp_path, name):
    """A surface that encloses nothing has no signed distance field: before, it encoded to a stream that decoded to
    nothing (IoU 0). Now it is one line of error, and nothing is written."""
    import trimesh

    vertices, faces = SHEETS[name]
    with pytest.raises(InputError, match="encloses no volume"):
        nxcodec.encode((vertices, faces), modality="shape", iters=1)
    src = tmp_path / f"{name}.obj"
    trimesh.Trimesh(vertices, faces, process=False).export(src)
    res = CliRunner().invoke(main, ["encode", str(src), "--iters", "1"])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and f"{src}: the surface encloses no volume" in lines[0]
    assert list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize("change", ["one_side_open", "inward_faces"])
def test_an_open_box_or_an_inward_wound_mesh_still_encloses_its_volume(change):
    """Real scans have holes and some are wound inward; their generalised winding number still has an inside."""
    import trimesh

    from nxcodec.signals.shape import ShapeModality

    box = trimesh.creation.box()
    faces = box.faces[box.face_normals[:, 0] > -0.5] if change == "one_side_open" else box.faces[:, ::-1]
    signal = ShapeModality().from_array((box.vertices, faces))
    inside = signal.data.surface_index().inside(np.array([[0.0, 0, 0], [0.2, -0.1, 0.3], [2.0, 0, 0]]))
    assert inside.tolist() == [True, True, False]


def cuda_oom(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB total "
                                      "capacity; 70.01 GiB already allocated)")


def test_cuda_out_of_memory_while_encoding_says_what_to_try(monkeypatch, tmp_path):
    monkeypatch.setattr(codec, "_fit_group", cuda_oom)
    with pytest.raises(ResourceError) as info:
        nxcodec.encode(TINY, iters=5)
    message = str(info.value)
    assert "\n" not in message and "out of memory" in message
    assert "--group" in message and "--device cpu" in message and "--quality" in message
    from PIL import Image

    Image.fromarray(TINY).save(tmp_path / "tiny.png")
    res = CliRunner().invoke(main, ["encode", str(tmp_path / "tiny.png"), "--iters", "5"])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nxcodec: error: the GPU ran out of memory"), res.output
    assert not (tmp_path / "tiny.nxc").exists()


def test_cuda_out_of_memory_while_decoding_says_what_to_try(monkeypatch):
    monkeypatch.setattr(networks, "routed", cuda_oom)
    with pytest.raises(ResourceError, match=r"--device cpu\) or a lower --resolution"):
        codec.decode_stream(SHAPE.read_bytes(), resolution=16)


def test_mesh_library_failures_while_decoding_a_shape_are_stream_errors(monkeypatch):
    import skimage.measure

    from nxcodec.signals import meshfile

    data = SHAPE.read_bytes()
    with monkeypatch.context() as mp:
        mp.setattr(skimage.measure, "marching_cubes", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad level")))
        with pytest.raises(StreamError, match="cannot be meshed"):
            codec.decode_stream(data, resolution=16)
    with monkeypatch.context() as mp:
        mp.setattr(meshfile, "clean_mesh", lambda *a: (_ for _ in ()).throw(IndexError("index 9 is out of bounds")))
        with pytest.raises(StreamError, match="cannot be cleaned"):
            codec.decode_stream(data, resolution=16)
    assert len(codec.decode_stream(data, resolution=16)[1].faces) > 0
