"""Batch compression of a directory tree: crash-safe, resumable and parallel.

``run_batch`` mirrors SRC into DST: every file a modality reads becomes
``DST/<relative path>.nxc`` (``batch-decode`` goes the other way). Each output is written
atomically. ``DST/manifest.jsonl`` is a journal: before any output is written it claims
every file the run will write ("started"), and each finished file's record is appended
at once, so a run killed at any moment loses at most the files in flight; ``resume``
skips the files the manifest records as done whose outputs exist and pass their CRC, and
redoes the rest, overwriting the outputs it claimed (and only those) without ``--force``.
A file that fails is recorded with its error and the batch goes on.

Work runs in this process, in local worker processes (one per CPU worker or per GPU), or
as Ray tasks on a cluster (``ray_address``): each task gets the file's bytes and returns
the output's bytes, so workers need no shared filesystem, and the driver writes outputs
and the manifest.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import socket
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from nxcodec import signals
from nxcodec.decoder import check_header, output_kind
from nxcodec.errors import InputError, NxcError, OutputError, UsageError
from nxcodec.io import write_atomic, write_bytes_atomic
from nxcodec.limits import Limits
from nxcodec.workers import exit_with_parent

MANIFEST = "manifest.jsonl"
SUMMARY = "manifest.csv"
NXC = ".nxc"


@dataclass
class Job:
    """One file to process: where it is, its path relative to SRC, where its output goes."""

    source: Path
    rel: str
    output: Path


@dataclass
class Record:
    """One line of the manifest."""

    source: str
    source_bytes: int
    output: str
    output_bytes: int
    rate: float | None
    rate_unit: str
    psnr: float | None
    seconds: float
    device: str
    status: str  # "ok", "error", or "started" (claimed by a run that may have been killed before it finished)
    error: str = ""
    settings: dict | None = None  # encode batches: what the output was made with (EncodeSettings.recorded)
    stream_version: int | None = None  # the output's .nxc version (encode batches)


@dataclass
class EncodeSettings:
    """What every file of an encode batch gets (see ``nxcodec encode``)."""

    quality: int = 5
    rates: dict[str, float] = field(default_factory=dict)  # target per rate unit ("bpp", "kbps", "KB"); others: quality
    iters: int | None = None
    seed: int = 0
    group: int = 1  # files fitted side by side (one optimizer step for all: fills a GPU with small files)

    def recorded(self) -> dict:
        """What the manifest records of these settings (every field, ``group`` included)."""
        return {"quality": self.quality, "rates": dict(sorted(self.rates.items())), "iters": self.iters,
                "seed": self.seed, "group": self.group}


RESUME_MUST_MATCH = ("quality", "rates", "iters", "seed")  # settings that change what a file's output is
LOCK = ".nxcodec-batch.lock"


def _walk(src: Path, dst: Path) -> Iterator[Path]:
    """Every file under SRC, sorted, except under DST; a folder that cannot be read stops the run (``InputError``)
    rather than leave its files out unnoticed."""

    def refuse(exc: OSError) -> None:
        raise InputError(f"{exc.filename}: cannot read this folder ({exc.strerror})")

    dst = dst.resolve()
    for root, dirs, files in os.walk(src, onerror=refuse):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if (root_path / d).resolve() != dst)
        for name in sorted(files):
            yield root_path / name


def encode_jobs(src: Path, dst: Path) -> list[Job]:
    """Every file under SRC that some modality reads, with its mirrored ``.nxc`` output."""
    jobs = []
    for path in _walk(src, dst):
        try:
            signals.for_path(path)
        except InputError:
            continue
        rel = path.relative_to(src).as_posix()
        jobs.append(Job(path, rel, dst / (rel + NXC)))
    return jobs


def decoded_name(rel: str, modality: signals.Modality) -> str:
    """``a/photo.png.nxc`` -> ``a/photo.png``; ``a/photo.jpg.nxc`` -> ``a/photo.jpg.png`` (never a wrong extension)."""
    stem = rel[: -len(NXC)] if rel.endswith(NXC) else rel
    return stem if Path(stem).suffix.lower() == modality.default_extension else stem + modality.default_extension


def decode_jobs(src: Path, dst: Path) -> list[Job]:
    """Every ``.nxc`` under SRC, with its output named by the modality its header declares; a stream whose header
    cannot be read keeps its own name as the output's, and fails when it is decoded."""
    jobs = []
    for p in _walk(src, dst):
        if p.suffix != NXC:
            continue
        rel = p.relative_to(src).as_posix()
        try:
            name = decoded_name(rel, output_kind(p.read_bytes()))
        except (NxcError, OSError):
            name = rel
        jobs.append(Job(p, rel, dst / name))
    return jobs


def unwritable(todo: list[Job], previous: dict[str, dict], force: bool) -> dict[int, str]:
    """The jobs (by index) whose output must not be written, and why: a file there that this batch did not write
    (without ``force``), or an output another job of the run also writes (``a.nxc`` and ``a.png.nxc`` both decode
    to ``a.png``)."""
    claimed: dict[Path, str] = {}
    refused = {}
    for i, job in enumerate(todo):
        if job.output.suffix == NXC and job.source.suffix == NXC:
            continue  # a stream whose header is unreadable: it fails when decoded and writes nothing
        key = job.output.resolve()
        ours = (previous.get(job.rel) or {}).get("output") == job.output.name
        if key in claimed:
            refused[i] = f"{job.output}: {claimed[key]} is decoded to the same file; rename one of them"
        elif job.output.exists() and not (force or ours):
            refused[i] = f"{job.output}: already exists (use --force to replace it)"
        else:
            claimed[key] = job.rel
    return refused


def _error_record(job: Job, exc: BaseException, t0: float, device: str) -> Record:
    message = str(exc) if isinstance(exc, NxcError) else f"{type(exc).__name__}: {exc}"
    size = job.source.stat().st_size if job.source.exists() else 0
    return Record(job.rel, size, "", 0, None, "", None, time.perf_counter() - t0, device, "error", message)


def encode_group(jobs: list[Job], settings: EncodeSettings, device: str, coding_workers: int | None = 1
                 ) -> list[Record]:
    """Encode files together (networks of the same shape fitted side by side) into their outputs; the fitted
    images, audio planes and meshes are coded in ``coding_workers`` processes (``EncodeOptions.coding_workers``).

    Failures become error records, never exceptions: an unreadable file is recorded and
    the others go on; if fitting the group fails, each file is retried alone so that one
    bad file cannot take the others down with it.
    """
    from nxcodec.codec import EncodeOptions, encode_signals

    t0 = time.perf_counter()
    records: dict[int, Record] = {}
    readable: dict[str, list[tuple[int, signals.Signal]]] = {}
    modalities = {}
    for i, job in enumerate(jobs):
        try:
            if not job.source.is_file():
                raise InputError(f"{job.source}: no such file")
            mod = signals.for_path(job.source)
            signal = mod.read(job.source)
            readable.setdefault(mod.name, []).append((i, signal))
            modalities[mod.name] = mod
        except Exception as exc:  # one bad file must not stop the batch
            records[i] = _error_record(job, exc, t0, device)
    for name, items in readable.items():
        opts = EncodeOptions(quality=settings.quality, rate=settings.rates.get(modalities[name].rate_unit),
                             iters=settings.iters, device=device, seed=settings.seed, coding_workers=coding_workers)
        try:
            results = encode_signals(modalities[name], [sig for _, sig in items], opts)
        except Exception as exc:
            if len(jobs) == 1:
                records[items[0][0]] = _error_record(jobs[items[0][0]], exc, t0, device)
                continue
            for i, _ in items:
                records[i] = encode_group([jobs[i]], settings, device)[0]
            continue
        for (i, _), res in zip(items, results):
            job = jobs[i]
            try:
                job.output.parent.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(job.output, res.data, force=True)
                records[i] = Record(job.rel, job.source.stat().st_size, job.output.name, len(res.data), res.rate,
                                    res.rate_unit, res.metrics.get("psnr"), res.encode_seconds, res.device, "ok",
                                    settings=settings.recorded(), stream_version=res.data[4])
            except Exception as exc:
                records[i] = _error_record(job, exc, t0, device)
    return [records[i] for i in range(len(jobs))]


def decode_one(job: Job, device: str, limits: Limits | None = None) -> Record:
    """Decode one stream into its output (within ``limits``); failures become an error record."""
    from nxcodec.codec import decode_stream

    t0 = time.perf_counter()
    try:
        decoded, array = decode_stream(job.source.read_bytes(), device, limits, streamed=True)
        out = job.output
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, lambda tmp: decoded.modality.write(decoded.descriptor, array, tmp), force=True)
        return Record(job.rel, job.source.stat().st_size, out.name, out.stat().st_size, None, "", None,
                      time.perf_counter() - t0, device, "ok")
    except Exception as exc:
        return _error_record(job, exc, t0, device)


def read_manifest(path: Path) -> dict[str, dict]:
    """The last record per source; a torn last line (a kill mid-write) is ignored."""
    records: dict[str, dict] = {}
    if not path.exists():
        return records
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
            records[rec["source"]] = rec
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return records


def is_done(job: Job, record: dict | None, check: Callable[[Path], bool]) -> bool:
    """Recorded as ok, and its output is there, whole and valid."""
    if not record or record.get("status") != "ok":
        return False
    out = job.output.parent / record.get("output", "")
    return out.is_file() and out.stat().st_size == record.get("output_bytes") and check(out)


def stream_is_valid(path: Path) -> bool:
    """A ``.nxc`` file whose header, sizes and CRC check out."""
    try:
        check_header(path.read_bytes())
        return True
    except (NxcError, OSError):
        return False


def _remove_partial_files(dst: Path) -> None:
    for tmp in dst.rglob(".*.part"):
        tmp.unlink(missing_ok=True)


def _append(path: Path, *records: Record) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(asdict(record)) + "\n" for record in records))
        f.flush()
        os.fsync(f.fileno())


def _end_torn_line(path: Path) -> None:
    """End the manifest's last line if a kill tore it, so that the records appended next start on lines of their own
    (the torn line stays, ignored by :func:`read_manifest`)."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _claim(job: Job) -> Record:
    """The record that says this run may write ``job``'s output: a run killed after an output was written but before
    its record was appended finds the claim on resume, so the output counts as its own, not as a user's file."""
    return Record(job.rel, 0, job.output.name, 0, None, "", None, 0.0, "", "started")


def _write_summary(dst: Path, records: list[dict]) -> None:
    buf = io.StringIO()
    fields = list(Record.__dataclass_fields__)
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for rec in sorted(records, key=lambda r: r["source"]):
        writer.writerow({k: json.dumps(rec.get(k)) if isinstance(rec.get(k), dict) else rec.get(k) for k in fields})
    write_bytes_atomic(dst / SUMMARY, buf.getvalue().encode(), force=True)


_WORKER_DEVICE = "cpu"


def _init_worker(devices: "multiprocessing.Queue", threads: int) -> None:
    global _WORKER_DEVICE
    import torch

    exit_with_parent()
    _WORKER_DEVICE = devices.get()
    torch.set_num_threads(threads)


def process(kind: str, jobs: list[Job], settings: EncodeSettings, device: str,
            limits: Limits | None = None, coding_workers: int | None = 1) -> list[Record]:
    """Encode a group of files, or decode one within ``limits`` (decoding is never grouped)."""
    if kind == "encode":
        return encode_group(jobs, settings, device, coding_workers)
    return [decode_one(job, device, limits) for job in jobs]


def _run_in_worker(kind: str, jobs: list[Job], settings: EncodeSettings, limits: Limits | None) -> list[Record]:
    return process(kind, jobs, settings, _WORKER_DEVICE, limits)


def _ray_task(kind: str, files: list[tuple[str, str, bytes]], settings: EncodeSettings,
              limits: Limits | None = None) -> list[tuple[bytes | None, dict]]:
    """On a Ray worker: encode or decode a group of files (their names, their outputs' names and their bytes); the
    output bytes and a partial record of each."""
    import tempfile

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for i, (name, out_name, payload) in enumerate(files):
            source = Path(tmp) / str(i) / Path(name).name
            source.parent.mkdir()
            source.write_bytes(payload)
            jobs.append(Job(source, name, source.parent / "out" / out_name))
            jobs[-1].output.parent.mkdir()
        out = []
        for job, record in zip(jobs, process(kind, jobs, settings, device, limits)):
            result = job.output.parent / record.output if record.status == "ok" else None
            out.append(((result.read_bytes() if result else None), asdict(record)))
        return out


def _chunks(todo: list[Job], size: int) -> list[list[Job]]:
    return [todo[i : i + size] for i in range(0, len(todo), max(1, size))]


def _run_on_ray(kind: str, todo: list[Job], settings: EncodeSettings, address: str, land: Callable[[Record], None],
                limits: Limits | None = None) -> None:
    """One Ray task per group of files (one GPU each where the cluster has GPUs), retried on worker loss."""
    try:
        import ray
    except ImportError:
        raise NxcError("the Ray backend needs Ray: pip install 'nxcodec[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, log_to_driver=False, include_dashboard=False)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError, depending on what is wrong
            raise NxcError(f"cannot reach the Ray cluster at '{address}': {exc}") from None
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=3)(_ray_task)
    size = settings.group if kind == "encode" else 1
    refs = {task.remote(kind, [(j.rel, j.output.name, j.source.read_bytes()) for j in group], settings, limits): group
            for group in _chunks(todo, size)}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            group = refs[ref]
            t0 = time.perf_counter()
            try:
                results = ray.get(ref)
            except Exception as exc:  # the task failed beyond its retries
                for job in group:
                    land(_error_record(job, exc, t0, "ray"))
                continue
            for job, (data, fields) in zip(group, results):
                record = Record(**fields)
                record.source, record.source_bytes = job.rel, job.source.stat().st_size
                if data is not None:
                    out = job.output.parent / record.output
                    out.parent.mkdir(parents=True, exist_ok=True)
                    write_bytes_atomic(out, data, force=True)
                land(record)


def _flags(settings: dict) -> str:
    """Recorded settings as the command-line options that give them."""
    parts = [f"--quality {settings.get('quality')}"]
    parts += [f"--{unit.lower()} {value:g}" for unit, value in (settings.get("rates") or {}).items()]
    if settings.get("iters") is not None:
        parts.append(f"--iters {settings['iters']}")
    return " ".join(parts + [f"--seed {settings.get('seed')}"])


def check_settings(settings: EncodeSettings, coding_workers: int | None = 1) -> None:
    """Refuse encode settings (and a count of coding processes) out of range (``UsageError``, one line) before any
    file is touched."""
    from nxcodec.codec import EncodeOptions, check_options

    if not (isinstance(settings.group, int) and settings.group >= 1):
        raise UsageError(f"group must be a positive integer, not {settings.group!r}")
    for rate in [None, *settings.rates.values()]:
        check_options(EncodeOptions(quality=settings.quality, rate=rate, iters=settings.iters, seed=settings.seed,
                                    coding_workers=coding_workers))


def check_resume_settings(previous: dict[str, dict], settings: EncodeSettings, dst: Path) -> None:
    """Refuse to resume an encode batch whose finished outputs were made with other settings.

    ``quality``, the rate targets, ``iters`` and ``seed`` must match (they decide what an
    output is); ``group`` may differ (it decides only which files are fitted together).
    Records of older nxcodec versions, without settings, are not compared.
    """
    wanted = settings.recorded()
    for rec in previous.values():
        old = rec.get("settings")
        if rec.get("status") != "ok" or not isinstance(old, dict):
            continue
        if any(old.get(k) != wanted[k] for k in RESUME_MUST_MATCH):
            raise OutputError(f"{dst} was encoded with {_flags(old)}, not {_flags(wanted)}: resume with the same "
                              f"settings, or use --force to start over")


class DestinationLock:
    """``DST/.nxcodec-batch.lock``: one batch run per destination at a time.

    The run holds an exclusive ``flock`` on the file (which names its pid and host) for
    as long as it runs. The kernel drops the lock when its process ends, however it ends,
    so a lock left by a run killed with SIGKILL is stale and simply taken; a lock held by
    a live run is refused with a line that names it. The file is removed on a clean exit.
    """

    def __init__(self, dst: Path) -> None:
        self.path = dst / LOCK
        self.fd: int | None = None

    def __enter__(self) -> "DestinationLock":
        import fcntl

        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                who = f"pid {holder[0]} on {holder[1]}" if len(holder) == 2 else "another process"
                raise OutputError(f"{self.path.parent} is in use by another nxcodec batch ({who}); "
                                  f"wait for it to finish") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its previous holder removed the file as we opened it: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            self.fd = fd
            return self
        raise OutputError(f"{self.path.parent} is in use by other nxcodec batches; wait for them to finish")

    @staticmethod
    def _holder(fd: int) -> list[str]:
        """The pid and host a locked file names; its holder writes them just after taking the lock, so an empty
        file is read again for a moment before giving up."""
        for _ in range(50):
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            if holder:
                return holder
            time.sleep(0.01)
        return []

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


@dataclass
class BatchSummary:
    """What a batch run did."""

    total: int
    skipped: int
    ok: int
    failed: int
    seconds: float
    records: list[dict]


def run_batch(
    kind: str,
    src: Path,
    dst: Path,
    settings: EncodeSettings | None = None,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    devices: list[str] | None = None,
    workers: int = 1,
    on_record: Callable[[Record], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    ray_address: str | None = None,
    limits: Limits | None = None,
    coding_workers: int | None = 1,
) -> BatchSummary:
    """Encode (``kind="encode"``) or decode (``"decode"``) every file of SRC into DST.

    ``devices`` runs one worker per device (e.g. ``["cuda:0", "cuda:1"]``); otherwise ``workers``
    workers share ``device`` (``auto``: CUDA when present, else the CPU); ``ray_address``
    (``auto``, an address, or ``local`` for a fresh local instance) sends one task per file to
    Ray. ``limits`` bound what each stream of a decode batch may make the decoder do (a
    stream beyond them is recorded as an error). ``on_start(total, to_do)`` is called once
    the work is known; ``on_record`` sees each record as it lands. ``coding_workers`` is
    :class:`nxcodec.codec.EncodeOptions`'s, for a batch run in this process (one device, one
    worker); workers of their own code in one process each.
    """
    settings = settings or EncodeSettings()
    if not src.is_dir():
        raise InputError(f"{src}: not a directory")
    if kind == "encode":
        check_settings(settings, coding_workers)
    if not (isinstance(workers, int) and workers >= 1):
        raise UsageError(f"workers must be a positive integer, not {workers!r}")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{dst}: cannot be the destination folder ({exc.strerror})") from None
    if not os.access(dst, os.W_OK | os.X_OK):
        raise OutputError(f"{dst}: cannot write in this folder")
    with DestinationLock(dst):
        return _run_batch(kind, src, dst, settings, resume, force, device, devices, workers, on_record, on_start,
                          ray_address, limits, coding_workers)


def _run_batch(kind: str, src: Path, dst: Path, settings: EncodeSettings, resume: bool, force: bool, device: str,
               devices: list[str] | None, workers: int, on_record: Callable[[Record], None] | None,
               on_start: Callable[[int, int], None] | None, ray_address: str | None,
               limits: Limits | None = None, coding_workers: int | None = 1) -> BatchSummary:
    """:func:`run_batch` once the destination is locked."""
    manifest = dst / MANIFEST
    if manifest.exists() and not (resume or force):
        raise OutputError(f"{dst} already holds a batch ({MANIFEST}); use --resume to finish it or --force to redo it")
    if force and not resume:
        manifest.unlink(missing_ok=True)
    _remove_partial_files(dst)
    jobs = encode_jobs(src, dst) if kind == "encode" else decode_jobs(src, dst)
    previous = read_manifest(manifest)
    _end_torn_line(manifest)
    if kind == "encode":
        check_resume_settings(previous, settings, dst)
    check = stream_is_valid if kind == "encode" else (lambda p: True)
    todo = [j for j in jobs if not is_done(j, previous.get(j.rel), check)]
    skipped = len(jobs) - len(todo)
    if on_start:
        on_start(len(jobs), len(todo))
    t0 = time.perf_counter()
    done: dict[str, dict] = {j.rel: previous[j.rel] for j in jobs if j not in todo}
    ok = failed = 0
    refused = unwritable(todo, previous, force)

    def land(record: Record) -> None:
        nonlocal ok, failed
        _append(manifest, record)
        done[record.source] = asdict(record)
        ok, failed = (ok + 1, failed) if record.status == "ok" else (ok, failed + 1)
        if on_record:
            on_record(record)

    for i in sorted(refused):
        land(_error_record(todo[i], OutputError(refused[i]), t0, ""))
    todo = [job for i, job in enumerate(todo) if i not in refused]
    if todo:
        _append(manifest, *(_claim(job) for job in todo))

    if devices:
        device_list = devices
    else:
        from nxcodec.codec import resolve_device

        device_list = [str(resolve_device(device))] * max(1, workers)
    groups = _chunks(todo, settings.group if kind == "encode" else 1)
    if ray_address and todo:
        _run_on_ray(kind, todo, settings, ray_address, land, limits)
    elif len(device_list) == 1:
        for group in groups:
            for record in process(kind, group, settings, device_list[0], limits, coding_workers):
                land(record)
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        for d in device_list:
            queue.put(d)
        threads = max(1, (os.cpu_count() or 1) // len(device_list))
        with ProcessPoolExecutor(len(device_list), mp_context=ctx, initializer=_init_worker,
                                 initargs=(queue, threads)) as pool:
            pending: set[Future] = {pool.submit(_run_in_worker, kind, group, settings, limits) for group in groups}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    for record in fut.result():
                        land(record)
    _write_summary(dst, list(done.values()))
    return BatchSummary(len(jobs), skipped, ok, failed, time.perf_counter() - t0, list(done.values()))
