"""Files written atomically and durably: a reader sees the whole file or none, never a temporary one,
and a file that has appeared survives a power cut (its data, then the rename, reach the disk first).

``write_bytes`` writes a small file; ``publish`` moves a file written beside its destination into
place. Both fsync the file before the rename and its folder after: without the first a crash can
leave the new name pointing at empty or partial data (ext4, XFS); without the second the rename
itself may be lost. ``benchmarks/workdir.py`` measures what that costs per file. ``faults`` turns a
write that fails for want of space or permission into one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from geosam.errors import OutputError

# errors that mean "this folder cannot be written now": no space, quota, file size limit, permission,
# read-only file system; the run can resume once they are fixed
FAULTS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk full",  # quota
    errno.EFBIG: "file size limit reached",  # ulimit -f (RLIMIT_FSIZE) or the file system's largest file
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}
FIX = {  # what to do about each, before running the same command again
    "disk full": "free space",
    "file size limit reached": "raise the file size limit (ulimit -f)",
    "permission denied": "make it writable",
    "read-only file system": "make it writable",
}


def write_bytes(path: Path, data: bytes) -> None:
    """Write a small file atomically (temporary file beside it, then rename), readable as umask allows."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move ``tmp`` (a finished file in ``path``'s folder) to ``path`` durably: data first, then the name."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems (and Windows) do not fsync folders
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def faults(path: Path, after: str = "", probing: bool = False) -> Iterator[None]:
    """Writes to ``path`` that fail for want of space or permission end in one line (``OutputError``):
    the fault, what to do, and ``after``. With ``probing``, any failure is looked into with ``probe``
    while the failed write's files are still there (GDAL's errors seldom say why)."""
    try:
        yield
    except OutputError:
        raise
    except Exception as exc:
        if not (probing or isinstance(exc, OSError)):
            raise
        fault = write_fault(exc) or (probe(Path(path).parent) if probing else None)
        if fault is None:
            raise
        raise OutputError(
            f"{fault} writing {path}: {FIX[fault]} and run the same command again{after}"
        ) from None


def write_fault(exc: BaseException) -> str | None:
    """What a failed write means to a user: "disk full", "file size limit reached", "permission denied",
    "read-only file system", or None for another error.

    Looks at the errno of ``exc`` and of its causes, and at the words of libraries that report a
    full disk as text (GDAL, SQLite); where they say nothing useful, ``probe`` the folder.
    """
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, "errno", None)
        if code in FAULTS:
            return FAULTS[code]
        text = str(seen).lower()
        if "no space left" in text or "disk is full" in text or "quota exceeded" in text:
            return "disk full"
        if "file too large" in text:
            return "file size limit reached"
        seen = seen.__cause__ or seen.__context__
    return None


def probe(folder: str | Path, size: int = 1 << 20) -> str | None:
    """Write and remove ``size`` bytes in ``folder``: the fault (see ``write_fault``) that stops it, or None.

    For writers whose errors do not say why (GDAL: "failed to commit transaction"); run it before
    removing what the failed write left, so that a full disk is still full.
    """
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".geosam-probe-") as f:
            chunk = bytes(1 << 16)
            for _ in range(0, size, len(chunk)):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return write_fault(exc)
    return None
