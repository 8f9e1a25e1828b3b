"""Safe output: write to a temporary file beside the target, then rename.

A crash or an error never leaves a partial file under the output's name, and an existing
file is only replaced when the caller says so. Reading a stream file fails with a one-line
``InputError``. The name ``-`` stands for standard input as a source and standard output as
an output; what goes to standard output is sent only once it is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from nxcodec.errors import InputError, OutputError

STDIO = "-"  # a source or output of this name is standard input or output


def is_stdio(path: Path | str | None) -> bool:
    """Whether ``path`` names standard input (as a source) or standard output (as an output)."""
    return path is not None and str(path) == STDIO


def display_name(path: Path, output: bool = False) -> str:
    """How messages name a file: ``stdin`` or ``stdout`` for ``-``."""
    return ("stdout" if output else "stdin") if is_stdio(path) else str(path)


def read_stream(path: Path) -> bytes:
    """The bytes of a stream file (all of standard input for ``-``), or an ``InputError`` that says why not."""
    if is_stdio(path):
        data = sys.stdin.buffer.read()
        if not data:
            raise InputError("stdin: empty")
        return data
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def check_source(path: Path) -> None:
    """Refuse a source to encode that is missing or a folder, before its name decides what kind of signal it is."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory (encode takes one file; nxcodec batch codes a folder)")
    if not path.exists():
        raise InputError(f"{path}: no such file")


def check_writable(path: Path, force: bool) -> None:
    """Refuse early (before any work) an output that exists without ``force``, or whose folder is missing or
    cannot be written in."""
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists (use --force to replace it)")
    if not path.parent.exists():
        raise OutputError(f"{path.parent}: no such directory")
    if not path.parent.is_dir():
        raise OutputError(f"{path.parent}: not a directory")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path.parent}: cannot write in this directory")


def write_atomic(path: Path, writer: Callable[[Path], None], force: bool = False) -> None:
    """Call ``writer(tmp)`` to produce the file, then move it onto ``path`` in one step."""
    check_writable(path, force)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        if not force and path.exists():
            raise OutputError(f"{path}: already exists (use --force to replace it)")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data), force)


def check_stdout() -> None:
    """Refuse, before any work, to send a binary file to a terminal."""
    if sys.stdout.isatty():
        raise OutputError("stdout is a terminal: redirect it, or name an output file with -o")


@contextlib.contextmanager
def _stdout() -> Iterator[BinaryIO]:
    """Standard output as bytes; a reader that went away is an ``OutputError``."""
    out = sys.stdout.buffer
    try:
        yield out
        out.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        raise OutputError("stdout: the reader closed the pipe") from None


def write_stdout(data: bytes) -> None:
    """Send a finished stream to standard output."""
    with _stdout() as out:
        out.write(data)


def copy_to_stdout(path: Path) -> None:
    """Send the finished file ``path`` to standard output."""
    with _stdout() as out, open(path, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 20)
