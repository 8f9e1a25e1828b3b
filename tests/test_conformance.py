"""The conformance streams of bitstream/ decode to their expected images and weights."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from nxcodec.codec import decode_stream

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bitstream" / "conformance"
sys.path.insert(0, str(ROOT / "bitstream"))
from make_conformance import weights_digest  # noqa: E402

CASES = json.loads((HERE / "manifest.json").read_text())
# version 1 streams (images only), written by the version 1 encoder: still decoded
LEGACY = [{**c, "stream": f"v1/{c['stream']}", "expected": f"v1/{c['expected']}"}
          for c in json.loads((HERE / "v1" / "manifest.json").read_text())]


def test_there_are_conformance_streams_of_every_modality_and_version():
    assert {(HERE / c["stream"]).read_bytes()[5] for c in CASES} == {1, 2, 3}
    assert {(HERE / c["stream"]).read_bytes()[4] for c in CASES} == {2}
    assert {(HERE / c["stream"]).read_bytes()[4] for c in LEGACY} == {1}


def test_a_version_1_stream_of_a_later_modality_is_refused():
    import zlib

    from nxcodec.errors import StreamError

    audio = next(c for c in CASES if c["expected"].endswith(".wav"))
    data = bytearray((HERE / audio["stream"]).read_bytes())
    data[4] = 1
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    with pytest.raises(StreamError, match="version 1 stream cannot hold modality 2"):
        decode_stream(bytes(data))


def with_config(name: str, payload: bytes | None = None, **changes) -> bytes:
    """A one-section version 2 stream of ``bitstream/conformance`` with its model config fields changed (and its
    payload replaced), the CRC made right again. The config is packed by hand (ModelConfig's struct layout, SPEC.md
    3), not through ModelConfig, which refuses the invalid values some tests write."""
    import struct
    import zlib

    from nxcodec.model.config import ModelConfig, tensor_shapes

    data = (HERE / name).read_bytes()
    pos = 8 + int.from_bytes(data[6:8], "little") + 2  # magic, version, modality, desc_len, descriptor, n_sections
    cfg = ModelConfig.unpack(data[pos:pos + ModelConfig.SIZE])
    table = pos + ModelConfig.SIZE
    end = table + 9 * len(tensor_shapes(cfg))
    (length,) = struct.unpack_from("<I", data, end)
    body = data[end + 4:end + 4 + length] if payload is None else payload
    config = struct.pack(ModelConfig._FORMAT, *(changes.get(f, getattr(cfg, f)) for f in cfg.__dataclass_fields__))
    out = data[:pos] + config + data[table:end] + struct.pack("<I", len(body)) + body
    return out + zlib.crc32(out).to_bytes(4, "little")


def test_an_empty_payload_is_valid_and_reads_as_zero_words():
    """SPEC.md 6: reads past a payload's end give 0, so a version 2 section with no payload words still decodes."""
    decoded = decode_stream(with_config("rgb_k4_24x16.nxc", payload=b""))[1]
    assert decoded.shape == (16, 24, 3)


def test_with_one_expert_the_manager_fields_are_ignored():
    """SPEC.md 3: with K = 1 there is no manager, so its fields may hold any values within the limits."""
    name = "rgba_k1_sine_24x16.nxc"
    same = decode_stream(with_config(name, mgr_width=1024, mgr_enc_depth=16, mgr_depth=16))[1]
    assert np.array_equal(same, decode_stream((HERE / name).read_bytes())[1])


def test_the_w0_stream_tells_the_first_layers_from_the_others():
    """gray_k3_w0_f0 is the one stream whose first sine layers' w0 differs from the others': a decoder that gave
    every layer one of the two, or swapped them, would decode it to other pixels."""
    name = "gray_k3_w0_f0_19x13.nxc"
    expected = np.asarray(Image.open(HERE / name.replace(".nxc", ".png"))).reshape(13, 19, 1).astype(int)
    assert np.array_equal(decode_stream((HERE / name).read_bytes())[1].astype(int), expected)
    for wrong in ({"w0_first": 45}, {"w0_hidden": 12}, {"w0_first": 45, "w0_hidden": 12}):
        misread = decode_stream(with_config(name, **wrong))[1].astype(int)
        assert np.count_nonzero(misread != expected) > expected.size // 4, wrong


@pytest.mark.parametrize("changes, message", [
    ({"in_dim": 3}, "does not match the signal"),  # an image's coordinates are 2-D
    ({"out_dim": 1}, "does not match the signal"),  # rgb_k4 has 3 channels
    ({"encoding": 2}, "invalid model config"),
    ({"encoding": 0}, "invalid model config"),  # raw coordinates with Fourier frequencies
    ({"expert_width": 0}, "invalid model config"),
    ({"mgr_width": 0}, "invalid model config"),  # K = 4 needs a manager
])
def test_a_config_against_section_3_is_refused(changes, message):
    from nxcodec.errors import StreamError

    with pytest.raises(StreamError, match=message):
        decode_stream(with_config("rgb_k4_24x16.nxc", **changes))


@pytest.mark.parametrize("case", CASES + LEGACY, ids=[c["stream"] for c in CASES + LEGACY])
def test_stream_decodes_to_expected_result(case):
    data = (HERE / case["stream"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == case["stream_sha256"]
    assert weights_digest(data) == case["weights_sha256"]
    if case.get("modality") == "shape":
        return check_shape(data, case)
    decoded = decode_stream(data)[1]
    assert list(decoded.shape) == case["shape"]
    if case["expected"].endswith(".wav"):  # audio: integer PCM samples, 16-bit
        expected = sf.read(HERE / case["expected"], dtype="int16", always_2d=True)[0]
        decoded = np.rint(decoded.astype(np.float64) * 32768)
    else:
        expected = np.asarray(Image.open(HERE / case["expected"])).reshape(decoded.shape)
    diff = np.abs(decoded.astype(int) - expected.astype(int))
    # SPEC.md section 7, "Tolerance": binary64 evaluation moves a sample only at a near-exact rounding tie
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= max(1, diff.size // 10_000)


def decode_in_subprocess(names: list[str], env: dict[str, str]) -> list[np.ndarray]:
    """Decode conformance streams in a fresh interpreter with ``env`` added to the environment."""
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from nxcodec.codec import decode_stream\n"
        "np.savez(sys.argv[1], *[decode_stream(Path(n).read_bytes())[1] for n in sys.argv[2:]])\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "decoded.npz"
        subprocess.run([sys.executable, "-c", code, str(out), *[str(HERE / n) for n in names]],
                       env={**os.environ, **env}, check=True, capture_output=True)
        with np.load(out) as arrays:
            return [arrays[f"arr_{i}"] for i in range(len(names))]


def test_decoding_versions_1_and_2_imports_no_fitting_code():
    """The decode path of coordinate-network streams (container -> entropy -> networks -> signal writer) and
    ``nxcodec info`` on them load nothing of the encoder: not nxcodec.fit, the encoder's codec or quantizer."""
    names = [c["stream"] for c in CASES] + [LEGACY[0]["stream"]]
    code = ("import sys\nfrom pathlib import Path\nfrom nxcodec.decoder import decode_stream, describe_stream\n"
            "for n in sys.argv[1:]:\n    data = Path(n).read_bytes(); describe_stream(data); decode_stream(data)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('nxcodec.fit', 'nxcodec.quant', 'nxcodec.codec'))))")
    out = subprocess.run([sys.executable, "-c", code, *[str(HERE / n) for n in names]], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_other_cpu_kernels_decode_the_same_samples():
    """Scalar ATen kernels and SSE4.2 MKL kernels (another CPU's code paths) give bit-identical samples.

    In float32 the stereo stream's samples differed on 0.56% of samples between these kernels and
    the AVX-512 ones (as on an AMD EPYC against an Intel Xeon); in binary64 they agree exactly.
    """
    names = ["stereo_k2_3windows_8khz.nxc", "rgb_k4_24x16.nxc", "v1/gray_k2_mgrenc_13x11.nxc"]
    scalar = decode_in_subprocess(names, {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                                          "OMP_NUM_THREADS": "1"})
    for name, theirs in zip(names, scalar):
        ours = decode_stream((HERE / name).read_bytes())[1]
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), name


def check_shape(data: bytes, case: dict) -> None:
    """A shape decodes to the expected mesh up to floating-point evaluation: the same surface, to 1e-4 of its size."""
    import trimesh

    from nxcodec.signals.sdf import Mesh, MetricSettings, shape_metrics

    mesh = decode_stream(data, resolution=case["resolution"])[1]
    ref = trimesh.load(HERE / case["expected"], force="mesh", process=False)
    expected = Mesh(np.asarray(ref.vertices, dtype=np.float64), np.asarray(ref.faces, dtype=np.int64))
    assert abs(len(mesh.faces) - case["shape"][1]) <= 0.01 * case["shape"][1]
    m = shape_metrics(expected, mesh, MetricSettings(surface_points=5000, volume_points=5000))
    assert m["chamfer_l1"] < 1e-4


INVALID = json.loads((HERE / "invalid" / "manifest.json").read_text())


@pytest.mark.parametrize("case", INVALID, ids=[c["stream"] for c in INVALID])
def test_an_invalid_conformance_stream_is_refused(case):
    from nxcodec.errors import StreamError

    data = (HERE / "invalid" / case["stream"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == case["stream_sha256"]
    with pytest.raises(StreamError) as refused:
        decode_stream(data)
    assert str(refused.value) == case["reference_refusal"]


def test_the_invalid_streams_are_what_make_conformance_makes():
    """Made by make_conformance.invalid_cases from a valid stream, which they stay in step with."""
    from make_conformance import INVALID_SOURCE, invalid_cases

    source = (HERE / INVALID_SOURCE).read_bytes()
    decode_stream(source)
    made = invalid_cases()
    assert [f"{name}.nxc" for name, *_ in made] == [c["stream"] for c in INVALID]
    assert all(data == (HERE / "invalid" / f"{name}.nxc").read_bytes() for name, data, *_ in made)
    assert len({data for _, data, *_ in made}) == len(made) and source not in {data for _, data, *_ in made}


def test_the_command_line_refuses_an_invalid_stream_in_one_line_and_writes_nothing(tmp_path):
    case = next(c for c in INVALID if c["stream"] == "rans_truncated.nxc")
    out = tmp_path / "out.png"
    proc = subprocess.run([sys.executable, "-m", "nxcodec.cli", "decode", str(HERE / "invalid" / case["stream"]),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "does not decode" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
