"""Per-tile masks to whole objects: pieces that continue across a seam are merged, duplicates dropped.

The shape is dask-image's label stitching: every tile's masks become pieces with their own ids;
pieces of neighbouring tiles that cover the same pixels in the tiles' shared window are linked,
and so are pieces that both run out of their tiles towards each other where one lies mostly inside
the other there (one tile sees a part of what the other sees); the connected components of those
links are the objects. An object is the union of its pieces' polygons, each taken whole where the
tile saw it whole and cut to its tile's territory where it did not, so the cut edges of partial
views never reach the output. A tile's territory is its core with each seam moved, line by line
across it, to the place nearest the core edge where the two tiles' views of the object agree: the
outline there is one tile's own, not a straight cut (a neighbour without pieces of the object sees
none of it, and never takes over the tile's core). Where the views agree nowhere on a line, the
core edge cuts it. All geometry is in scene pixel coordinates, where seams fall on integer
coordinates and unions are exact.

A tile inside a lake or a field sees nothing but the object, and the model answers it with the
whole tile, as it answers a tile with the whole image when it finds nothing in it: such whole
pieces take no part in the links above. Each is paired instead, one to one, with a piece of each
neighbour that covers it in their shared window and that no piece of its own tile is linked to (a
tile that sees the object's outline does not lie inside it). A whole piece is inside an object when
it is so covered on every side of its tile, by outlines or by whole pieces that are themselves
inside (so a run of whole tiles counts only where real outlines enclose it, and never ends in a
straight cut); it then joins those pieces' object. The others are the image, not objects.

The work is local: a ``Stitcher`` takes tiles in any order and gives back each object as soon as
every tile that could still add to it has been seen, then forgets its pieces. Only the pieces of
tiles whose neighbourhood is unfinished are held, never the whole scene, and no union spans more
than one object.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import rasterio
import shapely

from geosam.metrics import iou
from geosam.seams import MATCH_IOU, Piece, clip, continuations, matches, raster, whole_links
from geosam.tiling import Box, Tile, TileGrid, TileMarks
from geosam.vectorize import mask_to_geometry

_CLOSED = 2  # Stitcher._seen's mark of a tile in with all its neighbours


@dataclass(frozen=True)
class StitchedObject:
    geometry: shapely.Geometry  # scene pixel coordinates
    score: float
    stability: float
    tiles: int  # how many tiles contributed pieces
    # what it looks like to the model: its pieces' descriptors, weighted by area (None: the model gives none)
    descriptor: np.ndarray | None = field(default=None, compare=False, repr=False)
    source: str = "grid"  # the prompts that found its largest piece (``Piece.source``)


class _Groups:
    """Union-find over piece ids that can forget a finished group (scipy's DisjointSet cannot)."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}
        self._members: dict[int, list[int]] = {}

    def add(self, x: int) -> None:
        self._parent[x] = x
        self._members[x] = [x]

    def find(self, x: int) -> int:
        root = x
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[x] != root:
            self._parent[x], x = root, self._parent[x]
        return root

    def merge(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if len(self._members[a]) < len(self._members[b]):
            a, b = b, a
        self._parent[b] = a
        self._members[a].extend(self._members.pop(b))

    def members(self, x: int) -> list[int]:
        return self._members[self.find(x)]

    def forget(self, x: int) -> list[int]:
        """Remove the whole group of ``x``; return its members."""
        members = self._members.pop(self.find(x))
        for m in members:
            del self._parent[m]
        return members


class Stitcher:
    """Streams tiles in, objects out: an object leaves once all tiles around its pieces are in.

    Pieces of neighbouring tiles that match one-to-one in the tiles' shared window
    (IoU >= ``match_iou``, best pairs first) are one object, and so are unmatched pieces that run out of
    their tiles towards each other with more than ``match_iou`` of the smaller inside the other in that
    window (one-to-one, best first). Pieces that overlap as much but are not matched (the
    model's near-duplicates, in one tile or across a seam) put their objects in one cluster; a cluster
    is finished when all its tiles and their neighbours are in, and within it an object that
    overlaps a better-scored one with IoU above ``match_iou`` is dropped as a duplicate.
    """

    def __init__(self, grid: TileGrid, match_iou: float = MATCH_IOU) -> None:
        self.grid = grid
        self.match_iou = match_iou
        self._pieces: dict[int, Piece] = {}
        self._tile_of: dict[int, tuple[int, int]] = {}
        self._ids: dict[tuple[int, int], list[int]] = {}  # pieces of tiles in, not yet given out
        self._seen = TileMarks(grid)  # 1: the tile is in; 2: it and all its neighbours are
        self._objects = _Groups()  # linked pieces: one object each
        self._clusters = _Groups()  # objects that may duplicate each other
        self._next = 0
        # of each whole piece (see Piece.whole): the pieces that cover it across each side of its tile
        self._cover: dict[int, dict[tuple[int, int], int]] = {}

    @property
    def held(self) -> int:
        """Pieces held now (the stitcher's memory)."""
        return len(self._pieces)

    @property
    def tiles_held(self) -> int:
        """Tiles with pieces not given out yet (a tile's entry goes with its last piece)."""
        return len(self._ids)

    def add(self, tile: Tile, pieces: list[Piece]) -> list[StitchedObject]:
        """Take one tile's pieces (each tile once); return the objects this tile finished."""
        key = (tile.row, tile.col)
        if self._seen[key]:
            raise ValueError(f"tile {key} was added twice")
        self._seen[key] = 1
        ids = list(range(self._next, self._next + len(pieces)))
        self._next += len(pieces)
        if ids:
            self._ids[key] = ids
        for i, piece in zip(ids, pieces, strict=True):
            self._pieces[i] = piece
            self._tile_of[i] = key
            self._objects.add(i)
            self._clusters.add(i)
            if piece.whole:
                self._cover[i] = {}
        for a, b in _same_tile_duplicates(pieces, self.match_iou):
            self._clusters.merge(ids[a], ids[b])
        for other in self.grid.neighbours(tile):
            okey = (other.row, other.col)
            if ids and okey in self._ids:  # both tiles are in and hold pieces
                first, second = sorted([(key, tile), (okey, other)])
                self._link(first[1], second[1])
        with rasterio.Env():  # one GDAL environment for the objects' rasters, not one a call
            return self._finish([key] + [(t.row, t.col) for t in self.grid.neighbours(tile)])

    def _link(self, a: Tile, b: Tile) -> None:
        ia, ib = self._ids[(a.row, a.col)], self._ids[(b.row, b.col)]
        pa, pb = [self._pieces[i] for i in ia], [self._pieces[i] for i in ib]
        matched, overlapping = matches(a, b, pa, pb, self.match_iou)
        linked = matched + continuations(a, b, pa, pb, matched, self.match_iou)
        for i, j in linked:
            self._objects.merge(ia[i], ib[j])
            self._clusters.merge(ia[i], ib[j])
        for i, j in overlapping:
            self._clusters.merge(ia[i], ib[j])
        for i, j in whole_links(a, b, pa, pb, linked):
            self._clusters.merge(ia[i], ib[j])  # neither leaves before the whole one is judged
            for w, other, side in ((ia[i], ib[j], b), (ib[j], ia[i], a)):
                if w in self._cover:
                    self._cover[w][(side.row, side.col)] = other

    def _join_wholes(self, cluster: list[int]) -> set[int]:
        """Join the cluster's whole pieces that lie inside an object to it (see the module's text);
        return the others, the image."""
        wholes = [i for i in cluster if i in self._cover]
        sides = {w: self._sides(w) for w in wholes}
        inside = set(wholes)

        def enclosed(w: int) -> bool:
            cover = self._cover[w]
            return all(
                s in cover and (cover[s] in inside or not self._pieces[cover[s]].whole) for s in sides[w]
            )

        while unsure := [w for w in inside if not enclosed(w)]:
            inside.difference_update(unsure)
        for w in inside:
            for p in self._cover[w].values():
                if p in inside or not self._pieces[p].whole:
                    self._objects.merge(w, p)
        for w in wholes:
            del self._cover[w]
        return set(wholes) - inside

    def _sides(self, w: int) -> list[tuple[int, int]]:
        """The tiles beside (not across a corner from) a whole piece's tile whose windows it reaches into."""
        tile, piece = self.grid.tile(*self._tile_of[w]), self._pieces[w]
        rows, cols = self.grid.shape
        around = (
            (tile.row - 1, tile.col),
            (tile.row + 1, tile.col),
            (tile.row, tile.col - 1),
            (tile.row, tile.col + 1),
        )
        return [
            (r, c) for r, c in around
            if 0 <= r < rows and 0 <= c < cols and _reaches_into(piece, tile, self.grid.tile(r, c))
        ]  # fmt: skip

    def _closed(self, key: tuple[int, int]) -> bool:
        """Whether the tile and all its neighbours are in (once so, always so: remembered)."""
        if self._seen[key] == _CLOSED:
            return True
        tile = self.grid.tile(*key)
        closed = bool(self._seen[key]) and all(self._seen[t.row, t.col] for t in self.grid.neighbours(tile))
        if closed:
            self._seen[key] = _CLOSED
        return closed

    def _finish(self, keys: Iterable[tuple[int, int]]) -> list[StitchedObject]:
        objects: list[StitchedObject] = []
        for key in keys:
            if not self._closed(key):
                continue
            for i in list(self._ids.get(key, ())):
                if i in self._pieces and all(
                    self._closed(self._tile_of[m]) for m in self._clusters.members(i)
                ):
                    objects.extend(self._give_out(self._clusters.forget(i)))
        return objects

    def _give_out(self, cluster: list[int]) -> list[StitchedObject]:
        image = self._join_wholes(cluster)
        roots: dict[int, list[int]] = {}
        for i in cluster:
            roots.setdefault(self._objects.find(i), []).append(i)
        objects = []
        for root, members in roots.items():
            self._objects.forget(root)
            parts = [(self.grid.tile(*self._tile_of[i]), self._pieces[i]) for i in members if i not in image]
            obj = _assemble(parts, self.grid) if parts else None
            if obj is not None:
                objects.append(obj)
        for i in cluster:
            del self._pieces[i]
            key = self._tile_of.pop(i)
            self._ids[key].remove(i)
            if not self._ids[key]:  # its tile is closed (as every member's is): it links no more
                del self._ids[key]
        return drop_duplicates(objects, self.match_iou)

    def close(self) -> None:
        """Check that every tile came in and every object went out."""
        missing = len(self.grid) - self._seen.count()
        if missing or self._pieces:
            raise RuntimeError(
                f"stitching unfinished: {missing} tiles missing, {len(self._pieces)} pieces held"
            )


def stitch(
    grid: TileGrid, pieces: dict[tuple[int, int], list[Piece]], match_iou: float = MATCH_IOU
) -> list[StitchedObject]:
    """All objects of a scene from every tile's pieces, given by (row, col) (a convenience over ``Stitcher``)."""
    stitcher = Stitcher(grid, match_iou)
    objects = [obj for tile in grid for obj in stitcher.add(tile, pieces.get((tile.row, tile.col), []))]
    stitcher.close()
    return drop_duplicates(objects, match_iou)


def _reaches_into(piece: Piece, tile: Tile, other: Tile) -> bool:
    """Whether the piece has pixels in the window its tile shares with ``other``."""
    shared = tile.read.intersection(other.read)
    return shared is not None and bool(shapely.area(clip(piece.full, shared)) > 0)


def _assemble(parts: list[tuple[Tile, Piece]], grid: TileGrid) -> StitchedObject | None:
    views: dict[tuple[int, int], tuple[Tile, list[Piece]]] = {}
    for tile, piece in parts:
        views.setdefault((tile.row, tile.col), (tile, []))[1].append(piece)
    shapes = [p.full for _, p in parts if p.complete]
    for tile, pieces in views.values():
        cut = [p.full for p in pieces if not p.complete]
        if cut:
            x0, y0, x1, y1 = shapely.total_bounds(cut).astype(int).tolist()
            area = Box(x0, y0, x1, y1)  # pixel polygons: bounds on pixel edges
            mask = raster(cut, area) & _territory(tile, views, grid, area)
            shapes.append(mask_to_geometry(mask, (area.x0, area.y0)))
    shapes = [shape for shape in shapes if not shape.is_empty]
    if not shapes:
        return None
    # simplify(0) drops the vertices that seams leave on straight edges, so any tiling gives one outline
    geometry = shapely.simplify(shapely.union_all(shapes), 0, preserve_topology=True)
    scores, stability = [p.score for _, p in parts], [p.stability for _, p in parts]
    areas = shapely.area([p.full for _, p in parts])
    largest = parts[int(np.argmax(areas))][1]
    return StitchedObject(
        geometry,
        max(scores),
        float(np.mean(stability)),
        len(views),
        _descriptor(parts, areas),
        largest.source,
    )


def _descriptor(parts: list[tuple[Tile, Piece]], areas: np.ndarray) -> np.ndarray | None:
    """The area-weighted mean of the pieces' descriptors, at unit length; None where a piece has none."""
    if any(p.descriptor is None for _, p in parts):
        return None
    mean = np.average(
        np.stack([p.descriptor for _, p in parts if p.descriptor is not None]), axis=0, weights=areas
    )
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def _territory(
    tile: Tile, views: dict[tuple[int, int], tuple[Tile, list[Piece]]], grid: TileGrid, area: Box
) -> np.ndarray:
    """Where the tile's partial view of an object stands, as a bool array over ``area`` (in its read
    window).

    Its core, with each seam to a neighbour moved, line by line across it, to where the two tiles'
    views of the object agree (a neighbour without pieces of it sees none of it), so that the cut
    leaves no edge. ``views``: the object's pieces by (row, col) of their tiles.
    """
    owned = np.zeros((area.height, area.width), bool)
    core = area.intersection(tile.core)
    if core is not None:
        owned[core.y0 - area.y0 : core.y1 - area.y0, core.x0 - area.x0 : core.x1 - area.x0] = True
    rows, cols = grid.shape
    mine = views[(tile.row, tile.col)]
    for dr, dc in ((0, -1), (-1, 0), (0, 1), (1, 0)):
        r, c = tile.row + dr, tile.col + dc
        if not (0 <= r < rows and 0 <= c < cols):
            continue
        other = views.get((r, c), (grid.tile(r, c), []))
        found = _agreement(other, mine, dc != 0) if dr < 0 or dc < 0 else _agreement(mine, other, dc != 0)
        if found is None:
            continue
        span, split = found
        if dc != 0:  # a seam down the tile's left or right side: one split column per row
            xs = np.arange(span.x0, span.x1)[None, :]
            ours = xs < split[:, None] if dc > 0 else xs >= split[:, None]
        else:  # a seam along its top or bottom: one split row per column
            ys = np.arange(span.y0, span.y1)[:, None]
            ours = ys < split[None, :] if dr > 0 else ys >= split[None, :]
        _paint(owned, area, span, ours)
    return owned


def _paint(canvas: np.ndarray, area: Box, box: Box, values: np.ndarray) -> None:
    """Write ``values`` (over ``box``) into ``canvas`` (over ``area``) where the two boxes meet."""
    part = area.intersection(box)
    if part is not None:
        canvas[part.y0 - area.y0 : part.y1 - area.y0, part.x0 - area.x0 : part.x1 - area.x0] = values[
            part.y0 - box.y0 : part.y1 - box.y0, part.x0 - box.x0 : part.x1 - box.x0
        ]


def _agreement(
    first: tuple[Tile, list[Piece]], second: tuple[Tile, list[Piece]], across: bool
) -> tuple[Box, np.ndarray] | None:
    """Where the seam between two neighbouring tiles' views of one object is cut, line by line.

    ``first`` is the left (``across``) or upper tile. Along the seam between their cores, each line
    across it is cut at the place in the shared window nearest the core edge where the first
    tile's view on one side of the cut equals the second tile's on the other, so the cut leaves no
    edge; at the core edge where there is no such place. A tile without pieces of the object sees
    none of it. Returns the span of the shared window along the seam's lines and each line's cut
    position (scene pixels); None where no line is free of the windows shared with a third tile
    (the cores' cut stands there, the same for all four).
    """
    (a, pa), (b, pb) = first, second
    w = a.read.intersection(b.read)
    if w is None:
        return None
    if across:  # rows that no tile above or below shares: corners keep the cores' cut
        y0 = a.read.y0 + w.width if a.read.y0 < a.core.y0 else a.core.y0
        y1 = a.read.y1 - w.width if a.core.y1 < a.read.y1 else a.core.y1
        span, edge, start = Box(w.x0, y0, w.x1, y1), a.core.x1, w.x0
    else:
        x0 = a.read.x0 + w.height if a.read.x0 < a.core.x0 else a.core.x0
        x1 = a.read.x1 - w.height if a.core.x1 < a.read.x1 else a.core.x1
        span, edge, start = Box(x0, w.y0, x1, w.y1), a.core.y1, w.y0
    if span.width <= 0 or span.height <= 0:
        return None
    va, vb = raster([p.full for p in pa], span), raster([p.full for p in pb], span)
    if not across:
        va, vb = va.T, vb.T
    # a cut at k (from the window's start) joins the first's pixel k - 1 to the second's pixel k
    agree = np.zeros(va.shape, bool)
    agree[:, 1:] = va[:, :-1] == vb[:, 1:]
    at, width = edge - start, va.shape[1]
    distance = np.where(agree, np.abs(np.arange(width) - at)[None, :], width + 1)
    # a tile without pieces of the object never takes over the other's core: that would delete what
    # the other saw there; the cut only moves out to where the other's view ends
    if not pb:
        distance[:, :at] = width + 1
    if not pa:
        distance[:, at + 1 :] = width + 1
    distance[:, at] = np.where(agree[:, at], 0, width)  # no agreement on a line: the core edge
    return span, start + np.argmin(distance, axis=1)


def _same_tile_duplicates(pieces: list[Piece], max_iou: float) -> list[tuple[int, int]]:
    """Pairs of one tile's pieces that overlap with IoU above ``max_iou``."""
    if len(pieces) < 2:
        return []
    full = np.array([p.full for p in pieces])
    left, right = shapely.STRtree(full).query(full, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    alike = iou(full[left], full[right]) > max_iou
    return list(zip(left[alike].tolist(), right[alike].tolist(), strict=True))


def drop_duplicates(objects: list[StitchedObject], max_iou: float = MATCH_IOU) -> list[StitchedObject]:
    """Keep the better-scored of any two objects that overlap with IoU above ``max_iou``.

    The ``Stitcher`` applies it to the objects it sees overlap while stitching; run once more over a
    scene's finished objects (a spatial index, no union), it also catches objects whose pieces never met.
    """
    if len(objects) < 2:
        return objects
    objects = sorted(objects, key=lambda o: (-o.score, -o.stability, o.geometry.bounds))
    geoms = np.array([o.geometry for o in objects])
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    duplicate = iou(geoms[left], geoms[right]) > max_iou
    dropped = np.zeros(len(objects), bool)
    for i, j in sorted(zip(left[duplicate].tolist(), right[duplicate].tolist(), strict=True)):
        if not dropped[i]:
            dropped[j] = True
    return [o for o, d in zip(objects, dropped, strict=True) if not d]
