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
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

from geosam.atomic import write_bytes
from geosam.errors import OutputError
from geosam.fingerprint import TILE_FORMAT
from geosam.tiling import Tile, TileGrid

log = logging.getLogger(__name__)

MARKER = "geosam-work.json"  # names a folder as geosam's, so that only geosam's folders are ever cleaned


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
        self.check()
        self.tiles_dir.mkdir(parents=True, exist_ok=True)
        marker = self.folder / MARKER
        if not marker.exists():
            write_bytes(marker, json.dumps({"format": TILE_FORMAT}).encode())
        for other in self.folder.iterdir():
            if other.is_dir() and other.name != self.key:
                log.info("work folder: removing stale results %s (other scene, model or settings)", other)
                shutil.rmtree(other, ignore_errors=True)
        self._ready = True

    def check(self) -> None:
        """Refuse a folder that exists and is not a geosam work folder (it would be cleaned)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder}: work folder path is a file; choose another --work-dir")
        if self.folder.is_dir() and any(self.folder.iterdir()) and not (self.folder / MARKER).exists():
            raise OutputError(
                f"{self.folder}: not a geosam work folder (no {MARKER}) and not empty; "
                "choose another --work-dir"
            )

    def _path(self, row: int, col: int, round: int = 0, asked: str = "") -> Path:
        return self.tiles_dir / (f"{row}_{col}.tile" if round == 0 else f"{row}_{col}.r{round}-{asked}.tile")

    def finished(self) -> set[tuple[int, int]]:
        """(row, col) of every tile stored under this run's key (its automatic mode's pieces)."""
        self.check()
        if not self.tiles_dir.is_dir():
            return set()
        done = set()
        for entry in os.scandir(self.tiles_dir):
            stem, _, ext = entry.name.partition(".")
            if ext != "tile":
                continue  # answers to prompts, or temporary files of a write that was interrupted
            row, _, col = stem.partition("_")
            if row.isdigit() and col.isdigit():
                done.add((int(row), int(col)))
        return done

    def store(
        self, tile: Tile, pieces: list, segmented: bool, round: int = 0, asked: str = "", data_pixels: int = 0
    ) -> None:
        """Keep one finished tile (with its core's valid pixels), or its answers to round ``round``'s
        prompts (``asked``: their digest, see geosam.reprompt), atomically: a reader sees the whole
        file or none."""
        self._prepare()
        blob = pickle.dumps(
            (TILE_FORMAT, self.key, tile.row, tile.col, pieces, segmented, data_pixels),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        write_bytes(self._path(tile.row, tile.col, round, asked), blob)

    def load(self, tile: Tile, round: int = 0, asked: str = "") -> tuple[list, bool, int] | None:
        """A stored tile's (pieces, segmented, data_pixels), or its answers to the prompts ``asked`` of
        a round; None when missing or not this key's."""
        path = self._path(tile.row, tile.col, round, asked)
        try:
            with open(path, "rb") as f:
                fmt, key, row, col, pieces, segmented, data = pickle.load(f)  # our own files only (see check)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a damaged file is a tile to segment again
            log.warning("work folder: dropping unreadable %s (%s)", path, exc)
            path.unlink(missing_ok=True)
            return None
        if (fmt, key, row, col) != (TILE_FORMAT, self.key, tile.row, tile.col):
            path.unlink(missing_ok=True)
            return None
        return pieces, segmented, data

    def remove(self) -> None:
        """Delete the whole work folder (after the output is safely written)."""
        if (self.folder / MARKER).exists() or not self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)

    def remove_if_empty(self) -> None:
        """Delete the folder when it holds no finished tile (nothing to resume from)."""
        if self.folder.is_dir() and not self.finished():
            self.remove()


def iter_finished(
    work: WorkDir, grid: TileGrid, done: set[tuple[int, int]]
) -> Iterator[tuple[Tile, list, bool, int]]:
    """Stored tiles in grid order (the stitcher's cheapest order)."""
    for row, col in sorted(done):
        tile = grid.tile(row, col)
        stored = work.load(tile)
        if stored is not None:
            yield tile, *stored
