"""Giving a process's freed memory back to the operating system."""

from __future__ import annotations

import ctypes


def give_back() -> None:
    """Return the heap's free pages to the OS (glibc's ``malloc_trim``; nothing where libc is another).

    glibc keeps freed memory for reuse, so after a burst of large allocations (GDAL's block cache, a
    tile's arrays) the process stays as big as at the burst's peak; this makes it what it holds.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
