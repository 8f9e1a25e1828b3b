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
from conftest import ROOT, real_image
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
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # the CRC's last byte, changed whatever it was
    summary = run_batch("encode", src, dst, FAST, resume=True)
    assert summary.skipped == 1 and summary.ok == 1
    assert outputs(dst) == before


def test_kill_and_resume_gives_the_same_outputs_as_an_uninterrupted_run(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 5)
    whole = tmp_path / "whole"
    run_batch("encode", src, whole, FAST)

    killed = tmp_path / "killed"
    kill_and_resume(src, killed, ["--iters", "30"])
    assert outputs(killed) == outputs(whole)
    assert all(r["status"] == "ok" for r in read_manifest(killed / "manifest.jsonl").values())


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
    assert [json.loads(line)["status"] for line in (back / "manifest.jsonl").read_text().splitlines()] == \
        ["started"] * 3 + ["ok"] * 3


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


def test_the_manifest_records_each_outputs_settings_and_stream_version(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 2)
    run_batch("encode", src, dst, EncodeSettings(quality=3, rates={"kbps": 24.0}, iters=20, seed=4, group=2))
    for rec in read_manifest(dst / "manifest.jsonl").values():
        assert rec["settings"] == {"quality": 3, "rates": {"kbps": 24.0}, "iters": 20, "seed": 4, "group": 2}
        assert rec["stream_version"] == (dst / (rec["source"] + ".nxc")).read_bytes()[4] == 2
    assert '"quality": 3' in (dst / "manifest.csv").read_text().replace('""', '"')


def test_resume_with_other_settings_is_refused_with_one_line_and_another_group_is_not(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 2)
    run_batch("encode", src, dst, EncodeSettings(iters=20))
    before = outputs(dst)
    (dst / "top.jpg.nxc").unlink()
    proc = subprocess.run([sys.executable, "-m", "nxcodec.cli", "batch", str(src), str(dst), "--resume", "--iters",
                           "21"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "was encoded with --quality 5 --iters 20 --seed 0, not --quality 5 --iters 21 --seed 0: resume with the same "
        "settings, or use --force to start over"), proc.stderr
    from nxcodec.errors import OutputError

    for other in (EncodeSettings(iters=20, quality=4), EncodeSettings(iters=20, seed=1),
                  EncodeSettings(iters=20, rates={"bpp": 2.0})):
        with pytest.raises(OutputError, match="was encoded with"):
            run_batch("encode", src, dst, other, resume=True)
    assert not (dst / "top.jpg.nxc").exists()
    summary = run_batch("encode", src, dst, EncodeSettings(iters=20, group=2), resume=True)
    assert (summary.skipped, summary.ok) == (1, 1)
    assert outputs(dst) == before  # one file in the group: the same bytes


def children(pid: int) -> dict[int, bytes]:
    """The running processes whose parent is ``pid``, with their command lines, from Linux's /proc (none
    elsewhere)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_and_resume(src: Path, dst: Path, args: list[str]) -> dict[int, bytes]:
    """Start a batch, kill it with SIGKILL once two files are done, check that its child processes end with it,
    then resume it. Returns the children it had and their command lines (Linux only; none elsewhere)."""
    cmd = [sys.executable, "-m", "nxcodec.cli", "batch", str(src), str(dst), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = dst / "manifest.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count('"status": "ok"') >= 2:
            break
        time.sleep(0.05)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(running(p) for p in workers):
        time.sleep(0.1)
    assert not any(running(p) for p in workers), "worker processes outlived the killed batch"
    assert len(outputs(dst)) < len(list(src.rglob("*.png"))) + len(list(src.rglob("*.jpg"))), "finished too soon"
    assert (dst / ".nxcodec-batch.lock").exists()  # left behind by the kill: stale, taken over below
    res = CliRunner().invoke(main, ["batch", str(src), str(dst), "--resume", *args])
    assert res.exit_code == 0, res.output
    assert not list(dst.rglob("*.part")) and not (dst / ".nxcodec-batch.lock").exists()
    return workers


def test_resume_after_a_kill_between_an_output_and_its_record(tmp_path):
    """A run killed after writing an output but before recording it leaves only its claim in the manifest: resume
    takes the output as its own and redoes it, where a file it never claimed is refused."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 2)
    run_batch("encode", src, dst, FAST)
    before = outputs(dst)
    manifest = dst / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    top = [line for line in lines if '"source": "top.jpg"' in line]
    manifest.write_text("".join(line + "\n" for line in lines if line not in top or "started" in line))
    assert read_manifest(manifest)["top.jpg"]["status"] == "started"
    summary = run_batch("encode", src, dst, FAST, resume=True)
    assert (summary.skipped, summary.ok, summary.failed) == (1, 1, 0)
    assert outputs(dst) == before and read_manifest(manifest)["top.jpg"]["status"] == "ok"

    manifest.write_text("".join(line + "\n" for line in lines if line not in top))
    (dst / "top.jpg.nxc").write_bytes(b"the user's own file")
    summary = run_batch("encode", src, dst, FAST, resume=True)
    assert summary.failed == 1 and (dst / "top.jpg.nxc").read_bytes() == b"the user's own file"


def test_resume_after_a_kill_that_tore_the_manifests_last_line(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 2)
    run_batch("encode", src, dst, FAST)
    manifest = dst / "manifest.jsonl"
    text = manifest.read_text()
    manifest.write_text(text[: text.rindex('"status": "ok"')])  # the last record, torn mid-write
    torn = read_manifest(manifest)
    assert (torn["top.jpg"]["status"], torn["set0/img0.png"]["status"]) == ("ok", "started")
    summary = run_batch("encode", src, dst, FAST, resume=True)
    assert (summary.skipped, summary.ok, summary.failed) == (1, 1, 0)
    records = read_manifest(manifest)
    assert [records[k]["status"] for k in ("top.jpg", "set0/img0.png")] == ["ok", "ok"]


def test_kill_and_resume_with_two_workers_gives_the_same_outputs(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 6)
    args = ["--iters", "30", "--workers", "2"]
    whole = tmp_path / "whole"
    assert CliRunner().invoke(main, ["batch", str(src), str(whole), *args]).exit_code == 0
    killed = tmp_path / "killed"
    workers = kill_and_resume(src, killed, args)
    assert outputs(killed) == outputs(whole)
    pool = [p for p, command in workers.items() if b"spawn_main" in command]
    assert len(pool) == 2 or not Path("/proc/self/stat").exists()  # both pool workers (not only the resource tracker)


def test_kill_and_resume_with_groups_gives_outputs_of_the_same_settings_that_decode(tmp_path):
    from nxcodec import decode

    src = tmp_path / "src"
    images = make_tree(src, 6)
    args = ["--iters", "30", "--group", "2"]
    killed = tmp_path / "killed"
    kill_and_resume(src, killed, args)
    records = read_manifest(killed / "manifest.jsonl")
    assert len(outputs(killed)) == 6 and all(r["status"] == "ok" for r in records.values())
    assert {json.dumps(r["settings"], sort_keys=True) for r in records.values()} == {
        json.dumps({"quality": 5, "rates": {}, "iters": 30, "seed": 0, "group": 2}, sort_keys=True)}
    for rel, array in images.items():
        assert decode((killed / (rel + ".nxc")).read_bytes()).shape[:2] == array.shape[:2]


def test_two_batches_started_at_once_on_one_destination(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 4)
    # enough work for each run to outlast the other's start-up, so that the two meet at the lock
    cmd = [sys.executable, "-m", "nxcodec.cli", "batch", str(src), str(dst), "--iters", "300"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[2] == 2)
    lines = loser[1].strip().splitlines()
    assert len(lines) == 1 and "is in use by another nxcodec batch (pid" in lines[0], loser[1]
    assert len(outputs(dst)) == 4 and not (dst / ".nxcodec-batch.lock").exists()
    records = read_manifest(dst / "manifest.jsonl")
    lines = (dst / "manifest.jsonl").read_text().splitlines()
    assert len(records) == 4 and len(lines) == 8  # one writer: four claims, four results


def test_a_lock_held_by_a_live_run_is_refused_and_a_dead_ones_is_taken(tmp_path):
    from nxcodec.batch import DestinationLock
    from nxcodec.errors import OutputError

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 1)
    dst.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from nxcodec.batch import DestinationLock\n"
        f"with DestinationLock(Path({str(dst)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=f"in use by another nxcodec batch \\(pid {holder.pid} on"):
            run_batch("encode", src, dst, FAST)
    finally:
        holder.kill()
        holder.wait()
    assert (dst / ".nxcodec-batch.lock").exists()  # its holder was killed: the file stays, the lock does not
    assert run_batch("encode", src, dst, FAST).ok == 1
    with DestinationLock(dst):
        with pytest.raises(OutputError, match="in use"):
            DestinationLock(dst).__enter__()


def test_encode_settings_out_of_range_are_refused_before_any_file(tmp_path):
    from nxcodec.errors import UsageError

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 1)
    for settings in (EncodeSettings(quality=12), EncodeSettings(rates={"bpp": -1.0}), EncodeSettings(iters=0),
                     EncodeSettings(group=0)):
        with pytest.raises(UsageError):
            run_batch("encode", src, dst, settings)
    assert not dst.exists()


def test_batch_decode_applies_the_decoding_limits_to_every_stream(tmp_path):
    import shutil

    conformance = ROOT / "bitstream" / "conformance"
    src, back = tmp_path / "src", tmp_path / "back"
    src.mkdir()
    for name in ("rgb_k4_24x16.nxc", "gray_k2_mgrenc_13x11.nxc"):  # 384 and 143 pixels
        shutil.copy(conformance / name, src / name)
    res = CliRunner().invoke(main, ["batch-decode", str(src), str(back), "--max-pixels", "200"])
    assert res.exit_code == 1, res.output
    records = read_manifest(back / "manifest.jsonl")
    assert records["gray_k2_mgrenc_13x11.nxc"]["status"] == "ok"
    assert "over the limit of 200" in records["rgb_k4_24x16.nxc"]["error"]
    assert sorted(p.name for p in back.glob("*.png")) == ["gray_k2_mgrenc_13x11.png"]


def test_the_command_line_codes_a_group_in_worker_processes_and_the_api_in_its_own(tmp_path, monkeypatch):
    """``nxcodec batch`` lets a fitted group be coded in processes of their own (its main is guarded); a script
    calling run_batch codes in its own process unless it asks (a spawned process imports the caller's script)."""
    import nxcodec.codec

    asked = []
    real = nxcodec.codec.encode_signals

    def spy(modality, signals_, opts):
        asked.append(opts.coding_workers)
        return real(modality, signals_, opts)

    monkeypatch.setattr(nxcodec.codec, "encode_signals", spy)
    src = tmp_path / "src"
    make_tree(src, 2)
    res = CliRunner().invoke(main, ["batch", str(src), str(tmp_path / "cli"), "--iters", "5", "--group", "2"])
    assert res.exit_code == 0, res.output
    assert asked and set(asked) == {None}
    asked.clear()
    assert run_batch("encode", src, tmp_path / "api", EncodeSettings(iters=5, group=2)).ok == 2
    assert asked and set(asked) == {1}


def test_coding_workers_out_of_range_are_refused_before_any_file(tmp_path):
    from nxcodec.errors import UsageError

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 1)
    for bad in (0, -2, 1.5):
        with pytest.raises(UsageError, match="coding workers"):
            run_batch("encode", src, dst, FAST, coding_workers=bad)
    assert not dst.exists()


def test_batch_never_replaces_a_file_it_did_not_write_without_force(tmp_path):
    import shutil

    conformance = ROOT / "bitstream" / "conformance"
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    shutil.copy(conformance / "rgb_k4_24x16.nxc", src / "a.png.nxc")
    shutil.copy(conformance / "gray_k2_mgrenc_13x11.nxc", src / "b.nxc")
    (dst / "a.png").write_bytes(b"MY PRECIOUS")  # the user's file, where a.png.nxc decodes to
    summary = run_batch("decode", src, dst, device="cpu")
    assert (summary.ok, summary.failed) == (1, 1)
    assert (dst / "a.png").read_bytes() == b"MY PRECIOUS"
    assert "already exists (use --force" in read_manifest(dst / "manifest.jsonl")["a.png.nxc"]["error"]
    assert (dst / "b.png").is_file()
    summary = run_batch("decode", src, dst, device="cpu", resume=True)  # its own b.png is not in the way
    assert (summary.skipped, summary.failed) == (1, 1) and (dst / "a.png").read_bytes() == b"MY PRECIOUS"
    summary = run_batch("decode", src, dst, device="cpu", force=True)
    assert summary.ok == 2 and Image.open(dst / "a.png").size == (24, 16)


def test_two_streams_that_decode_to_one_name_are_both_kept_apart(tmp_path):
    import shutil

    conformance = ROOT / "bitstream" / "conformance"
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    shutil.copy(conformance / "rgb_k4_24x16.nxc", src / "a.nxc")
    shutil.copy(conformance / "gray_k2_mgrenc_13x11.nxc", src / "a.png.nxc")  # both decode to a.png
    summary = run_batch("decode", src, dst, device="cpu")
    records = read_manifest(dst / "manifest.jsonl")
    assert (summary.ok, summary.failed) == (1, 1)
    assert "a.nxc is decoded to the same file" in records["a.png.nxc"]["error"]
    assert Image.open(dst / "a.png").size == (24, 16)  # a.nxc's, not overwritten by the other


def test_an_unusable_destination_or_an_unreadable_folder_is_one_line(tmp_path, monkeypatch):
    from nxcodec import batch

    src = tmp_path / "src"
    make_tree(src, 1)
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(main, ["batch", str(src), str(tmp_path / "file"), "--iters", "5", "--device", "cpu"])
    assert res.exit_code != 0 and "file: cannot be the destination folder" in res.output
    assert "Traceback" not in res.output and (tmp_path / "file").read_text() == "x"

    def unreadable(top, onerror):  # as os.walk reports a folder it may not list (root reads any, so simulated)
        onerror(PermissionError(13, "Permission denied", str(Path(top) / "hidden")))
        return iter(())

    monkeypatch.setattr(batch.os, "walk", unreadable)
    res = CliRunner().invoke(main, ["batch", str(src), str(tmp_path / "out"), "--iters", "5", "--device", "cpu"])
    assert res.exit_code != 0 and "hidden: cannot read this folder (Permission denied)" in res.output
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_a_failed_file_is_named_once_on_the_command_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.png").write_bytes(b"junk")
    (src / "cut.nxc").write_bytes(b"NXC")
    res = CliRunner().invoke(main, ["batch", str(src), str(tmp_path / "dst"), "--iters", "2", "--device", "cpu"])
    line = next(x for x in res.output.splitlines() if "cannot read image" in x)
    assert line.count("bad.png") == 2 and line.startswith(str(src / "bad.png"))  # the path, and PIL's quote of it
    res = CliRunner().invoke(main, ["batch-decode", str(src), str(tmp_path / "back"), "--device", "cpu"])
    assert "cut.nxc: not an nxcodec stream (bad magic)" in res.output.splitlines()
