"""Worker processes: computing workers leave Ctrl-C to their parent and end with it."""

import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from nxcodec.workers import compute_worker


def _sigint_handler() -> object:
    return signal.getsignal(signal.SIGINT)


def test_a_computing_worker_ignores_ctrl_c():
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=compute_worker) as pool:
        assert pool.submit(_sigint_handler).result(timeout=60) == signal.SIG_IGN


def test_an_interrupted_parent_reports_once_and_its_workers_print_nothing(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context
        from nxcodec.workers import compute_worker

        if __name__ == "__main__":
            pool = ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=compute_worker)
            pids = set()
            while len(pids) < 2:  # a worker that answered has run its initializer; wait until both have
                pids |= {f.result() for f in [pool.submit(os.getpid) for _ in range(2)]}
            try:
                os.killpg(0, signal.SIGINT)  # what a terminal's Ctrl-C does: every process of the group
                time.sleep(5)
            except KeyboardInterrupt:
                pool.shutdown(cancel_futures=True)
                print("interrupted", file=sys.stderr)
                sys.exit(130)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          start_new_session=True)
    assert proc.returncode == 130
    assert proc.stderr.strip() == "interrupted"
