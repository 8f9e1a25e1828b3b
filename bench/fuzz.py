"""A seeded, repeatable fuzzer of the decoder (every stream version).

Mutates real streams (the conformance streams of bitstream/conformance, v1/ and v3/ to v12/, and a few
freshly encoded tiny ones) with bit flips, byte sets, truncation, insertion, deletion,
splicing and pokes of header, config, tensor-table and payload-length fields; most cases
then get a correct trailing CRC-32, so that the mutation reaches the parser rather than
the checksum. Every case is decoded (and, if it decodes, written and described as
``nxcodec decode`` and ``nxcodec info`` would) in a worker process under a time limit and
an address-space limit (``resource.setrlimit(RLIMIT_AS)``), with the decoding limits a
service would set. A case passes when it decodes or raises ``NxcError``; any other
exception, a crash, a hang or a memory blow-up is a failure, and its input is saved to
``--out`` with a line in ``failures.jsonl``. Case ``i`` of seed ``S`` is the same on every
run, whatever the number of workers.

    python bench/fuzz.py --cases 2000 --seed 0 --out /tmp/fuzz
    python bench/fuzz.py --replay /tmp/fuzz/fail-000123.nxc     # one saved case, in this process
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import select
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT / "bitstream" / "conformance"
RESOLUTION = 16  # shapes are decoded at this grid size (the default, 256, is far too slow for thousands of cases)
TIMEOUT = 20.0  # seconds per case
MEMORY_MB = 3072  # address space a worker may add to what it has after importing torch
CRC_FIXED = 0.85  # fraction of cases whose CRC is recomputed after mutating
_CASE = struct.Struct("<I")
INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1024, 1025, 4095, 4096,
               32767, 32768, 65535, 65536, 1 << 20, 1 << 24, 1 << 27, (1 << 31) - 1, 1 << 31, (1 << 32) - 1)


def service_limits():
    """The decoding limits of the fuzzed decoder: those a service decoding strangers' files would set."""
    from nxcodec.limits import Limits

    return Limits(max_samples=1 << 20, max_work=1 << 32, max_table_work=1 << 26, max_faces=1 << 18)


# ---------------------------------------------------------------------------------------------- corpus


def conformance_streams() -> list[tuple[str, bytes]]:
    """Every committed conformance stream: version 2, version 1, version 3 (latent images), version 4 (latent audio),
    version 5 (latent shapes), version 6 (all three with escapes), version 7 (shapes with an occupancy map), version 8
    (shapes with the built-in context models), version 9 (images and audio with finer latent tables), version 10 (long
    audio), version 11 (images and audio with a compact tensor table), version 12 (images with a raster context)."""
    paths = (sorted(CONFORMANCE.glob("*.nxc")) + sorted((CONFORMANCE / "v1").glob("*.nxc"))
             + sorted((CONFORMANCE / "v3").glob("*.nxc")) + sorted((CONFORMANCE / "v4").glob("*.nxc"))
             + sorted((CONFORMANCE / "v5").glob("*.nxc")) + sorted((CONFORMANCE / "v6").glob("*/*.nxc"))
             + sorted((CONFORMANCE / "v7").glob("*/*.nxc")) + sorted((CONFORMANCE / "v8").glob("*/*.nxc"))
             + sorted((CONFORMANCE / "v9").glob("*/*.nxc")) + sorted((CONFORMANCE / "v10").glob("*/*.nxc"))
             + sorted((CONFORMANCE / "v11").glob("*/*.nxc")) + sorted((CONFORMANCE / "v12").glob("*/*.nxc")))
    return [(p.relative_to(CONFORMANCE).as_posix(), p.read_bytes()) for p in paths]


def fresh_streams(seed: int) -> list[tuple[str, bytes]]:
    """A few tiny signals encoded now (CPU, short fits, ``seed``): gray and RGBA images, a mono clip."""
    from nxcodec.codec import EncodeOptions, encode_signal
    from nxcodec.signals import for_name

    rng = np.random.default_rng(seed)
    image, audio = for_name("image"), for_name("audio")
    y, x = np.mgrid[0:10, 0:12]
    gray = (128 + 60 * np.sin(x / 3.0) * np.cos(y / 4.0) + rng.normal(0, 8, (10, 12))).clip(0, 255).astype(np.uint8)
    rgba = np.stack([gray, gray[::-1], gray[:, ::-1], np.full_like(gray, 200)], -1)[:7, :9]
    t = np.arange(400) / 8000.0
    clip = (0.5 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    opts = EncodeOptions(iters=20, device="cpu", seed=seed)
    out = []
    for name, modality, signal in (("fresh_gray_12x10", image, image.from_array(gray)),
                                   ("fresh_rgba_9x7", image, image.from_array(np.ascontiguousarray(rgba))),
                                   ("fresh_mono_400", audio, audio.from_array(clip, 8000))):
        out.append((name, encode_signal(modality, signal, opts).data))
    return out


def _table_fields(pos: int, table: dict, version: int) -> tuple[list[tuple[int, int]], int]:
    """(offset, size) of every field of a latent body's tensor table at ``pos``, and where it ends: 9-byte entries
    (step code, lo, hi, mu, decay), or from version 11 compact ones (step code, decay, then each varint byte)."""
    from nxcodec.latent import stream

    out = []
    for _, *entry in table.values():
        if version < stream.COMPACT_VERSION:
            out += [(pos, 1), (pos + 1, 2), (pos + 3, 2), (pos + 5, 2), (pos + 7, 2)]
            pos += 9
        else:
            size = len(stream.pack_entry(*entry, compact=True))
            out += [(pos, 1), (pos + 1, 2)] + [(pos + i, 1) for i in range(3, size)]
            pos += size
    return out, pos


def field_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every integer field of a well-formed stream: header, descriptor, configs, tables, lengths."""
    from nxcodec.model import ModelConfig, tensor_shapes

    out = [(4, 1), (5, 1), (6, 2)]
    desc_len = struct.unpack_from("<H", data, 6)[0]
    out += [(8 + i, 4) for i in range(0, desc_len - 3, 4)] + [(8 + i, 1) for i in range(desc_len)]
    pos = 8 + desc_len
    if data[4] >= 3:  # latent streams: one body (images, shapes) or one per plane (audio), after any occupancy map
        from nxcodec.decoder import latent_reader

        header = latent_reader(data).read_header(data)
        if getattr(header, "occupancy", None) is not None:  # occ_log2, the 14 probabilities, the payload length
            out += [(pos + i, 1) for i in range(15)] + [(pos + 15, 4)]
            pos += header.sizes["occupancy"]
        for body in getattr(header, "bodies", None) or [header.body]:  # config, tensor table, payload length
            out += [(pos + i, 1) for i in range(10)]
            fields, pos = _table_fields(pos + 10, body.table, data[4])
            out += fields + [(pos, 4)]
            pos += 4 + len(body.payload)
        return out
    out.append((pos, 2))
    n = struct.unpack_from("<H", data, pos)[0]
    pos += 2
    sizes = [struct.calcsize("<" + c) for c in "BBBBHHHBBHBHBB"]
    for _ in range(n):
        cfg = ModelConfig.unpack(data[pos : pos + ModelConfig.SIZE])
        at = pos
        for s in sizes:
            out.append((at, s))
            at += s
        pos += ModelConfig.SIZE
        for _ in tensor_shapes(cfg):
            out += [(pos, 1), (pos + 1, 2), (pos + 3, 2), (pos + 5, 2), (pos + 7, 2)]
            pos += 9
        out.append((pos, 4))
        pos += 4 + struct.unpack_from("<I", data, pos)[0]
    return out


@dataclass
class Seed:
    """One stream to mutate, with its field offsets."""

    name: str
    data: bytes
    fields: list[tuple[int, int]] = field(default_factory=list)


def load_corpus(fresh: bool, seed: int) -> list[Seed]:
    streams = conformance_streams() + (fresh_streams(seed) if fresh else [])
    return [Seed(name, data, field_offsets(data)) for name, data in streams]


# ---------------------------------------------------------------------------------------------- mutations


def _poke(rng: np.random.Generator, data: bytearray, seed: Seed) -> str:
    at, size = seed.fields[rng.integers(len(seed.fields))]
    if at + size > len(data):
        return "poke(out)"
    old = int.from_bytes(data[at : at + size], "little")
    choice = rng.integers(4)
    if choice == 0:
        value = int(rng.choice(INTERESTING))
    elif choice == 1:
        value = old + int(rng.integers(-3, 4))
    elif choice == 2:
        value = int(rng.integers(0, 1 << (8 * size), dtype=np.uint64))
    else:
        value = (1 << (8 * size)) - 1 - int(rng.integers(0, 3))
    value %= 1 << (8 * size)
    data[at : at + size] = value.to_bytes(size, "little")
    return f"poke({at},{size})"


def mutate(rng: np.random.Generator, corpus: list[Seed]) -> tuple[bytes, str, str]:
    """One mutated stream, what was done to it, and the name of the stream it came from."""
    seed = corpus[rng.integers(len(corpus))]
    data = bytearray(seed.data)
    ops = []
    for _ in range(int(rng.geometric(0.6))):
        kind = int(rng.integers(8))
        n = len(data)
        if kind in (0, 1) and seed.fields:  # header and table fields: the most interesting place
            ops.append(_poke(rng, data, seed))
        elif kind == 2 and n:
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(n))
                data[i] ^= 1 << int(rng.integers(8))
            ops.append("flip")
        elif kind == 3 and n:
            for _ in range(int(rng.integers(1, 5))):
                data[int(rng.integers(n))] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(256))]))
            ops.append("set")
        elif kind == 4 and n:
            cut = int(rng.integers(0, n))
            data = data[:cut]
            ops.append(f"truncate({cut})")
        elif kind == 5:
            at = int(rng.integers(0, n + 1))
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 33)), dtype=np.uint8).tobytes()
            ops.append(f"insert({at})")
        elif kind == 6 and n:
            at = int(rng.integers(0, n))
            del data[at : at + int(rng.integers(1, 33))]
            ops.append(f"delete({at})")
        else:
            other = corpus[rng.integers(len(corpus))].data
            a, b = int(rng.integers(0, n + 1)), int(rng.integers(0, len(other) + 1))
            data = data[:a] + bytearray(other[b:])
            ops.append(f"splice({a},{b})")
    if rng.random() < CRC_FIXED and len(data) >= 4:
        data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
        ops.append("crc")
    return bytes(data), " ".join(ops), seed.name


def case(seed: int, index: int, corpus: list[Seed]) -> tuple[bytes, str, str]:
    """Case ``index`` of run ``seed``: the same bytes on every run."""
    return mutate(np.random.default_rng([seed, index]), corpus)


# ---------------------------------------------------------------------------------------------- worker


def decode_case(data: bytes, resolution: int, scratch: Path) -> str:
    """Decode, write and describe a stream as the CLI would; ``ok`` or ``nxc``; anything else raises."""
    from nxcodec import container, signals
    from nxcodec.codec import decode_stream
    from nxcodec.decoder import is_latent, latent_reader
    from nxcodec.errors import NxcError

    try:  # nxcodec info
        if is_latent(data):
            latent_reader(data).info(data)
        else:
            modality_id, descriptor, _, layout = container.read_header(data)
            modality = signals.for_id(modality_id)
            desc = modality.unpack_descriptor(descriptor)
            modality.describe(desc)
            modality.rate(desc, layout.total)
    except NxcError:
        pass
    options = {"resolution": resolution} if len(data) > 5 and data[5] == 3 else {}
    try:
        decoded, array = decode_stream(data, "cpu", service_limits(), **options)
        out = scratch / ("out" + decoded.modality.default_extension)
        decoded.modality.write(decoded.descriptor, array, out)
        return "ok"
    except NxcError:
        return "nxc"


def import_package() -> None:
    """Import every module a decode may import, so that a worker imports none under its address-space cap: the
    decode path imports lazily, and a module parsed under a tight cap fails as a SyntaxError, not as the memory
    error it is."""
    import nxcodec

    for module in pkgutil.walk_packages(nxcodec.__path__, "nxcodec."):
        if module.name != "nxcodec.__main__" and not module.name.startswith("nxcodec.bench"):
            importlib.import_module(module.name)


def worker(resolution: int, memory_mb: int) -> None:
    """Read length-prefixed cases on stdin; answer one line each on stdout."""
    import resource
    import tempfile
    import traceback
    import warnings

    import torch

    import nxcodec.codec
    import skimage.measure  # noqa: F401
    import trimesh  # noqa: F401

    import_package()

    if not nxcodec.codec.__file__.startswith(str(ROOT)):
        raise SystemExit(f"the worker imported {nxcodec.codec.__file__}, not this tree's nxcodec")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
    cap = vm + memory_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    inp, out = sys.stdin.buffer, sys.stdout
    scratch = Path(tempfile.mkdtemp(prefix="nxc-fuzz-"))
    out.write(READY + "\n")  # imports done: from here on each case has its own time limit
    out.flush()
    while True:
        head = inp.read(_CASE.size)
        if len(head) < _CASE.size:
            return
        data = inp.read(_CASE.unpack(head)[0])
        try:
            result = decode_case(data, resolution, scratch)
        except BaseException as exc:  # noqa: BLE001  a failure of the decoder, reported to the parent
            tb = traceback.extract_tb(exc.__traceback__)
            where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
            result = "fail " + json.dumps(f"{type(exc).__name__} at {where}: {exc}"[:500])
        out.write(result + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class Outcome:
    ok: int = 0
    refused: int = 0
    failures: list[dict] = field(default_factory=list)


READY = "ready"  # a worker's first line, once its imports are done
STARTUP_SECONDS = 300


class _Worker:
    """One worker process; restarted after a crash or a hang."""

    def __init__(self, resolution: int, memory_mb: int) -> None:
        self.args = [sys.executable, str(Path(__file__).resolve()), "--worker", "--resolution", str(resolution),
                     "--memory-mb", str(memory_mb)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the worker and wait for its imports (torch, skimage, trimesh: seconds on a loaded machine), so
        that they never count against a case's time limit."""
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
        ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_SECONDS)
        line = self.proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        if line != READY:
            self.stop()
            raise SystemExit(f"a fuzz worker did not start within {STARTUP_SECONDS} s")

    def run(self, data: bytes, timeout: float) -> str:
        """``ok``, ``nxc`` or ``fail <json message>``; a worker that dies or hangs is replaced."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc and self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(_CASE.pack(len(data)) + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._died("the worker died")
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return "fail " + json.dumps(f"hang: no answer within {timeout:.0f} s")
        line = self.proc.stdout.readline().decode(errors="replace").strip()
        if not line:
            return self._died("the worker died")
        return line

    def _died(self, what: str) -> str:
        assert self.proc
        self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return "fail " + json.dumps(f"crash: {what} (exit status {code})")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def run(cases: int, seed: int, out: Path, workers: int = 2, fresh: bool = True, resolution: int = RESOLUTION,
        timeout: float = TIMEOUT, memory_mb: int = MEMORY_MB, start: int = 0,
        progress: bool = False) -> Outcome:
    """Run cases ``start .. start + cases - 1`` of ``seed``; failures are saved under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(fresh, seed)
    outcome = Outcome()
    lock = threading.Lock()
    next_index = [start]
    t0 = time.time()

    def loop() -> None:
        w = _Worker(resolution, memory_mb)
        try:
            while True:
                with lock:
                    i = next_index[0]
                    if i >= start + cases:
                        return
                    next_index[0] += 1
                data, ops, origin = case(seed, i, corpus)
                result = w.run(data, timeout)
                with lock:
                    if result == "ok":
                        outcome.ok += 1
                    elif result == "nxc":
                        outcome.refused += 1
                    else:
                        message = json.loads(result[5:]) if result.startswith("fail ") else result
                        name = f"fail-{i:07d}.nxc"
                        (out / name).write_bytes(data)
                        record = {"case": i, "seed": seed, "from": origin, "mutations": ops, "error": message,
                                  "file": name}
                        outcome.failures.append(record)
                        with open(out / "failures.jsonl", "a") as f:
                            f.write(json.dumps(record) + "\n")
                    done = outcome.ok + outcome.refused + len(outcome.failures)
                    if progress and done % 1000 == 0:
                        print(f"{done} cases, {len(outcome.failures)} failures, {time.time() - t0:.0f} s",
                              file=sys.stderr, flush=True)
        finally:
            w.stop()

    threads = [threading.Thread(target=loop) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index (to split a long run)")
    ap.add_argument("--out", type=Path, default=Path("fuzz-out"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-fresh", action="store_true", help="mutate only the committed conformance streams")
    ap.add_argument("--resolution", type=int, default=RESOLUTION)
    ap.add_argument("--timeout", type=float, default=TIMEOUT)
    ap.add_argument("--memory-mb", type=int, default=MEMORY_MB)
    ap.add_argument("--replay", type=Path, help="decode one saved case here, with its traceback")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.resolution, args.memory_mb)
    if args.replay:
        import tempfile

        print(decode_case(args.replay.read_bytes(), args.resolution, Path(tempfile.mkdtemp())))
        return
    from nxcodec.bench.results import git_commit, machine_name

    commit = git_commit()  # the tree the run starts from
    t0 = time.time()
    outcome = run(args.cases, args.seed, args.out, args.workers, not args.no_fresh, args.resolution, args.timeout,
                  args.memory_mb, args.start, progress=True)
    summary = {"commit": commit, "machine": machine_name("cpu"), "workers": args.workers,
               "cases": args.cases, "seed": args.seed, "start": args.start, "decoded": outcome.ok,
               "refused": outcome.refused, "failures": len(outcome.failures), "seconds": round(time.time() - t0, 1)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    sys.exit(1 if outcome.failures else 0)


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    main()
