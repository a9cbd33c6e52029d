"""Outlines an analyst can hand over: pixel outlines turned into the chosen kind, with their measures.

Everything here works in scene pixel coordinates (one unit is one pixel of the (resampled) grid, pixel
edges are integers), where SAM's outlines are exact: tolerances are in pixels, whatever the CRS.

The kinds (``KINDS``):

- ``pixel``: the outline of the mask's pixels, as it was (staircase edges).
- ``simplify``: Douglas-Peucker with ``--simplify`` pixels (1 when 0), on the shared arcs (below).
- ``smooth``: for natural objects (fields, water): the staircase taken out (each pixel edge replaced by
  its midpoint, on outlines cut into 1-pixel steps), a moving average over 5 px, then Douglas-Peucker
  with 0.3 px. Convex corners round by about a pixel; the area stays within a pixel's width of the outline.
- ``orthogonal`` and ``orthogonal45``: buildings. The dominant direction (``dominant_angle``: the
  minimum rotated rectangle's where it agrees with the edges' mean direction). In that frame each edge of
  the outline (simplified by 1.5 px) is turned to the nearest allowed direction (0/90°, or every 45°)
  through the mean of the pixel steps it stands for, runs of edges in one direction become one line at
  their length-weighted offset, lines shorter than 2 px are dropped, and neighbouring lines meet in their
  intersection (parallel ones through a short connecting edge at right angles). A part too small or
  round for that becomes a rectangle of its area (``_box``).
- ``circle``: round objects (tanks): the circle about the centroid with the outline's area.
- ``auto``: per object, ``circle`` where the circle's IoU with the pixel outline is at least
  ``AUTO_CIRCLE``, else ``orthogonal`` where ``AXIS_SHARE`` of the outline runs along two directions at
  right angles and the result's IoU is at least ``AUTO_ORTHOGONAL``, else ``smooth``; the kind chosen is
  the object's ``outline``.

Why our own: ``buildingregulariser`` (0.2.5, what segment-geospatial wraps) was measured on the labelled
buildings and halls (benchmarks/outlines.py --versus-buildingregulariser): see docs/guide/outlines.md. It
regularizes one GeoDataFrame at a time through geopandas >= 1.0 and numpy >= 2 (geosam supports older
ones) and has no notion of neighbours that share pixels; shapely 2 has no orthogonalization; its
``coverage_simplify`` needs a planar coverage (automatic mode's objects nest) and keeps staircases.

Neighbours (topology): objects whose pixel outlines touch keep touching, without overlaps.

- ``simplify`` and ``smooth`` act on shared arcs: every ring of those objects is noded with every other
  (``union_all``), cut into arcs between junctions (``line_merge``), and each arc is changed once, its ends
  fixed; the arcs are polygonized into faces and each object is the union of the faces that lie mostly
  inside its pixel outline. Neighbours share their new edge exactly; nested objects (a roof inside its
  yard) stay nested.
- ``orthogonal``, ``orthogonal45`` and ``circle`` change each object on its own, larger objects first;
  touching orthogonal objects share the larger one's direction where theirs differ by under ``ALIGN``°.
  Where two such objects touch, the later one snaps to the earlier one's outline (``SNAP`` px), gives up
  what the earlier one holds and takes the pieces between them that neither covers (``MIN_PIECE`` px² or
  more): the earlier one's edge becomes the shared edge; where both were turned in one direction, the
  later one is squared again after (no pixel staircase from those pieces stays). Circles cannot share an edge: between them
  only overlaps are removed. Against a neighbour of another kind, an object keeps its own pixels along
  the shared edge and gives up the neighbour's (``_keep_neighbours``).

Then holes smaller than ``fill_holes`` (px²) are filled, before any of this; ``flat`` makes a planar
partition first: where objects overlap, the smaller one keeps the pixels (a roof cuts its hole in the
yard); an object left with nothing is dropped.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from shapely import Geometry, LineString, Polygon, affinity

from geosam import settings
from geosam.metrics import iou
from geosam.output import RAW_GEOMETRY
from geosam.vectorize import to_map

KINDS: tuple[str, ...] = typing.get_args(settings.OutlineKind)
ARC_KINDS = ("simplify", "smooth")  # changed on shared arcs, so neighbours keep their shared edges
ALONE_KINDS = frozenset({"pixel"})  # made from each object's outline alone; the others look at its neighbours
AUTO_CIRCLE = 0.93  # auto: a circle where it covers the pixel outline this well (IoU)
AUTO_ORTHOGONAL = 0.85  # auto: right angles where they cover the pixel outline this well (IoU)
NEIGHBOUR_STRIP = 1.5  # px: an orthogonal or circle outline keeps its own pixels this close to a neighbour
SMOOTH_WINDOW = 5  # px: the moving average of smooth outlines
SMOOTH_TOLERANCE = 0.3  # px: Douglas-Peucker after smoothing
ORTHO_TOLERANCE = 1.5  # px: Douglas-Peucker before turning edges
ORTHO_MIN_EDGE = 2.0  # px: shorter lines of an orthogonal outline are dropped
RECTANGLE_AGREES = 5.0  # degrees: the minimum rotated rectangle's direction is taken within this of the mean
AXIS_SHARE = 0.6  # auto: right angles only where this share of the outline runs along its two directions
ALIGN = 5.0  # degrees: touching orthogonal objects whose directions differ by less share the larger one's
MIN_PIECE = 2.0  # px²: smaller pieces between two regularized neighbours are left out (corners of pixels)
SNAP = 2.0  # px: a regularized outline's vertices this close to an earlier neighbour's outline move onto it
LEFT_OVER = 0.25  # an object left less than this share of its area by its neighbours keeps its pixels
FALLBACK_IOU = 0.5  # a part whose turned edges cover it worse than this becomes a rectangle (``_box``)
EMPTY = shapely.MultiPolygon()


@dataclass(frozen=True)
class Outlines:
    """Outlines of objects in scene pixels and their measures, one item per object given."""

    geometry: np.ndarray  # the outlines applied (empty where ``flat`` left an object nothing)
    raw: np.ndarray  # the pixel outlines (holes filled, planar with ``flat``)
    kind: np.ndarray  # the kind applied to each (auto: the one chosen)
    iou: np.ndarray  # IoU of each outline with its pixel outline
    vertices_raw: np.ndarray  # vertices of the pixel outline (each ring's closing one not counted)
    vertices: np.ndarray  # vertices of the outline applied


def check_kind(kind: str) -> str:
    """``kind`` if it is one of ``KINDS``, else a ``ValueError`` that lists them."""
    if kind not in KINDS:
        raise ValueError(f"unknown outline {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def outline(
    geometries: np.ndarray, kind: str | Sequence[str] | np.ndarray = "pixel", *, simplify: float = 0.0,
    fill_holes: float = 0.0, flat: bool = False,
) -> Outlines:  # fmt: skip
    """The outlines of ``kind`` (one for all, or one per object) of pixel outlines in scene pixels.

    ``simplify`` is the tolerance of ``simplify`` outlines in pixels (0: 1 px); with kind ``pixel`` it
    simplifies each outline on its own, as ``--simplify`` always did. Holes under ``fill_holes`` px² are
    filled; ``flat`` makes a planar partition first (the smaller of two overlapping objects keeps the
    pixels). Every outline returned is valid.
    """
    raw = _valid(np.asarray(geometries, dtype=object))
    kinds = np.array([kind] * len(raw) if isinstance(kind, str) else list(kind), dtype=object)
    for k in set(kinds):
        check_kind(k)
    if fill_holes > 0:
        raw = np.array([_fill(g, fill_holes) for g in raw], dtype=object)
    if flat:
        raw = planar(raw)
    made = np.full(len(raw), None, dtype=object)  # outlines auto made while choosing
    if len(raw) and (kinds == "auto").any():
        auto = np.flatnonzero(kinds == "auto")
        kinds[auto], made[auto] = _choose(raw[auto])
    final = raw.copy()
    pixel = kinds == "pixel"
    if simplify > 0 and pixel.any():
        final[pixel] = _valid(shapely.simplify(raw[pixel], simplify, preserve_topology=True))
    for arc_kind in ARC_KINDS:
        chosen = np.flatnonzero(kinds == arc_kind)
        if len(chosen):
            final[chosen] = on_arcs(raw[chosen], arc_kind, simplify or 1.0)
    alone = np.flatnonzero(np.isin(kinds, ("orthogonal", "orthogonal45", "circle")))
    if len(alone):
        circles = alone[kinds[alone] == "circle"]
        final[circles] = _circles(raw[circles])
        squares = alone[kinds[alone] != "circle"]
        angles, aligned = _aligned_angles(raw, squares)
        final[squares] = [
            made[i]
            if made[i] is not None and not aligned[k]
            else _orthogonal(raw[i], _STEP[kinds[i]], angles[k])
            for k, i in enumerate(squares)
        ]
        final[alone] = _valid(final[alone])
        frames = {int(i): (_STEP[kinds[i]], float(angles[k])) for k, i in enumerate(squares)}
        final = _keep_neighbours(raw, final, alone, circles, frames)
    kept = np.fromiter((f is r for f, r in zip(final, raw, strict=True)), bool, len(raw))  # unchanged: IoU 1
    overlap = np.ones(len(raw))
    overlap[~kept] = iou(final[~kept], raw[~kept])
    return Outlines(final, raw, kinds.astype(str), overlap, vertex_count(raw), vertex_count(final))


def by_class(pairs: Sequence[str] | None) -> dict[str, str]:
    """``CLASS=KIND`` pairs (``--class-outlines``) as a mapping; a ``ValueError`` for a bad pair or kind."""
    mapping: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, kind = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{pair!r} is not CLASS=KIND, e.g. building=orthogonal")
        mapping[name.strip()] = check_kind(kind.strip())
    return mapping


def kinds_of(classes: np.ndarray, default: str, mapping: dict[str, str]) -> str | np.ndarray:
    """Each object's outline kind: its class's in ``mapping``, else ``default`` (one for all without one)."""
    if not mapping:
        return default
    kinds = np.full(len(classes), default, dtype=object)
    for name, kind in mapping.items():
        kinds[classes == name] = kind
    return kinds


def apply(
    pixels: np.ndarray, transform: Affine, pixel_area: float | None,
    options: settings.Outlines = settings.OUTLINES, simplify: float = 0.0, kinds: str | np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """The outlines of ``options`` of pixel outlines (scene pixels), in the scene's CRS through ``transform``,
    and the output's columns that measure them: ``outline`` (the kind applied), ``outline_iou`` (IoU with the
    pixel outline), ``vertices_raw``, ``vertices`` and, with ``keep_raw``, the pixel outlines in the CRS
    (``RAW_GEOMETRY``, written as a layer of their own). ``pixel_area`` (m², None without a CRS: 1) turns
    ``fill_holes`` into pixels². ``kinds``: one kind per object instead of ``options.outline``."""
    result = outline(
        pixels, options.outline if kinds is None else kinds, simplify=simplify, fill_holes=options.fill_holes / (pixel_area or 1.0),
        flat=options.flat,
    )  # fmt: skip
    columns = {
        "outline": result.kind, "outline_iou": result.iou.astype(np.float64),
        "vertices_raw": result.vertices_raw, "vertices": result.vertices,
    }  # fmt: skip
    if options.keep_raw:
        columns[RAW_GEOMETRY] = to_map(result.raw, transform)
    return to_map(result.geometry, transform), columns


def vertex_count(geometries: np.ndarray) -> np.ndarray:
    """Vertices of each polygon, each ring's closing coordinate not counted twice."""
    coords = shapely.get_num_coordinates(geometries)
    parts = shapely.get_parts(geometries, return_index=True)
    rings = np.bincount(
        parts[1], weights=1 + shapely.get_num_interior_rings(parts[0]), minlength=len(geometries)
    )
    return (coords - rings).astype(np.int64)


def corner_angles(geometry: Geometry) -> np.ndarray:
    """The interior angles (degrees, 0..180 as turned) at every vertex of every ring of ``geometry``."""
    angles = []
    for ring in _rings(geometry):
        xy = np.asarray(ring.coords)[:-1]
        if len(xy) < 3:
            continue
        before, after = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
        cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
        turn = np.arctan2(cross, np.einsum("ij,ij->i", before, after))
        angles.append(180 - np.degrees(np.abs(turn)))
    return np.concatenate(angles) if angles else np.zeros(0)


def choose(raw: np.ndarray) -> np.ndarray:
    """The kind ``auto`` gives each pixel outline: circle, orthogonal or smooth (see the module's text)."""
    return _choose(raw)[0]


def _choose(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``choose``'s kinds, and the orthogonal outlines it made on the way (None for the others)."""
    circles = iou(_circles(raw), raw)
    made = np.full(len(raw), None, dtype=object)
    maybe = np.flatnonzero(circles < AUTO_CIRCLE)
    maybe = maybe[np.array([axis_share(g) for g in raw[maybe]], dtype=float) >= AXIS_SHARE]
    if len(maybe):
        squares = _valid(np.array([_orthogonal(g, 90) for g in raw[maybe]], dtype=object))
        fits = iou(squares, raw[maybe]) >= AUTO_ORTHOGONAL
        made[maybe[fits]] = squares[fits]
    kinds = np.where(circles >= AUTO_CIRCLE, "circle", np.where(made != None, "orthogonal", "smooth"))  # noqa: E711
    return kinds.astype(object), made


def axis_share(geometry: Geometry) -> float:
    """The share of the outline (simplified by 2 px) that runs within 10° of its dominant directions."""
    angle = dominant_angle(geometry)
    edges = [np.diff(np.asarray(r.coords), axis=0) for r in _rings(shapely.simplify(geometry, 2.0))]
    if not edges:
        return 0.0
    d = np.concatenate(edges)
    length = np.hypot(d[:, 0], d[:, 1])
    off = np.abs((np.degrees(np.arctan2(d[:, 1], d[:, 0])) - angle + 45) % 90 - 45)
    return float(length[off <= 10].sum() / max(length.sum(), 1e-12))


def planar(raw: np.ndarray) -> np.ndarray:
    """A planar partition of overlapping outlines: where two overlap, the smaller keeps the pixels."""
    area = shapely.area(raw)
    tree = shapely.STRtree(raw)
    left, right = tree.query(raw, predicate="intersects")
    smaller = (area[right] < area[left]) | ((area[right] == area[left]) & (right < left))
    left, right = left[smaller], right[smaller]
    overlap = shapely.area(shapely.intersection(raw[left], raw[right])) > 0
    left, right = left[overlap], right[overlap]
    out = raw.copy()
    for i in np.unique(left):
        out[i] = shapely.difference(raw[i], shapely.union_all(raw[right[left == i]]))
    return _valid(out)


def on_arcs(raw: np.ndarray, kind: str, tolerance: float) -> np.ndarray:
    """``simplify`` or ``smooth`` outlines of ``raw``, each shared arc changed once (see the module's text)."""
    rings = [r for g in raw for r in _rings(g)]
    if not rings:
        return raw.copy()
    noded = shapely.line_merge(shapely.union_all(np.array(rings, dtype=object)))
    arcs = shapely.get_parts(noded)
    if kind == "simplify":  # all arcs at once, so that none crosses another or collapses
        changed = shapely.get_parts(shapely.simplify(noded, tolerance, preserve_topology=True))
    else:
        changed = np.array([_smooth_arc(a) for a in arcs], dtype=object)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.union_all(changed))))
    faces = faces[shapely.area(faces) > 0]
    out = np.full(len(raw), EMPTY, dtype=object)
    if not len(faces):
        return out
    face, owner = shapely.STRtree(raw).query(faces, predicate="intersects")
    inside = shapely.area(shapely.intersection(faces[face], raw[owner])) > 0.5 * shapely.area(faces[face])
    face, owner = face[inside], owner[inside]
    order = np.argsort(owner, kind="stable")
    face, owner = face[order], owner[order]
    bounds = np.flatnonzero(np.diff(owner)) + 1
    for ids, who in zip(np.split(face, bounds), owner[np.r_[0, bounds]] if len(owner) else [], strict=False):
        out[who] = shapely.coverage_union_all(faces[ids]) if len(ids) > 1 else faces[ids[0]]
    return _valid(out)


def _smooth_arc(arc: LineString) -> LineString:
    """An arc without its pixel staircase: its pixel edges' midpoints (on the arc cut into 1-px steps),
    averaged over ``SMOOTH_WINDOW`` px (fewer on short arcs), ends fixed; a closed arc (an outline that
    shares no edge) all round, scaled about its centre back to the area it enclosed."""
    xy = np.asarray(shapely.segmentize(arc, 1.0).coords)
    if len(xy) < 3:
        return arc
    window = min(SMOOTH_WINDOW, 2 * (len(xy) // 12) + 1)  # 12 px of outline per pixel of reach
    half = window // 2
    if np.array_equal(xy[0], xy[-1]):
        ring = xy[:-1]
        mid = (ring + np.roll(ring, -1, axis=0)) / 2
        padded = np.concatenate([mid[len(mid) - half :], mid, mid[:half]])
        kernel = np.ones(window) / window
        smooth = np.column_stack([np.convolve(padded[:, k], kernel, mode="valid") for k in (0, 1)])
        before, after = Polygon(ring), Polygon(smooth)
        if after.is_valid and after.area > 0:
            centre = np.asarray(after.centroid.coords)[0]
            smooth = centre + (smooth - centre) * math.sqrt(before.area / after.area)
        out = LineString(np.vstack([smooth, smooth[:1]]))
    else:
        mid = np.vstack([xy[:1], (xy[:-1] + xy[1:]) / 2, xy[-1:]])
        at = np.arange(len(mid))
        reach = np.minimum(half, np.minimum(at, len(mid) - 1 - at))  # the window narrows to the fixed ends
        total = np.vstack([np.zeros((1, 2)), np.cumsum(mid, axis=0)])
        smooth = (total[at + reach + 1] - total[at - reach]) / (2 * reach + 1)[:, None]
        out = LineString(smooth)
    return shapely.simplify(out, SMOOTH_TOLERANCE, preserve_topology=False)


_STEP = {"orthogonal": 90, "orthogonal45": 45}


def _aligned_angles(raw: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dominant direction of each of ``squares`` (indexes into ``raw``), where its pixels touch a
    larger one's whose direction is within ``ALIGN``° taken from that one (terraced houses share their
    walls' direction); and whether it was."""
    angles = np.array([dominant_angle(g) for g in raw[squares]], dtype=float)
    aligned = np.zeros(len(squares), bool)
    left, right = shapely.STRtree(raw[squares]).query(raw[squares], predicate="touches")
    area = shapely.area(raw[squares])
    for k in np.argsort(-area, kind="stable"):  # larger first: they lend their direction
        for j in right[left == k]:
            if area[j] > area[k] or (area[j] == area[k] and j < k):
                if abs((angles[j] - angles[k] + 45) % 90 - 45) < ALIGN:
                    angles[k], aligned[k] = angles[j], True
                    break
    return angles, aligned


def _circles(raw: np.ndarray) -> np.ndarray:
    """The circles about the outlines' centroids with their areas (32 vertices; empty stays empty)."""
    circles = shapely.buffer(shapely.centroid(raw), np.sqrt(shapely.area(raw) / math.pi), quad_segs=8)
    return np.where(shapely.is_empty(raw), raw, circles)


def _orthogonal(raw: Geometry, step: int, angle: float | None = None) -> Geometry:
    """Edges at ``angle`` (default: the dominant direction) plus multiples of ``step`` degrees (90 or 45),
    ring by ring."""
    if raw.is_empty:
        return raw
    angle = dominant_angle(raw) if angle is None else angle
    centre = shapely.centroid(raw)
    turned = affinity.rotate(raw, -angle, origin=centre, use_radians=False)
    polygons = []
    for part in shapely.get_parts(turned):
        shell = _square_ring(part.exterior, step)
        holes = [h for h in (_square_ring(r, step) for r in part.interiors) if h is not None]
        squared = Polygon() if shell is None else _valid(np.array([Polygon(shell, holes)], dtype=object))[0]
        if iou(np.array([squared]), np.array([part]))[0] < FALLBACK_IOU:
            squared = _box(part)
        polygons.append(squared)
    if not polygons:
        return raw
    squared = shapely.union_all(np.array(polygons, dtype=object))
    return affinity.rotate(squared, angle, origin=centre, use_radians=False)


def _box(part: Polygon) -> Polygon:
    """The rectangle along the axes with the part's centroid, area and the aspect of its bounding box:
    what is left of a blob too small or too round for its edges to turn."""
    x0, y0, x1, y1 = part.bounds
    scale = math.sqrt(part.area / max((x1 - x0) * (y1 - y0), 1e-12))
    cx, cy = part.centroid.x, part.centroid.y
    w, h = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
    return shapely.box(cx - w, cy - h, cx + w, cy + h)


def dominant_angle(geometry: Geometry) -> float:
    """The outline's dominant edge direction in degrees (0..90).

    The length²-weighted circular mean of its edge directions modulo 90°, from the outline simplified by
    2 px (the staircase of a slanted edge would pull a plain mean towards the pixel axes by up to 2°, and
    so would 1 px); where the minimum rotated rectangle's direction is within ``RECTANGLE_AGREES``° of it,
    the rectangle's, exact on straight edges.
    """
    simple = shapely.simplify(geometry, 2.0, preserve_topology=True)
    edges = [np.diff(np.asarray(r.coords), axis=0) for r in _rings(simple)]
    if not edges:
        return 0.0
    d = np.concatenate(edges)
    weight = d[:, 0] ** 2 + d[:, 1] ** 2
    theta = 4 * np.arctan2(d[:, 1], d[:, 0])
    mean = math.degrees(math.atan2(float(weight @ np.sin(theta)), float(weight @ np.cos(theta))) / 4) % 90
    corners = np.asarray(shapely.minimum_rotated_rectangle(geometry).exterior.coords)
    if len(corners) < 3:
        return mean
    side = corners[1] - corners[0]
    rectangle = math.degrees(math.atan2(side[1], side[0])) % 90
    apart = abs((rectangle - mean + 45) % 90 - 45)
    return rectangle if apart < RECTANGLE_AGREES else mean


def _square_ring(ring: Geometry, step: int) -> np.ndarray | None:
    """A ring whose edges run at multiples of ``step`` degrees (in a frame already turned to the dominant
    direction); None where too little is left of it."""
    xy = np.asarray(shapely.simplify(ring, ORTHO_TOLERANCE).coords)[:-1]
    if len(xy) < 3:
        return None
    centres: np.ndarray | None = _edge_centres(ring, xy)
    for _ in range(3):  # drop the lines that come out shorter than ORTHO_MIN_EDGE, and again
        lines = _lines(xy, step, centres)
        centres = None  # the corners of fitted lines: their own midpoints
        if len(lines) < 3:
            return None
        corners = _corners(lines, step)
        length = np.hypot(*(np.roll(corners, -1, axis=0) - corners).T)
        keep = np.ones(len(corners), bool)
        short = np.flatnonzero(length < ORTHO_MIN_EDGE)
        if not len(short) or len(corners) - len(short) < 3:
            return corners
        keep[(short + 1) % len(corners)] = False  # the vertex that ends a short edge goes
        xy = corners[keep]
    return corners


def _edge_centres(ring: Geometry, xy: np.ndarray) -> np.ndarray:
    """For each edge of ``xy`` (the ring simplified: a subset of its vertices), the mean of the midpoints of
    the ring's 1-px steps it stands for: where the pixel staircase is, on average (a simplified edge runs
    through staircase corners, half a pixel out or in)."""
    dense = np.asarray(shapely.segmentize(ring, 1.0).coords)[:-1]
    index = {p: i for i, p in reversed(list(enumerate(map(tuple, dense.tolist()))))}
    at = np.array([index.get(p, -1) for p in map(tuple, xy.tolist())])
    if (at < 0).any() or (np.diff(at) <= 0).any():
        return xy + (np.roll(xy, -1, axis=0) - xy) / 2
    mids = (dense + np.roll(dense, -1, axis=0)) / 2
    total = np.vstack([np.zeros((1, 2)), np.cumsum(np.vstack([mids, mids]), axis=0)])
    ends = np.r_[at[1:], at[0] + len(dense)]
    return (total[ends] - total[at]) / (ends - at)[:, None]


def _lines(xy: np.ndarray, step: int, centres: np.ndarray | None = None) -> list[tuple[int, np.ndarray]]:
    """Each edge as (direction index, a point on it: its centre, or its midpoint), runs in one direction as
    one line at their length-weighted mean position."""
    d = np.roll(xy, -1, axis=0) - xy
    mid = xy + d / 2 if centres is None else centres
    length = np.hypot(d[:, 0], d[:, 1])
    keep = length > 0
    xy, d, length, mid = xy[keep], d[keep], length[keep], mid[keep]
    n = 360 // step
    direction = np.round(np.degrees(np.arctan2(d[:, 1], d[:, 0])) / step).astype(int) % n
    start = next((i for i in range(len(direction)) if direction[i] != direction[i - 1]), 0)
    order = np.r_[start : len(direction), 0:start]
    lines: list[tuple[int, np.ndarray]] = []
    run: list[int] = []
    for i in [*order, None]:
        if run and (i is None or direction[i] != direction[run[0]]):
            w = length[run]
            lines.append((int(direction[run[0]]), (mid[run] * w[:, None]).sum(axis=0) / w.sum()))
            run = []
        if i is not None:
            run.append(i)
    return lines


def _corners(lines: list[tuple[int, np.ndarray]], step: int) -> np.ndarray:
    """The corners where each line meets the next (directions in multiples of ``step`` degrees): their
    intersection, or a connecting edge at right angles between parallel ones."""
    corners = []
    for (k1, p1), (k2, p2) in zip(lines, lines[1:] + lines[:1], strict=True):
        a1, a2 = math.radians(k1 * step), math.radians(k2 * step)
        u1, u2 = np.array([math.cos(a1), math.sin(a1)]), np.array([math.cos(a2), math.sin(a2)])
        cross = u1[0] * u2[1] - u1[1] * u2[0]
        if abs(cross) > 1e-9:
            t = ((p2 - p1)[0] * u2[1] - (p2 - p1)[1] * u2[0]) / cross
            corners.append(p1 + t * u1)
        else:  # parallel: step across at right angles, halfway between the two points
            half = p1 + (p2 - p1) @ u1 / 2 * u1
            corners.extend([half, half + ((p2 - p1) - ((p2 - p1) @ u1) * u1)])
    return np.array(corners)


def _keep_neighbours(
    raw: np.ndarray, final: np.ndarray, alone: np.ndarray, circles: np.ndarray,
    frames: dict[int, tuple[int, float]],
) -> np.ndarray:  # fmt: skip
    """Objects changed on their own meet the objects their pixels touch without gaps or overlaps.

    Larger objects first. Against a neighbour whose outline stays (pixel) or was made on shared arcs, an
    object keeps its own pixels along the shared edge (within ``NEIGHBOUR_STRIP`` px, and the pieces of
    its pixels that touch that band) and gives up the neighbour's. Against a neighbour changed on its
    own and made before it, it gives up what that one holds and takes the pieces of either's pixels
    that lie between the two and neither covers: the earlier one's edge is the shared edge. A
    regularized object (``frames``: its step and direction) that took such pieces from neighbours of its
    own direction has its edges turned again, so their pixel edges do not stay in it; vertices on a
    straight line are dropped.
    """
    left, right = shapely.STRtree(raw).query(raw[alone], predicate="touches")
    out = final.copy()
    area = shapely.area(raw)
    mine, round_ = set(alone.tolist()), set(circles.tolist())
    done: set[int] = set()
    for i in sorted(set(alone[left].tolist()), key=lambda i: (-area[i], i)):
        others = right[alone[left] == i].tolist()
        shape = final[i]
        fixed = [j for j in others if j not in mine]
        if fixed:
            near = shapely.union_all(raw[fixed])
            band = shapely.buffer(near, NEIGHBOUR_STRIP, quad_segs=2)
            lost = shapely.get_parts(shapely.difference(raw[i], shape))
            keep = [shape, shapely.intersection(raw[i], band), *lost[shapely.intersects(lost, band)]]
            held = shapely.union_all(np.array([near, *final[fixed]], dtype=object))
            shape = shapely.difference(shapely.union_all(np.array(keep, dtype=object)), held)
        first = [j for j in others if j in done]
        if first and i in round_:  # a circle shares no edge: it only gives up the overlap
            shape = shapely.difference(shape, shapely.union_all(out[first]))
        elif first:
            held = shapely.union_all(out[first])
            shape = _valid(np.array([shapely.snap(shape, held, SNAP)], dtype=object))[0]
            shape = shapely.difference(shape, held)
            pool = shapely.difference(shapely.union_all(raw[[i, *first]]), shapely.union(shape, held))
            pieces = shapely.get_parts(pool)
            between = shapely.dwithin(pieces, shape, 1e-6) & shapely.dwithin(pieces, held, 1e-6)
            between &= shapely.area(pieces) >= MIN_PIECE  # not the pixel corners where outlines part
            shape = shapely.union_all(np.array([shape, *pieces[between]], dtype=object))
            if between.any() and _one_frame(frames, i, first):  # the pieces' pixel edges turned too
                shape = shapely.difference(_orthogonal(shape, *frames[i]), held)
        if first and shape.area < LEFT_OVER * area[i]:  # the earlier ones took it: it keeps its pixels
            shape = raw[i]
            out[first] = shapely.difference(out[first], shape)
        out[i] = shapely.simplify(shape, 0, preserve_topology=True) if i in frames else shape
        done.add(i)
    return _valid(out)


def _one_frame(frames: dict[int, tuple[int, float]], i: int, others: list[int]) -> bool:
    """Whether object ``i`` and ``others`` were all regularized in the same direction."""
    return i in frames and all(
        j in frames and abs((frames[j][1] - frames[i][1] + 45) % 90 - 45) < 1e-9 for j in others
    )


def _fill(geometry: Geometry, below: float) -> Geometry:
    """``geometry`` without the holes smaller than ``below`` (px²)."""
    if not shapely.get_num_interior_rings(shapely.get_parts(geometry)).any():
        return geometry
    parts = []
    for part in shapely.get_parts(geometry):
        holes = [h for h in part.interiors if Polygon(h).area >= below]
        parts.append(Polygon(part.exterior, holes))
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _rings(geometry: Geometry) -> list:
    return [r for p in shapely.get_parts(geometry) if not p.is_empty for r in (p.exterior, *p.interiors)]


def _valid(geometries: np.ndarray) -> np.ndarray:
    """Valid polygonal geometries: invalid ones repaired, anything not polygonal (lines, points) dropped."""
    geometries = np.asarray(geometries, dtype=object).copy()
    invalid = ~shapely.is_valid(geometries)
    if invalid.any():
        geometries[invalid] = shapely.make_valid(
            geometries[invalid], method="structure", keep_collapsed=False
        )
    odd = ~np.isin(shapely.get_type_id(geometries), (3, 6))  # Polygon, MultiPolygon
    for i in np.flatnonzero(odd):
        polygons = [p for p in shapely.get_parts(geometries[i]) if isinstance(p, Polygon) and not p.is_empty]
        geometries[i] = shapely.MultiPolygon(polygons) if len(polygons) != 1 else polygons[0]
    return geometries
