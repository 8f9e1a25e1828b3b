"""Worker processes that end with their parent.

``nxcodec batch --workers N`` and the benchmarks' baseline workers are spawned processes
of a pool. When the parent is killed (SIGKILL, the out-of-memory killer) such a worker
would wait forever on its task queue, holding its memory (about 300 MB with torch loaded);
:func:`exit_with_parent`, called in the pool's initializer, ends it as soon as the parent
has gone. Workers that only compute and return (baselines, the coding of fitted images) also leave Ctrl-C to
the parent (:func:`compute_worker`): it stops the pool and reports the interruption in one line, where each worker
would print a traceback of its own.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading

from nxcodec.host_memory import keep_freed_memory


def exit_with_parent() -> None:
    """In a spawned or forked child: exit at once (status 1) when the parent process ends, whatever ends it."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def compute_worker() -> None:
    """Initializer of a pool whose workers write nothing: :func:`exit_with_parent`, ignore SIGINT (a terminal's
    Ctrl-C reaches every process of the group; the parent handles it and the pool ends with it), and keep freed
    memory for reuse (:mod:`nxcodec.host_memory`)."""
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
