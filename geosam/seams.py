"""Seam geometry shared by stitching and prompt rounds: a tile's pieces and how the pieces of two
neighbouring tiles meet in the window they share.

All geometry is in scene pixel coordinates, where seams fall on integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import rasterio.features
import shapely
from affine import Affine

from geosam.metrics import iou
from geosam.models.base import Masks
from geosam.tiling import Box, Tile, TileGrid
from geosam.vectorize import mask_to_geometry

MATCH_IOU = 0.5  # pieces of neighbouring tiles are one object above this IoU in their shared window
WHOLE = (
    0.95  # a mask of at least this share of its tile's valid pixels is the whole tile (see ``Piece.whole``)
)


@dataclass(frozen=True)
class Piece:
    """One mask of one tile, in scene pixel coordinates."""

    full: shapely.Geometry  # the whole mask
    complete: bool  # the mask touches no internal edge of the tile's read window
    score: float
    stability: float
    # the mask is (nearly) all of the tile's valid pixels: the tile lies inside an object, or it is the
    # image rather than an object in it; the stitcher decides which (see geosam.stitch)
    whole: bool = False
    # what the object looks like to the model (float32 (C,), geosam.models.features), where it says
    descriptor: np.ndarray | None = field(default=None, compare=False, repr=False)
    source: str = "grid"  # the prompts that found it: grid, proposal (find-them-all), prompt (seams)


def pieces_from_masks(
    tile: Tile, masks: Masks, grid: TileGrid, valid: np.ndarray | None = None, source: str = "grid"
) -> list[Piece]:
    """Vectorize a tile's masks (padded to the tile size) into pieces.

    ``valid``: the tile image's valid pixels (default: all of its read window), for ``Piece.whole``;
    ``source``: what prompted the masks (``proposal`` instead where ``masks.proposed`` says so).
    """
    origin = (tile.read.x0, tile.read.y0)
    h, w = tile.read.height, tile.read.width
    cut = (tile.read.y0 > 0, tile.read.y1 < grid.height, tile.read.x0 > 0, tile.read.x1 < grid.width)
    whole_area = WHOLE * (h * w if valid is None else int(valid[:h, :w].sum()))
    pieces = []
    described = masks.descriptors if masks.descriptors is not None else [None] * len(masks)
    proposed = masks.proposed if masks.proposed is not None else np.zeros(len(masks), bool)
    with rasterio.Env():  # one GDAL environment for the tile's masks, not one a mask
        for mask, score, stability, descriptor, found in zip(
            masks.masks, masks.scores, masks.stability, described, proposed, strict=True
        ):
            mask = mask[:h, :w]
            edges = (mask[0].any(), mask[-1].any(), mask[:, 0].any(), mask[:, -1].any())
            complete = not any(c and e for c, e in zip(cut, edges, strict=True))
            full = mask_to_geometry(mask, origin)
            if full.is_empty:
                continue
            whole = not complete and full.area >= whole_area
            kind = "proposal" if found else source
            pieces.append(Piece(full, complete, float(score), float(stability), whole, descriptor, kind))
    return pieces


def raster(geometries: list[shapely.Geometry], box: Box) -> np.ndarray:
    """Pixel polygons (scene pixels) burnt into a bool array over ``box``."""
    if not geometries:
        return np.zeros((box.height, box.width), bool)
    # Only the box's part is burnt: clipped first, a large outline's other vertices never reach GDAL.
    clipped = shapely.clip_by_rect(np.array(geometries, dtype=object), box.x0, box.y0, box.x1, box.y1)
    return rasterio.features.rasterize(
        [(g, 1) for g in clipped if not g.is_empty],
        out_shape=(box.height, box.width),
        transform=Affine.translation(box.x0, box.y0),
        dtype=np.uint8,
    ).astype(bool)


def matches(
    a: Tile, b: Tile, pa: list[Piece], pb: list[Piece], min_iou: float
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Pairs of pieces of two neighbouring tiles seen alike in their shared window.

    Returns a one-to-one matching of pairs with IoU >= ``min_iou``, best first (one object each), and
    the other pairs as alike (possible duplicates). Whole pieces take no part (see ``whole_links``).
    """
    shared = a.read.intersection(b.read)
    ia, ib = _parts(pa), _parts(pb)
    if shared is None or not ia or not ib:
        return [], []
    window = shapely.box(shared.x0, shared.y0, shared.x1, shared.y1)
    in_a = shapely.intersection(np.array([pa[i].full for i in ia]), window)
    in_b = shapely.intersection(np.array([pb[j].full for j in ib]), window)
    left, right = shapely.STRtree(in_b).query(in_a, predicate="intersects")
    if len(left) == 0:
        return [], []
    overlap = iou(in_a[left], in_b[right])
    alike = overlap >= min_iou
    left, right, overlap = np.array(ia)[left[alike]], np.array(ib)[right[alike]], overlap[alike]
    # one-to-one, best first: ties (a piece and its near-duplicate) are broken the same way every time
    matched = _one_to_one(left, right, np.lexsort((right, left, -overlap)))
    others = sorted(set(zip(left.tolist(), right.tolist(), strict=True)) - set(matched))
    return matched, others


def continuations(
    a: Tile, b: Tile, pa: list[Piece], pb: list[Piece], matched: list[tuple[int, int]], share: float
) -> list[tuple[int, int]]:
    """Pairs of unmatched pieces that are one object cut differently by the two tiles.

    Both pieces run out of their own tile towards the other (each touches its read window's edge
    inside the shared window), and in the shared window more than ``share`` of the smaller one lies
    inside the other: one tile sees a part of what the other sees whole. Best overlap first, one-to-one.
    Whole pieces take no part.
    """
    shared = a.read.intersection(b.read)
    if shared is None:
        return []
    free_a = [i for i in _parts(pa) if i not in {i for i, _ in matched}]
    free_b = [j for j in _parts(pb) if j not in {j for _, j in matched}]
    free_a = [i for i in free_a if runs_out(pa[i], a, b)]
    free_b = [j for j in free_b if runs_out(pb[j], b, a)]
    if not free_a or not free_b:
        return []
    in_a = clip(np.array([pa[i].full for i in free_a]), shared)
    in_b = clip(np.array([pb[j].full for j in free_b]), shared)
    left, right = shapely.STRtree(in_b).query(in_a, predicate="intersects")
    if len(left) == 0:
        return []
    inter = shapely.area(shapely.intersection(in_a[left], in_b[right], grid_size=1))
    smaller = np.minimum(shapely.area(in_a[left]), shapely.area(in_b[right]))
    overlap = inter / np.maximum(smaller, 1e-12)
    order = np.lexsort((right, left, -overlap))
    return _one_to_one(np.array(free_a)[left], np.array(free_b)[right], order[overlap[order] > share])


def whole_links(
    a: Tile, b: Tile, pa: list[Piece], pb: list[Piece], linked: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Pairs of pieces of two neighbouring tiles, at least one of them whole, where the other covers
    the whole one's part of their shared window (at least ``WHOLE`` of it; both ways for two whole
    pieces): the object that fills one tile may continue into the other there.

    One-to-one and apart from the ``linked`` pairs (matches and continuations): a piece linked to one
    of a tile's own pieces shows that the tile sees the object's outline, not that it lies inside
    it. A piece that is not whole is the better partner (it is a real outline), then the better
    cover.
    """
    shared = a.read.intersection(b.read)
    free_a = [i for i in range(len(pa)) if i not in {i for i, _ in linked}]
    free_b = [j for j in range(len(pb)) if j not in {j for _, j in linked}]
    if shared is None or not free_a or not free_b:
        return []
    in_a = clip(np.array([pa[i].full for i in free_a]), shared)
    in_b = clip(np.array([pb[j].full for j in free_b]), shared)
    whole_a = np.array([pa[i].whole for i in free_a])
    whole_b = np.array([pb[j].whole for j in free_b])
    left, right = np.nonzero(whole_a[:, None] | whole_b[None, :])
    inter = shapely.area(shapely.intersection(in_a[left], in_b[right], grid_size=1))
    area_a, area_b = shapely.area(in_a[left]), shapely.area(in_b[right])
    # the cover of each whole piece's part by the other; 1 where that piece is not whole
    cover = np.minimum(
        np.where(whole_a[left], inter / np.maximum(area_a, 1e-12), 1.0),
        np.where(whole_b[right], inter / np.maximum(area_b, 1e-12), 1.0),
    )
    order = np.lexsort((right, left, -cover, whole_a[left] & whole_b[right]))
    return _one_to_one(np.array(free_a)[left], np.array(free_b)[right], order[cover[order] >= WHOLE])


def _one_to_one(left: np.ndarray, right: np.ndarray, order: np.ndarray) -> list[tuple[int, int]]:
    """Candidate pairs (``left[k]``, ``right[k]``) taken greedily in ``order``, each piece at most once."""
    pairs, used_a, used_b = [], set(), set()
    for k in order.tolist():
        i, j = int(left[k]), int(right[k])
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs


def _parts(pieces: list[Piece]) -> list[int]:
    """Indices of the pieces that are not whole."""
    return [i for i, p in enumerate(pieces) if not p.whole]


def clip(geometries: np.ndarray, box: Box) -> np.ndarray:
    """The polygons' parts inside a box (polygons only: exact on pixel edges, never a stray line)."""
    return shapely.clip_by_rect(geometries, box.x0, box.y0, box.x1, box.y1)


def runs_out(piece: Piece, tile: Tile, other: Tile) -> bool:
    """Whether the piece touches an edge of its tile's read window that lies inside ``other``'s."""
    if piece.complete:
        return False
    x0, y0, x1, y1 = piece.full.bounds
    r, o = tile.read, other.read
    return (
        (x1 == r.x1 and o.x0 < r.x1 < o.x1)
        or (x0 == r.x0 and o.x0 < r.x0 < o.x1)
        or (y1 == r.y1 and o.y0 < r.y1 < o.y1)
        or (y0 == r.y0 and o.y0 < r.y0 < o.y1)
    )
