"""geosam.heap: large one-off arrays kept out of glibc's heap where the environment fixes its threshold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Counts glibc's mapped chunks (mallinfo2's hblks) around 16 MB arrays made inside and after mapped_above.
CODE = """
import ctypes
import numpy as np
from geosam import heap

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def mapped(make):
    before = libc.mallinfo2().hblks
    array = make()
    return libc.mallinfo2().hblks - before

with heap.mapped_above(8 * 2**20):
    inside = mapped(lambda: np.ones(2 * 2**20))
after = mapped(lambda: np.ones(2 * 2**20))
print(inside, after)
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        import ctypes

        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc 2.33 or later")
def test_arrays_over_the_size_are_mapped_inside_and_the_workers_threshold_holds_after():
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "0"]  # a 16 MB array: mapped inside; from the heap after (32 MB)
