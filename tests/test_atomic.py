"""Atomic writes are durable: the data reaches the disk before the rename, the rename before return."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from geosam import atomic


def test_write_bytes_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    calls = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        calls.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        fsync(fd)

    def recording_replace(a, b):
        calls.append("rename")
        replace(a, b)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    atomic.write_bytes(tmp_path / "a.json", b"{}")
    assert calls == ["file", "rename", "folder"]
    calls.clear()
    (tmp_path / ".b.tmp").write_bytes(b"data")
    atomic.publish(tmp_path / ".b.tmp", tmp_path / "b")
    assert calls == ["file", "rename", "folder"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b"]


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk full"),
        (OSError(errno.EFBIG, "File too large"), "file size limit reached"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
        (RuntimeError("sqlite3_exec failed: database or disk is full"), "disk full"),
        (RuntimeError("Failed to commit transaction"), None),
        (OSError(errno.ENOENT, "No such file or directory"), None),
    ],
)
def test_write_faults_are_told_apart(error, fault):
    assert atomic.write_fault(error) == fault
    wrapped = RuntimeError("writing failed")
    wrapped.__cause__ = error
    assert atomic.write_fault(wrapped) == fault


def test_a_probe_of_a_writable_folder_finds_no_fault(tmp_path):
    assert atomic.probe(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
