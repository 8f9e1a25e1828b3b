"""Batch compression: mixed trees, bad files, kill-and-resume, workers, batch-decode."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import real_image
from PIL import Image

from nxcodec.batch import EncodeSettings, read_manifest, run_batch
from nxcodec.cli import main

FAST = EncodeSettings(iters=30)


def make_tree(root: Path, n: int = 3) -> dict[str, np.ndarray]:
    images = {}
    for i in range(n):
        array = real_image((16 + 2 * i, 12))
        rel = f"set{i % 2}/img{i}.png" if i != 1 else "top.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / rel)
        images[rel] = np.asarray(Image.open(root / rel))
    return images


def outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.nxc"))}


def test_mixed_tree_with_an_unreadable_file(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    (src / "notes.txt").write_text("not a signal")
    (src / "set0" / "broken.png").write_bytes(b"\x89PNG but not really")
    res = CliRunner().invoke(main, ["batch", str(src), str(dst), "--iters", "30"])
    assert res.exit_code == 1
    assert "1 file(s) failed" in res.output
    assert set(outputs(dst)) == {"set0/img0.png.nxc", "set0/img2.png.nxc", "top.jpg.nxc"}
    records = read_manifest(dst / "manifest.jsonl")
    assert records["set0/broken.png"]["status"] == "error"
    assert "cannot read image" in records["set0/broken.png"]["error"]
    assert all(records[k]["status"] == "ok" and records[k]["rate"] > 0 for k in ("top.jpg", "set0/img0.png"))
    assert (dst / "manifest.csv").read_text().count("\n") == 5


def test_a_second_run_needs_resume_or_force(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 1)
    assert CliRunner().invoke(main, ["batch", str(src), str(dst), "--iters", "20"]).exit_code == 0
    res = CliRunner().invoke(main, ["batch", str(src), str(dst), "--iters", "20"])
    assert res.exit_code == 2 and "--resume" in res.output
    res = CliRunner().invoke(main, ["batch", str(src), str(dst), "--iters", "20", "--resume"])
    assert res.exit_code == 0 and "1 already done" in res.output


def test_resume_redoes_a_damaged_output(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 2)
    run_batch("encode", src, dst, FAST)
    before = outputs(dst)
    damaged = dst / "top.jpg.nxc"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    summary = run_batch("encode", src, dst, FAST, resume=True)
    assert summary.skipped == 1 and summary.ok == 1
    assert outputs(dst) == before


def test_kill_and_resume_gives_the_same_outputs_as_an_uninterrupted_run(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 5)
    whole = tmp_path / "whole"
    run_batch("encode", src, whole, FAST)

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "nxcodec.cli", "batch", str(src), str(killed), "--iters", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = killed / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(outputs(killed)) < 5, "the run finished before it could be killed"
    res = CliRunner().invoke(main, ["batch", str(src), str(killed), "--iters", "30", "--resume"])
    assert res.exit_code == 0, res.output
    assert outputs(killed) == outputs(whole)
    assert not list(killed.rglob("*.part"))
    assert all(r["status"] == "ok" for r in read_manifest(manifest).values())


def test_two_workers(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 4)
    summary = run_batch("encode", src, dst, FAST, workers=2)
    assert summary.ok == 4 and summary.failed == 0
    assert len(outputs(dst)) == 4


def test_batch_decode_restores_the_tree(tmp_path):
    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    images = make_tree(src)
    run_batch("encode", src, dst, EncodeSettings(iters=150))
    res = CliRunner().invoke(main, ["batch-decode", str(dst), str(back)])
    assert res.exit_code == 0, res.output
    for rel, original in images.items():
        name = rel if rel.endswith(".png") else rel + ".png"
        restored = np.asarray(Image.open(back / name))
        assert restored.shape == original.shape
        err = np.mean((restored.astype(float) - original.astype(float)) ** 2)
        assert 10 * np.log10(255**2 / err) > 18
    assert json.loads((back / "manifest.jsonl").read_text().splitlines()[0])["status"] == "ok"


def test_ray_backend_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    src, dst, whole = tmp_path / "src", tmp_path / "dst", tmp_path / "whole"
    make_tree(src, 3)
    (src / "set0" / "broken.png").write_bytes(b"nope")
    run_batch("encode", src, whole, FAST)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_batch("encode", src, dst, FAST, ray_address="local")
    finally:
        ray.shutdown()
    assert summary.ok == 3 and summary.failed == 1
    records = read_manifest(dst / "manifest.jsonl")
    assert "cannot read image" in records["set0/broken.png"]["error"]
    assert set(outputs(dst)) == set(outputs(whole)) == {"set0/img0.png.nxc", "set0/img2.png.nxc", "top.jpg.nxc"}
    assert all(records[k]["source_bytes"] > 0 and records[k]["rate"] > 0 for k in ("top.jpg", "set0/img0.png"))


def test_files_fitted_together_each_get_their_own_stream(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    base = real_image((24, 20))
    arrays = {f"g{i}.png": np.ascontiguousarray(np.roll(base, 6 * i, axis=1)) for i in range(3)}
    for name, array in arrays.items():
        Image.fromarray(array).save(src / name) if src.exists() else (src.mkdir(), Image.fromarray(array).save(src / name))
    (src / "bad.png").write_bytes(b"\x89PNG truncated")
    summary = run_batch("encode", src, dst, EncodeSettings(iters=300, group=4))
    assert (summary.ok, summary.failed) == (3, 1)
    records = read_manifest(dst / "manifest.jsonl")
    assert records["bad.png"]["status"] == "error"
    from nxcodec import decode

    for name, array in arrays.items():
        decoded = decode((dst / (name + ".nxc")).read_bytes()).astype(float)
        errors = {other: np.mean((decoded - a.astype(float)) ** 2) for other, a in arrays.items()}
        assert min(errors, key=errors.get) == name
        assert records[name]["psnr"] > 18


def test_each_rate_target_applies_to_its_own_kind_of_file(tmp_path):
    import soundfile as sf

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    Image.fromarray(real_image((24, 20))).save(src / "photo.png")
    t = np.arange(4410) / 44100.0
    sf.write(src / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 44100, subtype="PCM_16")
    res = CliRunner().invoke(main, ["batch", str(src), str(dst), "--iters", "30", "--bpp", "3.8", "--kbps", "64"])
    assert res.exit_code == 0, res.output
    records = read_manifest(dst / "manifest.jsonl")
    # the default quality gives 4.2 bpp and 24.9 kbps here: each target moved its own file's rate
    assert records["photo.png"]["rate_unit"] == "bpp" and records["photo.png"]["rate"] <= 3.8
    assert records["tone.wav"]["rate_unit"] == "kbps" and 32 < records["tone.wav"]["rate"] <= 64
