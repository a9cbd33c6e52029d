"""glibc's heap: giving freed memory back to the OS, and keeping large one-off arrays out of it."""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def give_back() -> None:
    """Return the heap's free pages to the OS (glibc's ``malloc_trim``; nothing where libc is another).

    glibc keeps freed memory for reuse, so after a burst of large allocations (GDAL's block cache, a
    tile's arrays) the process stays as big as at the burst's peak; this makes it what it holds.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@contextmanager
def mapped_above(size: int) -> Iterator[None]:
    """Inside, arrays of ``size`` bytes or more are mapped afresh and unmapped whole when freed.

    For a burst of large one-off arrays, such as an image encoder's activations: taken from the heap,
    their freed chunks stay resident and, split by the small allocations that follow, no longer fit
    the next burst, so the heap outgrows what is in use. Acts only where the environment fixes glibc's
    mmap threshold (``MALLOC_MMAP_THRESHOLD_``: geosam's local workers, ``geosam.cluster.MALLOC``),
    and sets it back to that after; elsewhere glibc adapts the threshold itself, which a change would stop.
    """
    fixed = os.environ.get("MALLOC_MMAP_THRESHOLD_", "")
    libc = _glibc()
    if libc is None or not fixed.isdigit() or size >= int(fixed):
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, size)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, int(fixed))
