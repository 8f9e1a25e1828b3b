"""Fuzzing the decoder: thousands of mutated streams, each decoded or refused with an NxcError, none hanging."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("nxc_fuzz", ROOT / "bench" / "fuzz.py")
fuzz = importlib.util.module_from_spec(spec)
sys.modules["nxc_fuzz"] = fuzz  # dataclasses look their module up there
spec.loader.exec_module(fuzz)

pytestmark = pytest.mark.timeout(300)


def test_two_thousand_mutated_streams_decode_or_are_refused_cleanly(tmp_path):
    outcome = fuzz.run(2000, seed=12, out=tmp_path, workers=2)
    failures = [f"case {f['case']} ({f['from']}: {f['mutations']}): {f['error']}" for f in outcome.failures]
    assert not failures, "\n".join(failures)
    assert outcome.ok + outcome.refused == 2000
    # mutations reach both the decoder's ends (about 5% decode: 105 of these 2000 when the corpus held 64 streams,
    # 100 with its 68 of today)
    assert outcome.ok >= 50 and outcome.refused > 1000


def test_cases_are_repeatable_and_most_carry_a_valid_crc():
    import zlib

    corpus = fuzz.load_corpus(fresh=False, seed=0)
    cases = [fuzz.case(3, i, corpus) for i in range(300)]
    assert cases == [fuzz.case(3, i, corpus) for i in range(300)]
    assert len({c[0] for c in cases}) > 250
    crc_ok = sum(len(d) >= 4 and zlib.crc32(d[:-4]) == int.from_bytes(d[-4:], "little") for d, _, _ in cases)
    assert crc_ok > 0.7 * len(cases)
    kinds = " ".join(c[1] for c in cases)
    for kind in ("poke", "flip", "set", "truncate", "insert", "delete", "splice"):
        assert kind in kinds


def test_hangs_and_memory_blow_ups_are_failures_and_the_worker_comes_back(tmp_path):
    from test_limits import big_config, image_stream

    corpus = fuzz.load_corpus(fresh=False, seed=0)
    stream = next(s.data for s in corpus if s.name == "rgb_k4_24x16.nxc")
    slow = image_stream(480, 400, big_config(n_freq=4, enc_width=96, expert_width=64))  # 4e9 multiply-adds: seconds
    w = fuzz._Worker(resolution=16, memory_mb=fuzz.MEMORY_MB)
    try:
        assert w.run(stream, timeout=120) == "ok"  # the first call also starts the worker
        assert w.run(b"junk", timeout=10) == "nxc"
        result = w.run(slow, timeout=0.05)
        assert result.startswith("fail") and "hang" in result, result
        assert w.run(stream, timeout=120) == "ok"  # a fresh worker
    finally:
        w.stop()

    large = image_stream(1000, 1000, big_config(enc_width=8, expert_width=8, n_freq=2))  # 12 MB of output arrays
    starved = fuzz._Worker(resolution=16, memory_mb=1)  # no room to allocate them
    try:
        result = starved.run(large, timeout=120)
    finally:
        starved.stop()
    assert result.startswith("fail"), result
    assert "memory" in result.lower() or "crash" in result


def test_a_worker_imports_everything_a_decode_needs_before_its_memory_is_capped():
    """A module first imported under the worker's address-space cap can fail to parse (a SyntaxError that the fuzzer
    would report as a decoder failure): after ``import_package`` no decode of any conformance stream, valid or not,
    imports another nxcodec module. Shapes are meshed on a 16^3 grid: the same modules as at the default 256^3, in
    a sixth of the time."""
    import subprocess

    script = f"""
import sys
sys.path.insert(0, {str(ROOT / "bench")!r})
import fuzz
from nxcodec.codec import decode_stream
fuzz.import_package()
before = {{m for m in sys.modules if m.startswith("nxcodec")}}
from pathlib import Path
paths = sorted(Path({str(ROOT / "bitstream" / "conformance")!r}).rglob("*.nxc"))
for path in paths:
    data = path.read_bytes()
    try:
        decode_stream(data, "cpu", **({{"resolution": 16}} if data[5:6] == b"\\x03" else {{}}))
    except Exception:
        pass
print(len(paths), sorted({{m for m in sys.modules if m.startswith("nxcodec")}} - before))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    count, new = out.stdout.split(" ", 1)
    assert int(count) > 50 and new.strip() == "[]"
