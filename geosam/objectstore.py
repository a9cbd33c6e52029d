"""A run's finished objects on disk, not in memory: what the stitcher releases goes to a SQLite file.

Each object is classified as it comes (so no descriptor is kept), its bounds go to an R*Tree, and the
scene-wide steps run out of core once every tile is in: duplicates that stitching never saw meet
(``geosam.stitch.drop_duplicates``'s rule, over the tree, in rank order a chunk at a time) and the
scene's ground (``ObjectStore.finish``). The objects left are read back a chunk at a time; the
output's rows made of them are staged in the same file (``stage``) and read back sorted, a batch at a
time (``ordered``). The file is scratch: a resumed run stitches its tiles again and starts a new one.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely

from geosam import atomic
from geosam.classes import ClassModel
from geosam.errors import InputError
from geosam.metrics import iou
from geosam.output import RAW_GEOMETRY
from geosam.seams import MATCH_IOU
from geosam.settings import CLASSES
from geosam.stitch import StitchedObject
from geosam.tiling import Box

if TYPE_CHECKING:
    import geopandas as gpd

GROUND_SHARE = 0.5  # an object over more of the scene's data than this, and spanning it, is its ground
GROUND_SPAN = 0.9  # the share of the data's width and height that the ground's bounds span
CHUNK = 20_000  # objects read, ranked or de-duplicated at a time: a few tens of MB
KEPT, DUPLICATE, GROUND = 0, 1, 2  # an object's state
_ROWS = "rows"  # the output's rows, staged
# their bounds: the order of equal areas, whatever order tiles finished in
_KEY = ("_x0", "_y0", "_x1", "_y1")
_IDS_PER_QUERY = 500  # SQLite takes at most 999 parameters before 3.32

_TABLES = """
CREATE TABLE objects (
    id INTEGER PRIMARY KEY, score REAL, stability REAL, tiles INTEGER, source TEXT, class TEXT,
    class_score REAL, x0 REAL, y0 REAL, x1 REAL, y1 REAL, area REAL, geometry BLOB,
    state INTEGER NOT NULL DEFAULT 0);
CREATE VIRTUAL TABLE bounds USING rtree(id, x0, x1, y0, y1);
CREATE TABLE ranked (rank INTEGER PRIMARY KEY, id INTEGER NOT NULL UNIQUE);
"""


class ObjectStore:
    """The objects of one run, in the SQLite file ``path`` (replaced), classified by ``classes`` (at
    ``min_class_score``, a pixel being ``pixel_area`` m²: ``class_columns``); a write that fails for want
    of space or permission raises ``OutputError``, its message ending in ``after``."""

    def __init__(
        self,
        path: Path,
        classes: ClassModel | None = None,
        after: str = "",
        min_class_score: float = CLASSES.min_class_score,
        pixel_area: float | None = None,
    ) -> None:
        self.path, self.classes, self.count, self.staged, self._after = path, classes, 0, 0, after
        self.min_class_score, self.pixel_area = min_class_score, pixel_area
        self._db: sqlite3.Connection | None = None  # made with the first object
        self._template: gpd.GeoDataFrame | None = None  # the staged rows' columns and types

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            with self._faults():
                self.path.unlink(missing_ok=True)
                self._db = sqlite3.connect(self.path)
                # scratch, rebuilt by a resumed run: no journal, no waiting for the disk
                self._db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + _TABLES)
        return self._db

    def _faults(self) -> contextlib.AbstractContextManager[None]:
        """A full disk or a lost permission ends the run in one line that ends with ``after``."""
        return atomic.faults(self.path, self._after, probing=True)

    def add(self, objects: list[StitchedObject]) -> None:
        """Objects the stitcher released, in one transaction."""
        if not objects:
            return
        geometry = np.array([o.geometry for o in objects], dtype=object)
        bounds, area, wkb = shapely.bounds(geometry), shapely.area(geometry), shapely.to_wkb(geometry)
        m2 = None if self.pixel_area is None else area * self.pixel_area
        classified = class_columns(objects, self.classes, self.min_class_score, m2)
        names = classified.get("class", [None] * len(objects))
        scores = classified.get("class_score", [None] * len(objects))
        ids = range(self.count + 1, self.count + len(objects) + 1)
        rows = [
            (i, o.score, o.stability, o.tiles, o.source, None if n is None else str(n),
             None if s is None else float(s), *b.tolist(), float(a), w)
            for i, o, n, s, b, a, w in zip(ids, objects, names, scores, bounds, area, wkb, strict=True)
        ]  # fmt: skip
        db = self._open()
        with self._faults(), db:
            db.executemany("INSERT INTO objects VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,0)", rows)
            db.executemany(
                "INSERT INTO bounds VALUES (?,?,?,?,?)", [(r[0], r[7], r[9], r[8], r[10]) for r in rows]
            )
        self.count += len(objects)

    def finish(self, data_pixels: int, extent: Box | None, keep_background: bool) -> tuple[int, int]:
        """Drop duplicates, then (unless ``keep_background``) the scene's ground; how many objects are
        left, and how many were ground.

        SAM segments the ground between objects too, as a region that stitching joins across the
        tiles: an object covering more than ``GROUND_SHARE`` of the scene's data (``data_pixels``, scene
        pixels) and reaching across it both ways (its bounds span ``GROUND_SPAN`` of the ``extent`` of
        the data, the bounds of the valid pixels in the tiles' cores, in width and in height) is that
        ground, not an object in it.
        """
        if self._db is None:
            return 0, 0
        with self._faults(), self._db:
            self._drop_duplicates(self._db, MATCH_IOU)
            ground = (
                0 if keep_background or extent is None else self._drop_ground(self._db, data_pixels, extent)
            )
            # their pages go to the output's rows (``stage``)
            self._db.executescript(
                f"DELETE FROM objects WHERE state != {KEPT}; DROP TABLE ranked; DROP TABLE bounds;"
            )
        (left,) = self._db.execute("SELECT count(*) FROM objects WHERE state = ?", (KEPT,)).fetchone()
        return int(left), ground

    def _drop_duplicates(self, db: sqlite3.Connection, max_iou: float) -> None:
        """``drop_duplicates``: in rank order (score, stability, bounds), an object whose IoU with a kept
        better-ranked one is above ``max_iou`` is dropped; the pairs come from the tree, chunk by chunk."""
        db.execute(
            "INSERT INTO ranked (id) SELECT id FROM objects "
            "ORDER BY score DESC, stability DESC, x0, y0, x1, y1, id"
        )
        for first in range(1, self.count + 1, CHUNK):
            # IoU is at most the smaller area over the larger: only pairs of like areas can be duplicates
            pairs = db.execute(
                # CROSS JOIN: SQLite's order, so that the tree is searched around each object of the chunk
                "SELECT c.rank, r.rank, a.id, b.id FROM ranked c CROSS JOIN objects a CROSS JOIN bounds t "
                "CROSS JOIN ranked r CROSS JOIN objects b WHERE c.rank >= ? AND c.rank < ? AND a.id = c.id "
                "AND t.x0 <= a.x1 AND t.x1 >= a.x0 AND t.y0 <= a.y1 AND t.y1 >= a.y0 AND r.id = t.id "
                "AND r.rank < c.rank AND b.id = t.id AND b.state = ? "
                "AND min(a.area, b.area) > ? * max(a.area, b.area) ORDER BY c.rank, r.rank",
                (first, first + CHUNK, KEPT, max_iou),
            ).fetchall()
            if not pairs:
                continue
            rank, other, left, right = (np.array(column) for column in zip(*pairs, strict=True))
            ids = np.union1d(left, right)
            shapes = _geometries(db, ids)
            duplicate = iou(shapes[np.searchsorted(ids, left)], shapes[np.searchsorted(ids, right)]) > max_iou
            dropped: set[int] = set()  # ranks of this chunk dropped so far
            out = []
            for r, o, i, d in zip(rank.tolist(), other.tolist(), left.tolist(), duplicate, strict=True):
                if d and r not in dropped and o not in dropped:  # o: kept (earlier chunks) or not yet dropped
                    dropped.add(r)
                    out.append((DUPLICATE, i))
            db.executemany("UPDATE objects SET state = ? WHERE id = ?", out)

    @staticmethod
    def _drop_ground(db: sqlite3.Connection, data_pixels: int, extent: Box) -> int:
        return db.execute(
            "UPDATE objects SET state = ? WHERE state = ? AND area > ? AND x1 - x0 >= ? AND y1 - y0 >= ?",
            (GROUND, KEPT, GROUND_SHARE * data_pixels, GROUND_SPAN * extent.width,
             GROUND_SPAN * extent.height),
        ).rowcount  # fmt: skip

    def chunks(self, size: int = CHUNK) -> Iterator[tuple[list[StitchedObject], dict[str, np.ndarray]]]:
        """The objects kept, ``size`` at a time in the order they came, with their class columns (see
        ``class_columns``); once: each chunk leaves the file as it is read."""
        last = 0
        while self._db is not None:
            rows = self._db.execute(
                "SELECT id, geometry, score, stability, tiles, source, class, class_score FROM objects "
                "WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
                (KEPT, last, size),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            with self._db:  # read once: their pages go to the output's rows
                self._db.execute("DELETE FROM objects WHERE id <= ?", (last,))
            _, wkb, score, stability, tiles, source, names, scores = zip(*rows, strict=True)
            objects = [
                StitchedObject(g, s, st, t, source=src)
                for g, s, st, t, src in zip(shapely.from_wkb(wkb), score, stability, tiles, source, strict=True)
            ]  # fmt: skip
            columns = (
                {}
                if self.classes is None
                else {
                    "class": np.array(names, str),
                    "class_score": np.array(scores, np.float64),
                    "source": np.array(source, str),
                }
            )
            yield objects, columns

    def stage(self, frame: gpd.GeoDataFrame) -> None:
        """Rows of the output in any order (``ordered`` sorts them): outlines as WKB, with their sort key."""
        import pandas as pd  # here: workers import this module's neighbours and never need it

        if self._template is None:
            self._template = frame.iloc[:0]
        rows = pd.DataFrame({
            c: shapely.to_wkb(frame[c].to_numpy()) if c in _geometry_columns(frame) else frame[c].to_numpy()
            for c in frame.columns
        })  # fmt: skip
        rows[list(_KEY)] = shapely.bounds(frame.geometry.to_numpy())
        db = self._open()
        with self._faults(), db:
            rows.to_sql(_ROWS, db, if_exists="append", index=False)
        self.staged += len(frame)

    def ordered(self, size: int = CHUNK) -> Iterator[gpd.GeoDataFrame]:
        """The staged rows largest first (equal areas by their bounds, then outline, so ids do not depend on
        the order tiles finished), with ids from 1, ``size`` at a time; one empty frame when there are none."""
        import geopandas as gpd
        import pandas as pd

        template = self._template
        if template is None:
            raise RuntimeError("nothing was staged")
        geometry = _geometry_columns(template)
        columns = ", ".join(f'"{c}"' for c in template.columns)
        order = ", ".join(['"area_m2" DESC', *(f'"{c}"' for c in (*_KEY, template.geometry.name))])
        query = f"SELECT {columns} FROM {_ROWS} ORDER BY {order}"
        first = 1
        for rows in pd.read_sql_query(query, self._open(), chunksize=size) if self.staged else ():
            frame = gpd.GeoDataFrame(
                {c: shapely.from_wkb(rows[c].to_numpy()) if c in geometry
                 else rows[c].astype(template[c].dtype) for c in template.columns},
                geometry=template.geometry.name, crs=template.crs,
            )  # fmt: skip
            frame.insert(0, "id", np.arange(first, first + len(frame), dtype=np.int64))
            first += len(frame)
            yield frame
        if first == 1:
            empty = template.copy()
            empty.insert(0, "id", np.zeros(0, np.int64))
            yield empty

    def counts(self, column: str) -> dict[str, int]:
        """How many staged rows have each value of ``column``."""
        query = f'SELECT "{column}", count(*) FROM {_ROWS} GROUP BY "{column}"'
        return {str(k): int(n) for k, n in self._open().execute(query)} if self.staged else {}

    def scores(self, at_least: float | None = None) -> tuple[int, np.ndarray]:
        """How many staged rows score at least ``at_least`` (all: None), and their lowest and highest
        score (empty when none): the range the output's style is drawn from (``geosam.style.classes``)."""
        if not self.staged:
            return 0, np.zeros(0)
        where = "" if at_least is None else " WHERE score >= ?"
        query = f"SELECT count(*), min(score), max(score) FROM {_ROWS}{where}"
        count, low, high = self._open().execute(query, () if at_least is None else (at_least,)).fetchone()
        return int(count), np.array([low, high] if count else [], np.float64)

    def close(self) -> None:
        """Close and delete the file."""
        if self._db is not None:
            self._db.close()
        self.path.unlink(missing_ok=True)


def _geometry_columns(frame: gpd.GeoDataFrame) -> list[str]:
    """The frame's outline columns: its geometry and the pixel outlines (``RAW_GEOMETRY``) if any."""
    return [frame.geometry.name, *([RAW_GEOMETRY] if RAW_GEOMETRY in frame.columns else [])]


def _geometries(db: sqlite3.Connection, ids: np.ndarray) -> np.ndarray:
    """The outlines of objects ``ids`` (sorted), in that order."""
    wkb: list[bytes] = []
    for first in range(0, len(ids), _IDS_PER_QUERY):
        some = ids[first : first + _IDS_PER_QUERY].tolist()
        query = f"SELECT geometry FROM objects WHERE id IN ({','.join('?' * len(some))}) ORDER BY id"
        wkb += [row[0] for row in db.execute(query, some)]
    return shapely.from_wkb(wkb)


def class_columns(
    objects: list[StitchedObject],
    classes: ClassModel | None,
    min_score: float = CLASSES.min_class_score,
    areas: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``class``, ``class_score`` (``ClassModel.predict``'s, with the objects' ``areas`` in m² where they
    are known) and ``source`` of each object (none without a class model)."""
    if classes is None:
        return {}
    if any(o.descriptor is None for o in objects):
        raise InputError("the model gives no descriptors of its objects: classes need a SAM model")
    described = [o.descriptor for o in objects if o.descriptor is not None]
    names, scores = classes.predict(np.stack(described) if described else np.zeros((0, 1)), min_score, areas)
    return {
        "class": names.astype(str) if len(names) else np.array([], str),
        "class_score": scores.astype(np.float64),
        "source": np.array([o.source for o in objects], str),
    }
