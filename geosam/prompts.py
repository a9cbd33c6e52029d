"""Prompts in map coordinates: point and box layers and command-line prompts, as groups in the scene CRS.

A prompt group is one object to find: positive and negative points and at most one box, all in the
scene's CRS, with the id and attribute fields it came with. Vector layers are read with pyogrio and
reprojected; command-line prompts are parsed here too, so both end up as the same small values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from rasterio.crs import CRS

from geosam.errors import InputError, reason
from geosam.georef import is_remote

POSITIVE = {"1", "true", "yes", "positive", "pos", "foreground", "fg", "+", "+1", "include", "in"}
NEGATIVE = {"0", "false", "no", "negative", "neg", "background", "bg", "-", "-1", "exclude", "out"}
DEFAULT_LABEL_FIELD = "label"  # read when present, unless another field is named
EDGE_POINTS = 32  # a box's edges are densified to this many points each before reprojection
RESERVED = ("id", "score", "stability", "area_m2", "geometry")  # output columns a prompt field cannot take


class PromptError(InputError):
    """A prompt file or a command-line prompt cannot be used as given."""


@dataclass(frozen=True)
class PromptGroup:
    """One object to segment: points (x, y) with labels (1 inside, 0 outside) and/or one box, in the scene
    CRS."""

    id: Any
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None  # xmin, ymin, xmax, ymax
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.points) != len(self.labels):
            raise ValueError("a prompt group needs one label per point")
        if self.box is None and 1 not in self.labels:
            raise PromptError(
                f"prompt {self.id}: give a box or at least one positive point, not only negative ones"
            )
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise PromptError(
                f"prompt {self.id}: box {_fmt(self.box)} is empty: use XMIN < XMAX and YMIN < YMAX"
            )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the box and the points together."""
        xy = np.array(self.points, float).reshape(-1, 2)
        if self.box is not None:
            xy = np.vstack([xy, [self.box[:2], self.box[2:]]])
        return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())

    @property
    def kind(self) -> str:
        return "+".join(
            k for k, present in (("box", self.box is not None), ("points", bool(self.points))) if present
        )


def _fmt(values: Iterable[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def parse_crs(text: str) -> CRS:
    """A CRS from 'EPSG:4326', a WKT or PROJ string; PromptError when it is none."""
    try:
        return CRS.from_user_input(text)
    except Exception as exc:  # noqa: BLE001 - CRSError or not, any failure means the same to the user
        raise PromptError(f"{text!r} is not a CRS ({reason(exc)}); give e.g. EPSG:4326") from None


def parse_coordinates(text: str, count: int, what: str) -> tuple[tuple[float, ...], str | None]:
    """``count`` numbers separated by commas, then optionally a group id: 'X,Y' or 'X,Y,ID'."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (count, count + 1) or "" in parts:
        raise PromptError(
            f"{what} {text!r}: give {count} numbers separated by commas, optionally then a group id"
        )
    try:
        numbers = tuple(float(p) for p in parts[:count])
    except ValueError:
        raise PromptError(f"{what} {text!r}: the first {count} values must be numbers") from None
    if not all(math.isfinite(v) for v in numbers):
        raise PromptError(f"{what} {text!r}: coordinates must be finite")
    return numbers, parts[count] if len(parts) > count else None


def command_line_groups(
    points: Sequence[str] = (),
    negative_points: Sequence[str] = (),
    boxes: Sequence[str] = (),
) -> list[PromptGroup]:
    """Groups from '--point X,Y[,ID]', '--negative-point X,Y[,ID]' and '--box XMIN,YMIN,XMAX,YMAX[,ID]'.

    Without an ID every positive point and every box is its own object, numbered 1, 2, ... in the
    order given (skipping numbers used as explicit ids); prompts with the same ID form one object.
    A negative point without an ID belongs to the only object, and needs an ID when there are more.
    Coordinates are in whatever CRS the caller names; nothing is reprojected here.
    """
    items: list[tuple[str, tuple[float, ...], str | None]] = []
    for text in points:
        xy, gid = parse_coordinates(text, 2, "--point")
        items.append(("point", xy, gid))
    for text in boxes:
        box, gid = parse_coordinates(text, 4, "--box")
        items.append(("box", box, gid))
    negatives = [parse_coordinates(text, 2, "--negative-point") for text in negative_points]
    used = {_id_value(gid) for _, _, gid in items if gid is not None}
    counter = iter(n for n in range(1, 1 << 30) if n not in used)
    order: dict[Any, dict[str, Any]] = {}
    for kind, values, gid in items:
        key = _id_value(gid) if gid is not None else next(counter)
        group = order.setdefault(key, {"points": [], "labels": [], "box": None})
        if kind == "point":
            group["points"].append(values)
            group["labels"].append(1)
        elif group["box"] is not None:
            raise PromptError(f"--box: group {key} has two boxes; a group takes at most one box")
        else:
            group["box"] = values
    for xy, gid in negatives:
        if gid is None:
            if len(order) != 1:
                raise PromptError(
                    f"--negative-point {_fmt(xy)}: say which object it belongs to, "
                    f"e.g. --negative-point {_fmt(xy)},1"
                )
            key = next(iter(order))
        else:
            key = _id_value(gid)
        if key not in order:
            raise PromptError(f"--negative-point {_fmt(xy)}: no --point or --box has group id {key}")
        order[key]["points"].append(xy)
        order[key]["labels"].append(0)
    return [PromptGroup(key, tuple(g["points"]), tuple(g["labels"]), g["box"]) for key, g in order.items()]


def argument_groups(
    points: Sequence[Sequence[float]] | None,
    labels: Sequence[int] | None,
    boxes: Sequence[Sequence[float]] | None,
) -> list[PromptGroup]:
    """Prompt groups of points (with labels, default 1) and boxes given as arguments, as in
    ``Session.predict``: one group of the points and at most one box, or one group per box."""
    xys = [(float(x), float(y)) for x, y in points or ()]
    rects = [(float(a), float(b), float(c), float(d)) for a, b, c, d in boxes or ()]
    marks = tuple(int(v) for v in labels) if labels is not None else (1,) * len(xys)
    if len(marks) != len(xys):
        raise PromptError(f"{len(marks)} labels for {len(xys)} points: give one label per point")
    if not xys and not rects:
        raise PromptError("no prompts: give points, boxes or a prompt file")
    if xys and len(rects) > 1:
        raise PromptError("points go with one box at most: call predict once per box, or use a prompt file")
    if xys:
        return [PromptGroup(1, tuple(xys), marks, rects[0] if rects else None)]
    return [PromptGroup(i + 1, (), (), b) for i, b in enumerate(rects)]


def _id_value(text: str) -> Any:
    return int(text) if text.lstrip("-").isdigit() else text


def read_prompts(
    path: str | Path,
    *,
    layer: str | int | None = None,
    id_field: str | None = None,
    label_field: str | None = None,
) -> tuple[list[PromptGroup], CRS]:
    """Prompt groups from a vector file (GeoPackage, GeoJSON, Shapefile, GeoParquet, ...) in the file's own
    CRS: its ``layer``, or the one named as ``FILE|layername=NAME``, or its first with geometries (read by
    ``geosam.evaluation.read_layer``).

    Points (and MultiPoints) are point prompts; polygons are box prompts (their envelope). Features
    sharing a value of ``id_field`` form one object (without it every feature is one, numbered by
    position); ``label_field`` (default: a field named 'label' where there is one) marks points
    positive (1, true, positive, fg, ...) or negative (0, false, negative, bg, ...). The other fields
    of a group's first feature are carried over to its polygon.
    """
    from geosam.evaluation import read_layer, vector_source

    path, named = vector_source(path)
    if named is not None and layer is not None and str(layer) != named:
        raise PromptError(
            f"{path}: two layers named ({named} and {layer}); name one, as --layer or FILE|layername="
        )
    layer = named if named is not None else layer
    if not is_remote(path) and not Path(path).exists():
        raise PromptError(f"{path}: no such prompt file; check the path")
    try:
        frame = read_layer(path, layer)
    except InputError as exc:
        raise PromptError(str(exc)) from None
    return frame_groups(frame, path, id_field=id_field, label_field=label_field), frame.crs


def frame_groups(
    frame, name: str = "prompts", *, id_field: str | None = None, label_field: str | None = None
) -> list[PromptGroup]:
    """Prompt groups from a GeoDataFrame of points and polygons, in its own CRS (see ``read_prompts``)."""
    fields = _check_frame(frame, name, id_field, label_field)
    if label_field is None and DEFAULT_LABEL_FIELD in fields:
        label_field = DEFAULT_LABEL_FIELD
    geometry = np.asarray(frame.geometry.values, dtype=object)
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    if missing.all():
        raise PromptError(f"{name}: every feature has an empty geometry; there is nothing to prompt with")
    kinds = _kinds(geometry, missing, name)
    carried = [f for f in fields if f not in (id_field, label_field)]
    groups: dict[Any, dict[str, Any]] = {}
    for i in np.flatnonzero(~missing):
        row = frame.iloc[i]
        key = _plain(row[id_field]) if id_field is not None else i + 1
        if key is None:
            raise PromptError(f"{name}: feature {i + 1} has no value in id field {id_field!r}")
        group = groups.setdefault(
            key, {"points": [], "labels": [], "box": None, "attributes": _attributes(row, carried)}
        )
        if kinds[i] == "box":
            if group["box"] is not None:
                raise PromptError(
                    f"{name}: prompt {key} has two polygons (boxes); a group takes at most one box"
                )
            group["box"] = tuple(float(v) for v in shapely.bounds(geometry[i]))
            continue
        label = _label(row[label_field], name, int(i)) if label_field is not None else 1
        for xy in shapely.get_coordinates(geometry[i]):
            group["points"].append((float(xy[0]), float(xy[1])))
            group["labels"].append(label)
    return [
        PromptGroup(key, tuple(g["points"]), tuple(g["labels"]), g["box"], g["attributes"])
        for key, g in groups.items()
    ]


def _check_frame(frame, name: str, id_field: str | None, label_field: str | None) -> list[str]:
    """The frame's attribute fields, once it has a CRS, features, and the fields asked for."""
    if frame.crs is None:
        raise PromptError(
            f"{name}: the prompts have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:4326) "
            "so they can be placed on the scene"
        )
    if len(frame) == 0:
        raise PromptError(f"{name}: no prompt features; the layer is empty")
    fields = [c for c in frame.columns if c != frame.geometry.name]
    for option, value in (("--id-field", id_field), ("--label-field", label_field)):
        if value is not None and value not in fields:
            raise PromptError(
                f"{name} has no field {value!r} ({option}); fields: {', '.join(fields) or 'none'}"
            )
    return fields


def _kinds(geometry: np.ndarray, missing: np.ndarray, name: str) -> np.ndarray:
    """Per feature, "point" (points, multipoints), "box" (polygons, multipolygons) or "other" (missing
    ones only: other types of geometry are an error)."""
    types = shapely.get_type_id(geometry)
    kinds = np.where(np.isin(types, (0, 4)), "point", np.where(np.isin(types, (3, 6)), "box", "other"))
    wrong = sorted(
        {
            shapely.geometry.base.GEOMETRY_TYPES[t]
            for t, k, m in zip(types, kinds, missing, strict=True)
            if k == "other" and not m
        }
    )
    if wrong:
        raise PromptError(
            f"{name}: {', '.join(wrong)} geometries cannot be prompts; "
            "use points (positive or negative) and polygons (boxes)"
        )
    return kinds


def _plain(value: Any) -> Any:
    """A pandas/numpy scalar as a plain Python value; None for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _attributes(row, fields: Sequence[str]) -> dict[str, Any]:
    return {(f"prompt_{f}" if f in RESERVED else f): _plain(row[f]) for f in fields}


def _label(value: Any, name: str, index: int) -> int:
    text = str(_plain(value)).strip().lower()
    if text in POSITIVE:
        return 1
    if text in NEGATIVE:
        return 0
    raise PromptError(
        f"{name}: feature {index + 1} has label {value!r}; "
        "use 1/positive/fg for inside and 0/negative/bg for outside"
    )


def reproject(groups: Sequence[PromptGroup], source: CRS | None, target: CRS | None) -> list[PromptGroup]:
    """Groups from ``source`` to ``target`` CRS; boxes become the envelope of their densified outline."""
    if source is None or target is None or CRS.from_user_input(source) == CRS.from_user_input(target):
        return list(groups)
    to = Transformer.from_crs(
        CRS.from_user_input(source).to_wkt(), CRS.from_user_input(target).to_wkt(), always_xy=True
    )
    out = []
    for g in groups:
        points: tuple[tuple[float, float], ...] = ()
        if g.points:
            xy = np.array(g.points, float)
            x, y = to.transform(xy[:, 0], xy[:, 1])
            points = tuple(zip(map(float, x), map(float, y), strict=True))
        box = None
        if g.box is not None:
            outline = shapely.segmentize(
                shapely.box(*g.box), max(g.box[2] - g.box[0], g.box[3] - g.box[1]) / EDGE_POINTS
            )
            xy = shapely.get_coordinates(outline)
            x, y = to.transform(xy[:, 0], xy[:, 1])
            box = (float(np.min(x)), float(np.min(y)), float(np.max(x)), float(np.max(y)))
        if not np.isfinite([*np.ravel(points), *(box or ())]).all():
            raise PromptError(
                f"prompt {g.id} cannot be placed in the scene's CRS (coordinates out of range for it)"
            )
        out.append(PromptGroup(g.id, points, g.labels, box, g.attributes))
    return out
