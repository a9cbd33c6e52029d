"""How well objects come through the tiling: scores against known objects, and seam lines without them.

All functions take shapely geometries in one coordinate system; ``seam_line_fraction`` needs scene
pixel coordinates (``geosam.vectorize.to_pixels`` brings a result's polygons back to them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely

from geosam.tiling import TileGrid

OVERLAP = 0.5  # "mostly": a share of area above this


@dataclass(frozen=True)
class TruthScores:
    """Predicted objects against true ones (rates are shares, 0 to 1)."""

    objects: int  # true objects
    predicted: int  # predicted objects
    split_rate: float  # true objects that come out as more than one polygon
    duplicate_rate: float  # predicted objects that repeat another one (IoU above OVERLAP)
    merge_error_rate: float  # true objects fused with another true object into one polygon
    mean_iou: float  # mean over true objects of the IoU with their best-matching prediction


def truth_scores(predicted: Sequence[shapely.Geometry], truth: Sequence[shapely.Geometry]) -> TruthScores:
    """Score predicted polygons against the true ones.

    A prediction belongs to the true object holding most of its area (more than half). A true object
    is split when more than one prediction belongs to it, and fused when a prediction covers more than
    half of it and more than half of another true object.
    """
    pred, true = np.asarray(predicted, dtype=object), np.asarray(truth, dtype=object)
    p, t = shapely.STRtree(true).query(pred, predicate="intersects")
    inter = shapely.area(shapely.intersection(pred[p], true[t]))
    area_p, area_t = shapely.area(pred), shapely.area(true)
    iou = inter / (area_p[p] + area_t[t] - inter)

    owner = np.full(len(pred), -1)
    mostly_in = inter > OVERLAP * area_p[p]
    owner[p[mostly_in]] = t[mostly_in]
    owned = np.bincount(owner[owner >= 0], minlength=len(true))

    covers = inter > OVERLAP * area_t[t]
    truths_covered = np.bincount(p[covers], minlength=len(pred))
    fused = np.unique(t[covers & (truths_covered[p] > 1)])

    best = np.zeros(len(true))
    np.maximum.at(best, t, iou)
    return TruthScores(
        objects=len(true),
        predicted=len(pred),
        split_rate=float((owned > 1).sum() / max(len(true), 1)),
        duplicate_rate=duplicates(pred) / max(len(pred), 1),
        merge_error_rate=len(fused) / max(len(true), 1),
        mean_iou=float(best.mean()) if len(true) else 1.0,
    )


def duplicates(geometries: Sequence[shapely.Geometry] | np.ndarray, min_iou: float = OVERLAP) -> int:
    """How many polygons repeat an earlier one: overlap it with IoU above ``min_iou``."""
    geoms = np.asarray(geometries, dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    return len(np.unique(right[iou(geoms[left], geoms[right]) > min_iou]))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of polygons ``a`` and ``b``, item by item (1 where both are empty)."""
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(a) + shapely.area(b) - inter
    return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)


def seam_line_fraction(
    geometries: Sequence[shapely.Geometry], grid: TileGrid, edges: Literal["core", "read"] = "core"
) -> float:
    """The share of the polygons' total boundary length that lies on the tiling's straight cut lines.

    ``edges="core"``: the internal edges of the tile cores, where the stitcher cuts partial views;
    ``edges="read"``: the internal edges of the tiles' read windows, where the model's view ends.
    Needs no truth. Geometries are in scene pixel coordinates of the scene ``grid`` tiles.
    """
    boundaries = shapely.boundary(np.asarray(geometries, dtype=object))
    total = float(shapely.length(boundaries).sum())
    if total == 0:
        return 0.0
    lines = shapely.MultiLineString(
        [[(x, 0), (x, grid.height)] for x in _cuts(grid, edges, "x")]
        + [[(0, y), (grid.width, y)] for y in _cuts(grid, edges, "y")]
    )
    return float(shapely.length(shapely.intersection(boundaries, lines)).sum()) / total


def _cuts(grid: TileGrid, edges: str, axis: str) -> list[int]:
    """Positions of the internal cut lines across one axis, in pixels."""
    rows, cols = grid.shape
    tiles = [grid.tile(0, c) for c in range(cols)] if axis == "x" else [grid.tile(r, 0) for r in range(rows)]
    length = grid.width if axis == "x" else grid.height
    cuts: set[int] = set()
    for tile in tiles:
        box = tile.core if edges == "core" else tile.read
        lo, hi = (box.x0, box.x1) if axis == "x" else (box.y0, box.y1)
        cuts.update(v for v in (lo, hi) if 0 < v < length)
    return sorted(cuts)
