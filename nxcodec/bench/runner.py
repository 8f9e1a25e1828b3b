"""How every benchmark runs: baselines in worker processes while nxcodec fits, points kept as they come.

A benchmark is a resumable store of points (``OUT/points.jsonl``), a list of baseline jobs
(top-level functions with picklable arguments, so worker processes can run them) and a
sequence of nxcodec rounds, each fitting a group of signals together on the device. With
more than one worker the baselines run in processes alongside the fits (their timings are
then measured on a busy machine, which the README of each result says); with one they run
after the fits, in this process. Summaries are rewritten after every round, so a stopped
run leaves usable results and a rerun measures only what is missing. A signal that nxcodec
cannot code at a level (a rate target below its lowest quality, say) is recorded as a
failed point with the error, and the run goes on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from nxcodec.bench.results import read_points
from nxcodec.codec import EncodeOptions, EncodeResult, decode_stream, encode_signals
from nxcodec.errors import NxcError
from nxcodec.signals import Modality, Signal
from nxcodec.workers import compute_worker


def on_gpu(device: str) -> bool:
    """Whether a benchmark's ``--device`` puts the fits on a GPU."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def default_workers(device: str, workers: int | None) -> int:
    """Baseline processes: all cores but one while a GPU fits, else one (the fits need the CPU)."""
    return workers if workers is not None else (max(1, (os.cpu_count() or 2) - 1) if on_gpu(device) else 1)


class PointStore:
    """The points measured so far, keyed by ``key`` fields, appended to ``path`` as they arrive."""

    def __init__(self, path: Path, key: tuple[str, ...]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.key = path, key
        self.points = read_points(path, key)

    def __contains__(self, key: tuple) -> bool:
        return key in self.points

    def keep(self, point: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(point) + "\n")
        self.points[tuple(point[k] for k in self.key)] = point

    def values(self) -> list[dict]:
        """The measured points (failed ones left out)."""
        return [p for p in self.points.values() if "error" not in p]

    def failures(self) -> list[dict]:
        """The points recorded as failed: their key fields and ``error``."""
        return [p for p in self.points.values() if "error" in p]


def encode_and_decode(modality: Modality, signals: list[Signal], opts: EncodeOptions,
                      decode_device: str) -> list[tuple[EncodeResult, Any, float]]:
    """Encode the signals together (one stack on a GPU); then decode each stream on ``decode_device``.

    Returns, per signal, the encode result, the decoded signal and the decode's seconds.
    """
    out = []
    for res in encode_signals(modality, signals, opts):
        t0 = time.perf_counter()
        _, decoded = decode_stream(res.data, device=decode_device)
        out.append((res, decoded, time.perf_counter() - t0))
    return out


def grouped_rounds(levels: Iterable[Any], items: list[Path], size: int, measured: Callable[[Path, Any], bool],
                   fit: Callable[[list[Path], Any], list[dict]],
                   key: Callable[[Path, Any], dict]) -> Iterator[list[dict]]:
    """Level by level (quality or rate), the items not yet measured, ``size`` at a time: one fit per step.

    Level-major, so a stopped run has every item at the first levels. A group whose fit
    raises ``NxcError`` is fitted again one item at a time; an item that fails alone
    becomes the point ``key(item, level)`` with the error's message under ``error``.
    """
    def attempt(chunk: list[Path], level: Any) -> list[dict]:
        try:
            return fit(chunk, level)
        except NxcError as exc:
            if len(chunk) == 1:
                return [{**key(chunk[0], level), "error": str(exc)}]
            return [p for item in chunk for p in attempt([item], level)]

    for level in levels:
        todo = [p for p in items if not measured(p, level)]
        for i in range(0, len(todo), size):
            yield attempt(todo[i : i + size], level)


def _init_worker() -> None:
    """A baseline worker: one thread, gone with the benchmark that started it, Ctrl-C left to the benchmark."""
    compute_worker()
    torch.set_num_threads(1)


def run_points(store: PointStore, baseline: Callable[..., dict], jobs: list[tuple], rounds: Iterable[list[dict]],
               workers: int, after_round: Callable[[], Any] = lambda: None,
               log: Callable[[dict], None] = lambda point: None) -> None:
    """Measure ``baseline(*job)`` for every job and every point of every round into ``store``.

    ``rounds`` is lazy (a generator): each step fits one group and yields its points, so
    the baselines finished meanwhile are collected between fits.
    """
    pool = None
    if workers > 1 and jobs:
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)
    pending: list[Future] = [pool.submit(baseline, *job) for job in jobs] if pool else []

    def collect(wait: bool) -> None:
        for fut in [f for f in pending if wait or f.done()]:
            store.keep(fut.result())
            pending.remove(fut)

    try:
        for points in rounds:
            for point in points:
                store.keep(point)
                if "error" in point:
                    print(f"{' '.join(str(v) for k, v in point.items() if k != 'error')}: failed ({point['error']})",
                          flush=True)
                else:
                    log(point)
            collect(wait=False)
            after_round()
        if pool is None:
            for job in jobs:
                store.keep(baseline(*job))
        collect(wait=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
