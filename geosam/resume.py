"""The work folder of a resumable run: one small file per finished tile, under the run's key.

A run's key (``geosam.fingerprint.run_key``) is a hash of everything a tile's result depends on: the
scene's identity (path, size, modification time, a hash of its first 64 KiB; for remote scenes the
path and the planned grid), the read plan (bands, stretch, resampling), the tiling, the model (name,
checkpoint sha256, all its settings) and geosam's version. Finished tiles live in ``FOLDER/<key>/``, one file each,
written to a temporary name and renamed into place, so a run killed at any instant (SIGKILL
included) leaves only whole files. A second run with the same key segments only the tiles that
have no file; a run with another key never reads them (it removes them, as stale).

Only what decides the output's objects goes into the key: ``min_area`` and ``simplify`` act after
stitching, so changing them reuses every tile.

A tile file is data, never code (``geosam.tilefile``: JSON, WKB and raw numpy arrays; no pickle), so
a file planted in a shared work folder cannot run anything: one that is not a tile file of this key
and tile is dropped and its tile segmented again. Tile files are fsynced before the rename that
publishes them (``geosam.atomic``). A run holds a lock on its folder (``lock``): a second run on the
same folder is refused in one line naming the first; the kernel drops the lock of a run that dies,
so a killed run never leaves a stale one. A write that fails for want of space or permission stops
the run in one line (``OutputError``) and keeps every finished tile for the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from geosam.atomic import faults, write_bytes
from geosam.errors import OutputError
from geosam.fingerprint import TILE_FORMAT
from geosam.models.base import Funnel
from geosam.seams import Piece
from geosam.tilefile import TileFileError, dumps, loads
from geosam.tiling import Box, Tile, TileGrid, TileMarks

log = logging.getLogger(__name__)

MARKER = "geosam-work.json"  # names a folder as geosam's, so that only geosam's folders are ever cleaned
LOCK = "geosam-work.lock"  # held (flock) by the run using the folder; names its pid and host
_held: dict[str, list[int]] = {}  # locks this process holds: folder -> [file descriptor, depth]


def default_work_dir(output: Path) -> Path:
    """``OUT.geosam-work`` beside the output ``OUT.gpkg``."""
    return output.with_name(f"{output.stem}.geosam-work")


class WorkDir:
    """Finished tiles of one run key in a work folder: list them, store one, load one."""

    def __init__(self, folder: str | Path, key: str) -> None:
        self.folder = Path(folder)
        self.key = key
        self.tiles_dir = self.folder / key
        self._ready = False

    def _prepare(self) -> None:
        """Create the folder (on first store), mark it as geosam's and drop other keys' tiles."""
        if self._ready:
            return
        self._mark()
        with self.writing(self.tiles_dir):
            self.tiles_dir.mkdir(parents=True, exist_ok=True)
        for other in self.folder.iterdir():
            if other.is_dir() and other.name != self.key:
                log.info("work folder: removing stale results %s (other scene, model or settings)", other)
                shutil.rmtree(other, ignore_errors=True)
        self._ready = True

    def _mark(self) -> None:
        """Create the folder and name it geosam's (after ``check``)."""
        self.check()
        marker = self.folder / MARKER
        with self.writing(marker):
            self.folder.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                write_bytes(marker, json.dumps({"format": TILE_FORMAT}).encode())

    def scratch(self) -> Path:
        """The folder, created and marked as geosam's, for a run's scratch files (``geosam.objectstore``)."""
        self._mark()
        return self.folder

    def check(self) -> None:
        """Refuse a folder that exists and is not a geosam work folder (it would be cleaned)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder}: work folder path is a file; choose another --work-dir")
        if self.folder.is_dir() and any(self.folder.iterdir()) and not (self.folder / MARKER).exists():
            raise OutputError(
                f"{self.folder}: not a geosam work folder (no {MARKER}) and not empty; "
                "choose another --work-dir"
            )

    def writing(self, path: Path) -> contextlib.AbstractContextManager[None]:
        """Writes to ``path`` that fail for want of space or permission end the run in one line."""
        return faults(path, f"; finished tiles are kept in {self.folder}")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for this run: refuse (``OutputError``) while another process holds it.

        Creates the folder; re-entrant within a process. On leaving, a folder that holds no tile is
        removed (a run that failed before its first tile leaves nothing behind).
        """
        self._mark()
        name = str(self.folder.resolve())
        if name in _held:
            _held[name][1] += 1
        else:
            _held[name] = [self._take_lock(), 1]
        try:
            yield
        finally:
            _held[name][1] -= 1
            if not _held[name][1]:
                fd = _held.pop(name)[0]
                if not self._holds_tiles():
                    self.remove()
                if fd >= 0:
                    os.close(fd)  # releases the lock

    def _take_lock(self) -> int:
        path = self.folder / LOCK
        with self.writing(path):
            return _take_lock(
                path, f"{self.folder} is in use by another geosam run ({{holder}}); wait for it to end, "
                "or give this run another output or --work-dir",
            )  # fmt: skip

    def _holds_tiles(self) -> bool:
        """Whether the folder keeps any tile file (of any key; of any date's folder in a change run's)."""
        if not self.folder.is_dir():
            return False
        return any(p.is_dir() and any(p.rglob("*.tile")) for p in self.folder.iterdir())

    def _path(self, row: int, col: int, round: int = 0, asked: str = "") -> Path:
        return self.tiles_dir / (f"{row}_{col}.tile" if round == 0 else f"{row}_{col}.r{round}-{asked}.tile")

    def finished(self, grid: TileGrid) -> TileMarks:
        """Every tile of ``grid`` stored under this run's key (its automatic mode's pieces), marked 1."""
        done = TileMarks(grid)
        rows, cols = grid.shape
        for row, col in self._stored():
            if row < rows and col < cols:
                done[row, col] = 1
        return done

    def holds_tiles(self) -> bool:
        """Whether any finished tile is stored under this run's key."""
        return next(self._stored(), None) is not None

    def _stored(self) -> Iterator[tuple[int, int]]:
        """(row, col) of each stored tile, in no order."""
        self.check()
        if not self.tiles_dir.is_dir():
            return
        for entry in os.scandir(self.tiles_dir):
            stem, _, ext = entry.name.partition(".")
            if ext != "tile":
                continue  # answers to prompts, or temporary files of a write that was interrupted
            row, _, col = stem.partition("_")
            if row.isdigit() and col.isdigit():
                yield int(row), int(col)

    def store(
        self, tile: Tile, pieces: list[Piece], segmented: bool, round: int = 0, asked: str = "",
        data_pixels: int = 0, funnel: Funnel | None = None, data_box: Box | None = None,
    ) -> None:  # fmt: skip
        """Keep one finished tile (with its core's valid pixels, their bounds and its automatic mode's ``funnel``), or
        its answers to round ``round``'s prompts (``asked``: their digest, see geosam.reprompt),
        atomically: a reader sees the whole file or none."""
        self._prepare()
        meta = {
            "key": self.key, "row": tile.row, "col": tile.col, "round": round, "asked": asked,
            "segmented": segmented, "data_pixels": data_pixels,
            "data_box": None if data_box is None else [data_box.x0, data_box.y0, data_box.x1, data_box.y1],
            "funnel": dataclasses.asdict(funnel) if funnel is not None else None,
        }  # fmt: skip
        path = self._path(tile.row, tile.col, round, asked)
        with self.writing(path):
            write_bytes(path, dumps(meta, pieces, Piece))

    def load(self, tile: Tile, round: int = 0, asked: str = "") -> tuple[list[Piece], bool, int] | None:
        """A stored tile's (pieces, segmented, data_pixels), or its answers to the prompts ``asked`` of
        a round; None when missing, not this key's or not a tile file (then it is removed)."""
        found = self.load_all(tile, round, asked)
        return None if found is None else found[:3]

    def load_all(
        self, tile: Tile, round: int = 0, asked: str = ""
    ) -> tuple[list[Piece], bool, int, Funnel | None, Box | None] | None:
        """``load`` with the tile's funnel (None where it was not counted) and the bounds of its data
        (None where it has none, or in a file from before they were kept)."""
        path = self._path(tile.row, tile.col, round, asked)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            meta, pieces = loads(data, Piece)
            expected = {"key": self.key, "row": tile.row, "col": tile.col, "round": round, "asked": asked}
            if any(meta.get(k) != v for k, v in expected.items()):
                raise TileFileError("another run's or another tile's file")
            counts = meta.get("funnel")
            if counts is not None and not all(type(n) is int for n in counts.values()):
                raise TileFileError("bad counts")
            funnel = Funnel(**counts) if counts is not None else None
            segmented, data_pixels = meta["segmented"], meta["data_pixels"]
            if type(segmented) is not bool or type(data_pixels) is not int:
                raise TileFileError("bad tile values")
            box = meta.get("data_box")
            if box is not None and (
                type(box) is not list or len(box) != 4 or any(type(v) is not int for v in box)
            ):
                raise TileFileError("bad data bounds")
        except (
            TileFileError,
            KeyError,
            TypeError,
            AttributeError,
        ) as exc:  # data, never code: drop it, segment again
            log.warning("work folder: dropping %s, not a tile file of this run (%s)", path, exc)
            path.unlink(missing_ok=True)
            return None
        return pieces, segmented, data_pixels, funnel, None if box is None else Box(*box)

    def remove(self) -> None:
        """Delete the whole work folder (after the output is safely written)."""
        if (self.folder / MARKER).exists() or not self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)

    def remove_if_empty(self) -> None:
        """Delete the folder when it holds no finished tile (nothing to resume from)."""
        if self.folder.is_dir() and not self.holds_tiles():
            self.remove()


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold ``output`` for this run: refuse (``OutputError``) while another run is writing it, whatever
    its work folder. The lock file (``.OUT.lock`` beside it) goes when the run ends; one left by a
    killed run is taken over."""
    path = output.with_name(f".{output.name}.lock")
    with faults(path):
        fd = _take_lock(
            path, f"{output} is being written by another geosam run ({{holder}}); wait for it to end, "
            "or choose another output",
        )  # fmt: skip
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes: a run waiting on this file then takes a new one
        os.close(fd)


def _take_lock(path: Path, busy: str) -> int:
    """Lock ``path`` (created if missing) for this process; its descriptor, to close when done.

    ``busy``: the message when another process holds it, with ``{holder}`` for its pid and host.
    The lock is ``flock``'s: the kernel drops it when its process dies, so none is ever stale.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputError(busy.format(holder=holder)) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                os.close(fd)
                raise
            log.warning("%s cannot be locked (%s): concurrent runs are not refused", path, exc)
            return fd
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed (its run ended) between open and lock: take the new one
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(mine).encode(), 0)
    return fd


def _read_holder(fd: int) -> str:
    """Who holds a lock file, in words (what its holder wrote into it)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(holder['pid'])} on {str(holder['host'])[:64]}, since {str(holder['since'])[:32]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def iter_finished(
    work: WorkDir, grid: TileGrid, done: TileMarks
) -> Iterator[tuple[Tile, list[Piece], bool, int, Funnel | None, Box | None]]:
    """Stored tiles in grid order (the stitcher's cheapest order), with their funnels and data bounds."""
    for row, col in done.marked():
        tile = grid.tile(row, col)
        stored = work.load_all(tile)
        if stored is not None:
            yield tile, *stored
