"""Per-tile masks to whole objects: pieces that continue across a seam are merged, duplicates dropped.

The shape is dask-image's label stitching: every tile's masks become pieces with their own ids;
pieces of neighbouring tiles that cover the same pixels in the tiles' shared window are linked;
the connected components of those links are the objects. An object is the union of its pieces'
polygons, each taken whole where the tile saw it whole and cut to the tile's core where it did not,
so the cut edges of partial views never reach the output. All geometry is in scene pixel
coordinates, where seams fall on integer coordinates and unions are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy.cluster.hierarchy import DisjointSet

from geosam.models.base import Masks
from geosam.tiling import Tile, TileGrid
from geosam.vectorize import clip_to_box, mask_to_geometry


@dataclass(frozen=True)
class Piece:
    """One mask of one tile, in scene pixel coordinates."""

    full: shapely.Geometry  # the whole mask
    core: shapely.Geometry | None  # the mask inside the tile's core; None when ``complete``
    complete: bool  # the mask touches no internal edge of the tile's read window
    score: float
    stability: float


@dataclass(frozen=True)
class StitchedObject:
    geometry: shapely.Geometry  # scene pixel coordinates
    score: float
    stability: float
    tiles: int  # how many tiles contributed pieces


def pieces_from_masks(tile: Tile, masks: Masks, grid: TileGrid) -> list[Piece]:
    """Vectorize a tile's masks (padded to the tile size) into pieces."""
    origin = (tile.read.x0, tile.read.y0)
    h, w = tile.read.height, tile.read.width
    cut = (tile.read.y0 > 0, tile.read.y1 < grid.height, tile.read.x0 > 0, tile.read.x1 < grid.width)
    pieces = []
    for mask, score, stability in zip(masks.masks, masks.scores, masks.stability):
        mask = mask[:h, :w]
        edges = (mask[0].any(), mask[-1].any(), mask[:, 0].any(), mask[:, -1].any())
        complete = not any(c and e for c, e in zip(cut, edges))
        full = mask_to_geometry(mask, origin)
        if full.is_empty:
            continue
        core = None if complete else mask_to_geometry(*clip_to_box(mask, origin, tile.core))
        pieces.append(Piece(full, core, complete, float(score), float(stability)))
    return pieces


def stitch(
    grid: TileGrid, pieces: dict[tuple[int, int], list[Piece]], match_iou: float = 0.5
) -> list[StitchedObject]:
    """Merge pieces across seams into objects, then drop objects that duplicate a better one."""
    ids: dict[tuple[int, int], np.ndarray] = {}
    flat: list[Piece] = []
    owner: list[tuple[int, int]] = []
    for key in sorted(pieces):
        ids[key] = np.arange(len(flat), len(flat) + len(pieces[key]))
        flat.extend(pieces[key])
        owner.extend([key] * len(pieces[key]))
    links = DisjointSet(range(len(flat)))
    for key in sorted(pieces):
        tile = grid.tile(*key)
        for other in grid.neighbours(tile):
            if pieces.get((other.row, other.col)):
                for a, b in _matches(tile, other, pieces[key], pieces[(other.row, other.col)], match_iou):
                    links.merge(ids[key][a], ids[(other.row, other.col)][b])
    objects = []
    for members in links.subsets():
        parts = [flat[i] for i in members]
        shapes = [p.full if p.complete else p.core for p in parts]
        geometry = shapely.union_all([s for s in shapes if s is not None and not s.is_empty])
        if geometry.is_empty:
            continue
        objects.append(
            StitchedObject(
                geometry,
                max(p.score for p in parts),
                float(np.mean([p.stability for p in parts])),
                len({owner[i] for i in members}),
            )
        )
    return _drop_duplicates(objects, match_iou)


def _matches(a: Tile, b: Tile, pa: list[Piece], pb: list[Piece], min_iou: float) -> list[tuple[int, int]]:
    """Pairs of pieces of two neighbouring tiles that are mutual best matches in their shared window."""
    shared = a.read.intersection(b.read)
    if shared is None:
        return []
    window = shapely.box(shared.x0, shared.y0, shared.x1, shared.y1)
    in_a = shapely.intersection(np.array([p.full for p in pa]), window)
    in_b = shapely.intersection(np.array([p.full for p in pb]), window)
    tree = shapely.STRtree(in_b)
    left, right = tree.query(in_a, predicate="intersects")
    if len(left) == 0:
        return []
    inter = shapely.area(shapely.intersection(in_a[left], in_b[right]))
    iou = inter / (shapely.area(in_a[left]) + shapely.area(in_b[right]) - inter)
    best_a: dict[int, tuple[float, int]] = {}
    best_b: dict[int, tuple[float, int]] = {}
    for i, j, v in zip(left, right, iou):
        if v >= min_iou:
            if v > best_a.get(i, (0.0, -1))[0]:
                best_a[i] = (v, j)
            if v > best_b.get(j, (0.0, -1))[0]:
                best_b[j] = (v, i)
    return [(i, j) for i, (_, j) in best_a.items() if best_b[j][1] == i]


def _drop_duplicates(objects: list[StitchedObject], max_iou: float) -> list[StitchedObject]:
    """Keep the better-scored of any two objects that overlap with IoU above ``max_iou``."""
    if not objects:
        return []
    objects = sorted(objects, key=lambda o: (-o.score, -o.stability))
    geoms = np.array([o.geometry for o in objects])
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    inter = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    iou = inter / (shapely.area(geoms[left]) + shapely.area(geoms[right]) - inter)
    dropped = np.zeros(len(objects), bool)
    for i, j in sorted(zip(left[iou > max_iou], right[iou > max_iou])):
        if not dropped[i]:
            dropped[j] = True
    return [o for o, d in zip(objects, dropped) if not d]
