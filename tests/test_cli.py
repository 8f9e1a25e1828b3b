"""The command line: the verbs, their outputs, and one-line errors with exit status 2."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import real_image
from PIL import Image

import nxcodec
from nxcodec.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def png(tmp_path, rgb_image):
    path = tmp_path / "crop.png"
    Image.fromarray(rgb_image).save(path)
    return path


@pytest.fixture()
def nxc(tmp_path, rgb_stream):
    path = tmp_path / "crop.nxc"
    path.write_bytes(rgb_stream)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_encode_decode_info(tmp_path, png, rgb_image):
    out = tmp_path / "out.nxc"
    res = run("encode", png, "-o", out, "--iters", 60, "--device", "cpu", "--seed", 1, "-v")
    assert res.exit_code == 0, res.output
    assert "bpp" in res.output and "float PSNR" in res.output
    res = run("decode", out, "-o", tmp_path / "back.png")
    assert res.exit_code == 0, res.output
    back = np.asarray(Image.open(tmp_path / "back.png"))
    assert back.shape == rgb_image.shape
    res = run("info", out)
    assert res.exit_code == 0
    assert "image 48x40 RGB 8-bit" in res.output and "parameters" in res.output


def test_default_output_names(tmp_path, nxc):
    res = run("decode", nxc)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "crop.decoded.png").exists()


def test_encode_names_like_batch_and_decode_never_hits_the_source(tmp_path):
    png = tmp_path / "tiny.png"
    Image.fromarray(real_image((16, 12))).save(png)
    source = png.read_bytes()
    assert run("encode", png, "--iters", 30, "--device", "cpu").exit_code == 0
    assert (tmp_path / "tiny.png.nxc").exists()  # as batch names it
    res = run("decode", tmp_path / "tiny.png.nxc")
    assert res.exit_code == 0, res.output  # no --force needed: the source is not the default output
    assert png.read_bytes() == source
    assert np.asarray(Image.open(tmp_path / "tiny.decoded.png")).shape == (12, 16, 3)


def test_help_names_each_kinds_output_and_every_option():
    decode_help = run("decode", "--help").output
    for kind in ("image .png", "audio .wav", "shape .ply or .obj or .stl", "photo.decoded.png"):
        assert kind in " ".join(decode_help.split())
    assert "Title drawn above the plot" in run("plot", "--help").output
    assert "--device" in run("batch", "--help").output and "--device" in run("batch-decode", "--help").output


def test_encode_decode_and_batch_have_the_same_device_default():
    defaults = {name: next(p.default for p in main.commands[name].params if p.name == "device")
                for name in ("encode", "decode", "batch", "batch-decode")}
    assert set(defaults.values()) == {"auto"}


def test_info_labels_every_byte_count_in_words(nxc):
    res = run("info", nxc)
    assert res.exit_code == 0
    line = next(li for li in res.output.splitlines() if li.startswith("bytes:"))
    parts = dict(part.rsplit(" ", 2)[:2] for part in line[len("bytes:"):].strip().split(", "))
    assert parts["section count field"] == "2" and parts["CRC"] == "4"
    assert sum(int(v) for v in parts.values()) == nxc.stat().st_size


@pytest.mark.parametrize("stream, modality, fields", [
    ("rgb_k4_24x16.nxc", "image", {"width": 24, "height": 16, "channels": 3, "bit_depth": 8}),
    ("stereo_k2_3windows_8khz.nxc", "audio", {"frames": 2400, "sample_rate": 8000, "channels": 2}),
    ("v12/image/gray16_k3_21x17.nxc", "image", {"width": 21, "height": 17, "channels": 1, "bit_depth": 16}),
    ("v11/audio/stereo_ms_3segments_8khz.nxc", "audio", {"frames": 12000, "sample_rate": 8000, "stereo": 1,
                                                         "subtype": "PCM_16"}),
    ("v8/shape/torus_g4_builtin_k2.nxc", "shape", {"grid_log2": 4}),
])
def test_info_json_gives_the_header_as_data(stream, modality, fields):
    """``nxcodec info --json`` and ``nxcodec.info``: one object, the same as the text's lines, with the descriptor's
    fields (an image's size, a clip's sample rate) that a dataset tool needs without decoding anything."""
    import json

    path = ROOT / "bitstream" / "conformance" / stream
    data = path.read_bytes()
    res = run("info", "--json", path)
    assert res.exit_code == 0
    facts = json.loads(res.output)
    assert facts == {"file": str(path), **json.loads(json.dumps(nxcodec.info(data)))}
    assert facts["modality"] == modality and facts["version"] == data[4] and facts["bytes"] == len(data)
    assert fields.items() <= facts["signal"].items()
    unit = {"image": "bpp", "audio": "kbps", "shape": "KB"}[modality]
    shown = dict(facts["summary"])["rate"].split()
    assert facts["rate_unit"] == unit == shown[1] and abs(float(shown[0]) - facts["rate"]) <= 1e-3 * facts["rate"]
    text = run("info", path).output.splitlines()
    assert [line.split(":", 1)[0] for line in text[2:]] == [label for label, _ in facts["summary"]]


@pytest.mark.parametrize("stream", sorted(str(p.relative_to(ROOT / "bitstream" / "conformance"))
                                           for p in (ROOT / "bitstream" / "conformance").rglob("*.nxc")
                                           if "invalid" not in p.parts))
def test_info_describes_every_conformance_stream_as_plain_json(stream):
    """Every version and modality: plain JSON (no NaN, no nested descriptor), a positive rate, the version byte."""
    import json

    data = (ROOT / "bitstream" / "conformance" / stream).read_bytes()
    facts = nxcodec.info(data)
    assert json.loads(json.dumps(facts, allow_nan=False))["version"] == data[4]
    assert facts["modality"] in ("image", "audio", "shape") and facts["rate"] > 0
    assert facts["signal"] and not any(isinstance(v, dict) for v in facts["signal"].values())


def test_info_of_an_invalid_stream_is_a_stream_error():
    with pytest.raises(nxcodec.StreamError):
        nxcodec.info(b"\x89NXC\x0c\x01" + bytes(20))


def test_batch_runs_on_the_device_it_is_given(tmp_path):
    (tmp_path / "src").mkdir()
    Image.fromarray(real_image((16, 12))).save(tmp_path / "src" / "crop.png")
    res = run("batch", tmp_path / "src", tmp_path / "dst", "--iters", 30, "--device", "cpu")
    assert res.exit_code == 0, res.output
    from nxcodec.batch import read_manifest

    assert read_manifest(tmp_path / "dst" / "manifest.jsonl")["crop.png"]["device"] == "cpu"
    res = run("batch-decode", tmp_path / "dst", tmp_path / "back", "--device", "cpu")
    assert res.exit_code == 0 and (tmp_path / "back" / "crop.png").exists()
    import torch

    if not torch.cuda.is_available():
        res = run("batch", tmp_path / "src", tmp_path / "gpu", "--device", "cuda")
        assert res.exit_code == 2 and "no GPU" in res.output


def test_existing_output_is_kept_without_force(tmp_path, nxc):
    target = tmp_path / "keep.png"
    target.write_bytes(b"precious")
    res = run("decode", nxc, "-o", target)
    assert res.exit_code == 2 and "--force" in res.output
    assert target.read_bytes() == b"precious"
    assert run("decode", nxc, "-o", target, "--force").exit_code == 0
    assert target.read_bytes()[:4] == b"\x89PNG"


def test_decode_refuses_an_output_type_it_would_not_write(tmp_path, nxc):
    res = run("decode", nxc, "-o", tmp_path / "out.jpg")
    assert res.exit_code == 2 and "written as .png" in res.output
    assert not (tmp_path / "out.jpg").exists()


def test_corrupt_stream_fails_cleanly_and_leaves_nothing(tmp_path, nxc):
    bad = tmp_path / "bad.nxc"
    bad.write_bytes(nxc.read_bytes()[:-10])
    res = run("decode", bad, "-o", tmp_path / "bad.png")
    assert res.exit_code == 2
    assert not (tmp_path / "bad.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nxc", "crop.nxc"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["encode", "missing.png"], "no such file"),
        (["encode", "missing.gif"], "missing.gif: no such file"),  # missing before unsupported
        (["encode", "."], "is a directory (encode takes one file; nxcodec batch codes a folder)"),
        (["encode", "notes.txt"], "unsupported file type"),
        (["encode", "fake.png"], "cannot read image"),
        (["decode", "missing.nxc"], "no such file"),
        (["decode", "fake.png"], "bad magic"),
        (["info", "fake.png"], "bad magic"),
        (["info", "--json", "fake.png"], "bad magic"),
        (["encode", "fake.png", "--device", "cuda:7"], ""),
        (["encode", "fake.png", "--iters", "0"], "Invalid value for '--iters'"),
        (["encode", "fake.png", "--no-such-option"], "No such option"),
        (["encode"], "Missing argument 'SOURCE'"),
        (["encode", "fake.png", "-o", "fake.png", "--force"], "a stream is written as .nxc"),
        (["encode", "fake.png", "-o", "notes.txt/x.nxc"], "notes.txt: not a directory"),
        (["decode", "missing.nxc", "--max-work", "nan"], "--max-work must be a number"),
        (["batch", "missing", "notes.txt"], "not a directory"),
        (["batch", ".", "notes.txt"], "notes.txt: cannot be the destination folder"),
    ],
)
def test_user_errors_are_one_line_on_stderr_with_status_2(tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.png").write_bytes(b"not really a png")
    proc = subprocess.run([sys.executable, "-m", "nxcodec.cli", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nxcodec: error:")
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "fake.png").read_bytes() == b"not really a png" and (tmp_path / "notes.txt").read_text() == "hello"


def test_unreadable_inputs_and_unwritable_folders_are_one_line_before_any_work(tmp_path, nxc, png, monkeypatch):
    """Simulated (the tests may run as root, who reads and writes anything): a file the user may not read, a
    folder they may not write in."""
    denied_read, denied_write = {nxc, png}, {tmp_path / "ro"}
    (tmp_path / "ro").mkdir()
    real_access, real_read = os.access, Path.read_bytes

    def access(path, mode, *a, **k):
        p = Path(path)
        if (mode & os.R_OK and p in denied_read) or (mode & os.W_OK and p in denied_write):
            return False
        return real_access(path, mode, *a, **k)

    def read_bytes(self):
        if self in denied_read:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    fitted = []
    monkeypatch.setattr("nxcodec.cli.encode_file", lambda *a, **k: fitted.append(a))
    for args, message in ((["info", nxc], "cannot read (Permission denied)"),
                          (["decode", nxc, "-o", tmp_path / "x.png"], "cannot read (Permission denied)"),
                          (["encode", png, "-o", tmp_path / "ro" / "x.nxc"], "ro: cannot write in this directory")):
        res = run(*args)
        assert res.exit_code == 2, res.output
        assert message in res.output and "Usage" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not fitted and not list((tmp_path / "ro").iterdir())


def test_outputs_get_the_usual_permissions(tmp_path, nxc):
    out = tmp_path / "perm.png"
    assert run("decode", nxc, "-o", out).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_jpeg_at_size_never_exceeds_the_budget_when_it_can_fit():
    from nxcodec.baselines import jpeg_at_size

    im = Image.fromarray(np.asarray(Image.open(ROOT / "nxcodec" / "samples" / "hopper.png").convert("RGB")))
    p = jpeg_at_size(im, 6000)
    assert p.n_bytes <= 6000 and jpeg_at_size(im, 8000).psnr >= p.psnr
    assert jpeg_at_size(im, 10).quality == 1


def test_encode_is_silent_on_stderr_when_piped(tmp_path, png):
    proc = subprocess.run([sys.executable, "-m", "nxcodec.cli", "encode", str(png), "-o", str(tmp_path / "p.nxc"),
                           "--iters", "30", "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert "bpp" in proc.stdout and proc.stdout.count("\n") == 1


@pytest.mark.parametrize("extra, group", [([], 4), (["--group", "2"], 2)])
def test_bench_image_quick_keeps_its_group_unless_one_is_given(tmp_path, monkeypatch, extra, group):
    from nxcodec.bench import image as bench_image

    Image.fromarray(real_image((64, 64))).save(tmp_path / "a.png")
    seen = []

    def fake_run(cfg, log):
        seen.append(cfg)
        (cfg.out / "bdrate.md").write_text("table\n")

    monkeypatch.setattr(bench_image, "run", fake_run)
    out = tmp_path / "out"
    out.mkdir()
    r = CliRunner().invoke(main, ["bench", "image", str(tmp_path), "--out", str(out), "--quick", *extra])
    assert r.exit_code == 0, r.output
    assert seen[0].group == group and seen[0].iters == 500


def nxcodec_process(*args, stdin: bytes = b"", **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nxcodec.cli", *map(str, args)], input=stdin, capture_output=True,
                          timeout=120, **kwargs)


def test_decode_and_info_read_standard_input_and_decode_writes_standard_output(tmp_path):
    """``-`` is standard input as a source and standard output as an output; reading standard input, decode writes
    standard output unless told otherwise. The report goes to stderr where standard output carries the signal."""
    stream = ROOT / "bitstream" / "conformance" / "v12" / "image" / "gray16_k3_21x17.nxc"
    expected = np.asarray(Image.open(stream.with_suffix(".png")))
    for args, stdin in [(["decode", "-"], stream.read_bytes()), (["decode", stream, "-o", "-"], b"")]:
        proc = nxcodec_process(*args, stdin=stdin)
        assert proc.returncode == 0, proc.stderr
        decoded = np.asarray(Image.open(io.BytesIO(proc.stdout)))
        assert decoded.dtype == expected.dtype and np.abs(decoded.astype(int) - expected).max() <= 1
        assert "-> stdout: image 21x17 grayscale 16-bit" in proc.stderr.decode()
    proc = nxcodec_process("decode", "-", "-o", tmp_path / "back.png", stdin=stream.read_bytes())
    assert proc.returncode == 0 and proc.stdout.decode().startswith("stdin -> ")
    assert np.asarray(Image.open(tmp_path / "back.png")).shape == expected.shape
    proc = nxcodec_process("info", "-", "--json", stdin=stream.read_bytes())
    facts = json.loads(proc.stdout)
    assert facts["file"] == "stdin" and facts["bytes"] == stream.stat().st_size


def test_encode_reads_standard_input_and_writes_standard_output(tmp_path):
    """A JPEG piped in is told by its first bytes, and the stream piped out decodes; nothing else is on stdout."""
    buf = io.BytesIO()
    Image.fromarray(real_image((40, 32))).save(buf, format="JPEG", quality=95)
    proc = nxcodec_process("encode", "-", "--iters", 20, "--device", "cpu", stdin=buf.getvalue())
    assert proc.returncode == 0, proc.stderr
    assert nxcodec.info(proc.stdout)["signal"]["width"] == 40
    assert nxcodec.decode(proc.stdout).shape == (32, 40, 3)
    assert proc.stderr.decode().startswith("stdin -> stdout: ")


@pytest.mark.parametrize("args, stdin, message", [
    (["decode", "-"], b"", "stdin: empty"),
    (["decode", "-"], b"\x89NXC" + bytes(40), "unknown stream version 0"),
    (["encode", "-", "-o", "x.nxc"], b"hello, not a signal", "stdin: not a kind of file nxcodec reads"),
    (["encode", "-", "-o", "x.nxc"], b"\x89PNG\r\n\x1a\n" + bytes(30), "stdin: "),
])
def test_bad_standard_input_is_one_line_and_writes_nothing(tmp_path, args, stdin, message):
    proc = nxcodec_process(*args, stdin=stdin, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == b""
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nxcodec: error: ") and message in lines[0]
    assert "nxcodec-" not in lines[0]  # not the temporary file standard input was saved to
    assert list(tmp_path.iterdir()) == []


def test_a_terminal_is_not_sent_a_binary_file(nxc):
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "nxcodec.cli", "decode", str(nxc), "-o", "-"], stdout=follower,
                              stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2 and b"stdout is a terminal" in proc.stderr


@pytest.mark.parametrize("name, kind", [
    ("a.png", ".png"), ("a.jpg", ".jpg"), ("a.bmp", ".bmp"), ("a.tif", ".tif"), ("a.webp", ".webp"),
    ("a.wav", ".wav"), ("a.flac", ".flac"), ("a.ogg", ".ogg"), ("a.ply", ".ply"), ("a.obj", ".obj"),
    ("a.stl", ".stl"), ("a.off", ".off"), ("a.glb", ".glb"),
])
def test_standard_input_is_told_by_its_contents(tmp_path, name, kind):
    """Each file type the encoder reads, written by the library that writes it, is recognised from its bytes."""
    import soundfile as sf
    import trimesh

    from nxcodec import signals

    path = tmp_path / name
    if kind in (".wav", ".flac", ".ogg"):
        sf.write(path, np.sin(np.arange(4000) / 9.0) * 0.3, 8000)
    elif kind in (".ply", ".obj", ".stl", ".off", ".glb"):
        trimesh.creation.box().export(path)
    else:
        Image.fromarray(real_image((16, 12))).save(path)
    modality, ext = signals.for_bytes(path.read_bytes())
    assert ext == kind and modality is signals.for_path(path)
