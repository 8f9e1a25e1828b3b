"""A CPU fit's large tensors come from malloc's heap, kept for reuse, not from fresh mappings."""

import platform
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    from nxcodec.host_memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "keep":
        assert keep_freed_memory() and keep_freed_memory()
    a = np.ones(8 << 20)  # 64 MB
    mapped = libc.mallinfo2().hblkhd
    del a
    print(mapped >> 20, libc.mallinfo2().arena >> 20)
""")


def _glibc() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    return tuple(int(v) for v in version.split(".")[:2]) if name == "glibc" else ()


@pytest.mark.skipif(_glibc() < (2, 33),
                    reason="glibc's malloc (mallinfo2: 2.33 and later)")
def test_a_large_block_comes_from_the_heap_and_stays_there_when_freed():
    out = {mode: [int(v) for v in subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True,
                                                   text=True, check=True).stdout.split()]
           for mode in ("default", "keep")}
    mapped, heap = out["default"]
    assert mapped >= 64  # glibc's default: its own mapping, returned when freed
    mapped, heap = out["keep"]
    assert mapped < 64 and heap >= 64  # from the heap, which keeps it for the next tensor
