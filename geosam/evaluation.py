"""Predicted polygons scored against reference ones: one-to-one matches by IoU, as SpaceNet scores buildings.

Matching. Every prediction and reference object that overlap (an STRtree query) get their IoU, the
area of their intersection over that of their union. Pairs with an IoU of at least the threshold
(and of the same class, where both files have the class field) are candidates, taken in descending
IoU (ties: the earlier prediction, then the earlier reference); a pair is matched when neither of
its objects is matched yet, so every object is matched at most once. SpaceNet's scorer takes the
predictions in file order instead, each to the unmatched reference of highest IoU. The two agree
whenever no object has two candidates: always when the objects within each file do not overlap one
another and the threshold is above 0.5 (an object cannot have an IoU above 0.5 with two disjoint
others). Where they differ (a lower threshold, overlapping predictions), descending IoU keeps the
closer match and does not depend on the order of the features in a file.

Scores. A matched pair is a true positive, an unmatched prediction a false positive, an unmatched
reference a miss (false negative). Precision is TP / predictions, recall TP / references, F1
2·TP / (predictions + references) (their harmonic mean), mean IoU the mean over the matched pairs.
A score whose denominator is 0 (no predictions, no references, no matches) is None.
By size bin and by class, a match counts in its reference's group (the bin of the reference's area,
its class), a false positive or a miss in its own, and each group is scored by the same formulas
over its TP, FP and FN; the mean IoU of a group is over the matches it counts.

Where. Both files are reprojected to REF's CRS, or where that is geographic or Mercator, to the UTM
zone of the objects (areas in m²), then clipped to the region evaluated: the AOI's polygons with
an AOI, else the intersection of the two files' bounding boxes. An object partly outside counts
with its part inside (both files are cut alike, so an object and its prediction still match); one
with nothing inside is left out. Invalid polygons are repaired (GEOS's make_valid, keeping their
polygonal parts); features without a geometry are left out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from pyproj import CRS

from geosam import atomic, output, settings, style
from geosam._version import __version__
from geosam.errors import InputError, reason
from geosam.georef import is_remote, planar
from geosam.settings import EVALUATION, Evaluation

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)
LAYER_OPTION = "|layername="  # FILE|layername=NAME: a layer of a file, as QGIS writes a layer's source
LAYER = "outcomes"  # the layer of the outcomes file
STYLE = style.Style(
    "geosam: evaluation outcomes",
    "Outlines by outcome: true positives green, false positives orange, misses magenta",
    style.outcome_qml(),
)
NO_CLASS = "(none)"  # the class of an object whose class field is empty
MATCHING = "one-to-one, greedy by descending IoU"
POLYGONAL = (3, 6)  # shapely's type ids of Polygon and MultiPolygon
COLLECTION = 7  # GeometryCollection: what make_valid and clipping may return


@dataclass(frozen=True)
class Scores:
    """Counts and scores of one group of objects: all of them, a size bin or a class.

    A match counts in its reference's group, an unmatched prediction in its own, so that
    ``predictions`` = TP + FP and ``references`` = TP + FN in every group. A score whose denominator
    is 0 is None; ``predictions``, ``false_positives``, ``precision`` and ``f1`` are None per class
    where only the reference has the class field.
    """

    references: int
    predictions: int | None
    true_positives: int
    false_positives: int | None
    false_negatives: int  # misses
    precision: float | None
    recall: float | None
    f1: float | None
    mean_iou: float | None  # over the matched pairs whose reference is counted here


@dataclass(frozen=True)
class EvaluationResult:
    """What ``evaluate`` found: scores overall, by size bin and by class, and every object's outcome.

    ``outcomes`` has one feature per true positive (the prediction's polygon), false positive and
    miss (the reference's polygon), as clipped to the region evaluated, in REF's CRS: ``outcome``,
    ``pred_id`` and ``ref_id`` (feature ids in their files, or index values of a GeoDataFrame),
    ``iou`` (the match's; for a false positive or a miss, its highest IoU with any object of the
    other file, whatever its class), ``area_m2`` (of the polygon), ``size_bin`` and ``class`` (the
    ones it counts in; a true positive's are its reference's).
    """

    overall: Scores
    by_size: Mapping[str, Scores]
    by_class: Mapping[str, Scores]
    iou: float
    class_field: str | None
    size_bins: tuple[float, ...]
    crs: str | None  # the CRS the objects were matched and measured in
    region: tuple[float, ...] | None  # bounds of the region evaluated, in ``crs``
    prediction: str
    reference: str
    aoi: str | None
    outcomes: gpd.GeoDataFrame = dataclasses.field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain values (JSON's), without the outcomes."""
        return {
            "prediction": self.prediction,
            "reference": self.reference,
            "aoi": self.aoi,
            "iou_threshold": self.iou,
            "matching": MATCHING,
            "class_field": self.class_field,
            "crs": self.crs,
            "region": list(self.region) if self.region is not None else None,
            "size_bins_m2": list(self.size_bins),
            "overall": dataclasses.asdict(self.overall),
            "by_size": {k: dataclasses.asdict(v) for k, v in self.by_size.items()},
            "by_class": {k: dataclasses.asdict(v) for k, v in self.by_class.items()},
            "geosam": __version__,
        }

    def summary(self) -> str:
        """A table of the scores: all objects, each size bin, each class."""
        head = f"{'':24} {'refs':>6} {'preds':>6} {'TP':>6} {'FP':>6} {'FN':>6}"
        head += f" {'precision':>9} {'recall':>6} {'F1':>6} {'mean IoU':>8}"
        rows = [("all", self.overall)]
        rows += [(f"size {k} m²", v) for k, v in self.by_size.items()]
        rows += [(f"class {k}", v) for k, v in self.by_class.items()]
        return "\n".join([head, *(_row(name, s) for name, s in rows)])

    def write_report(self, path: str | Path, overwrite: bool = False) -> None:
        """Write ``to_dict()`` as JSON to ``path`` (atomically; an existing file only with ``overwrite``)."""
        path = Path(path)
        output.check_output(path, overwrite, formats={".json": "JSON"})
        atomic.write_bytes(path, json.dumps(self.to_dict(), indent=2).encode() + b"\n")

    def write_outcomes(self, path: str | Path, overwrite: bool = False) -> None:
        """Write the outcomes as one layer ``outcomes`` (see ``geosam.write`` for the formats).

        A GeoPackage is styled for QGIS (outlines by outcome) and keeps the report as JSON in the
        layer's metadata (``GEOSAM_EVALUATION``).
        """
        output.write_layers(
            {LAYER: self.outcomes}, Path(path), overwrite=overwrite,
            metadata={LAYER: {"GEOSAM_EVALUATION": json.dumps(self.to_dict())}}, styles={LAYER: STYLE},
        )  # fmt: skip


def _row(name: str, s: Scores) -> str:
    def count(v: int | None) -> str:
        return "-" if v is None else str(v)

    def score(v: float | None, width: int) -> str:
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.3f}"

    return (
        f"{name[:24]:24} {s.references:>6} {count(s.predictions):>6} {s.true_positives:>6}"
        f" {count(s.false_positives):>6} {s.false_negatives:>6} {score(s.precision, 9)}"
        f" {score(s.recall, 6)} {score(s.f1, 6)} {score(s.mean_iou, 8)}"
    )


@dataclass(frozen=True)
class _Objects:
    """One file's polygons, in the CRS evaluated: their ids (a pandas Index), geometries and classes."""

    ids: Any
    geometries: np.ndarray
    classes: np.ndarray | None

    def take(self, keep: np.ndarray) -> _Objects:
        classes = self.classes[keep] if self.classes is not None else None
        return _Objects(self.ids[keep], self.geometries[keep], classes)


@dataclass(frozen=True)
class _Matches:
    """Per prediction and per reference: the index of the match (-1: none), its IoU, the best IoU."""

    pred: np.ndarray
    ref: np.ndarray
    ref_iou: np.ndarray
    pred_best: np.ndarray
    ref_best: np.ndarray


def check_size_bins(bins: Sequence[float]) -> tuple[float, ...]:
    """The size bins' edges in m² as a tuple, or an InputError unless they are positive and ascending."""
    edges = tuple(float(b) for b in bins)
    low = settings.item_limits(Evaluation, "size_bins")["gt"]
    if not edges or edges[0] <= low or any(b <= a for a, b in pairwise(edges)):
        raise InputError(
            f"size bins {','.join(f'{b:g}' for b in edges)}: give ascending areas above {low:g} m², e.g. 100,1000"
        )
    return edges


def evaluate(
    pred: str | Path | gpd.GeoDataFrame,
    ref: str | Path | gpd.GeoDataFrame,
    iou: float = EVALUATION.iou,
    class_field: str | None = EVALUATION.class_field,
    aoi: str | Path | gpd.GeoDataFrame | None = None,
    size_bins: Sequence[float] = EVALUATION.size_bins,
) -> EvaluationResult:
    """Score predicted polygons against reference ones, SpaceNet's way: one-to-one matches by IoU.

    How objects are matched and scored, and where, is described in ``geosam.evaluation``.

    Args:
        pred: The predictions: a vector file (GeoPackage, GeoJSON, Shapefile: its first layer with
            geometries, or the one named as ``FILE|layername=NAME``; GeoParquet) or a GeoDataFrame of
            polygons.
        ref: The reference objects, the same way.
        iou: A prediction and a reference object match when their IoU is at least this.
        class_field: Field of the object classes: objects match within their class where both
            ``pred`` and ``ref`` have it; where only ``ref`` has it, matching ignores classes and
            recall is given per class.
        aoi: Polygons of the area to evaluate, a file or a GeoDataFrame [default: the intersection
            of the bounding boxes of ``pred`` and ``ref``].
        size_bins: Edges of the size bins in m², ascending.

    Returns:
        An ``EvaluationResult``: the scores, ``to_dict()``, ``summary()``, the ``outcomes``
        GeoDataFrame, ``write_report()`` and ``write_outcomes()``.

    Raises:
        InputError: A file is missing or unreadable; it has geometries other than polygons; the
            class field is missing; one file has a CRS and another none; the objects of ``pred``
            and ``ref`` do not overlap (or not the AOI); or ``iou`` or ``size_bins`` are out of range.
    """
    if not 0 < iou <= 1:
        raise InputError(f"IoU threshold {iou:g} is out of range: use more than 0, at most 1")
    edges = check_size_bins(size_bins)
    names = (_name(pred, "predictions"), _name(ref, "references"), _name(aoi, "AOI"))
    preds, refs = _read(pred, names[0]), _read(ref, names[1])
    areas = _read(aoi, names[2]) if aoi is not None else None
    in_pred = _check_class_field(preds, refs, class_field, names)
    _check_crs(preds, refs, areas, names)
    work = _working_crs(refs.crs, [preds, refs])
    p = _objects(preds, work, class_field if in_pred else None)
    r = _objects(refs, work, class_field)
    region = _region(p, r, _objects(areas, work, None) if areas is not None else None)
    if region is not None:
        p, r = _inside(p, r, region, f"the AOI {names[2]}" if areas is not None else " and ".join(names[:2]))
    matches = _match(p, r, iou)
    factor = work.axis_info[0].unit_conversion_factor ** 2 if work is not None else 1.0
    sizes = _Sizes(edges, shapely.area(p.geometries) * factor, shapely.area(r.geometries) * factor)
    outcomes = _outcomes(p, r, matches, sizes, class_field)
    return EvaluationResult(
        overall=_scores(matches, np.ones(len(r.ids), bool), np.ones(len(p.ids), bool)),
        by_size={label: _scores(matches, sizes.ref == i, sizes.pred == i) for i, label in enumerate(sizes.labels)},
        by_class=_by_class(r.classes, p.classes, matches),
        iou=iou, class_field=class_field, size_bins=edges, crs=work.to_string() if work is not None else None,
        region=tuple(float(v) for v in shapely.bounds(region)) if region is not None else None,
        prediction=names[0], reference=names[1], aoi=names[2] if aoi is not None else None,
        outcomes=_frame(outcomes, work, refs.crs),
    )  # fmt: skip


def _name(source: Any, default: str) -> str:
    """A path as text; a GeoDataFrame by what it stands for."""
    return default if source is None or hasattr(source, "geometry") else str(source)


def _read(source: str | Path | gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    """The polygons of a file (``read_vector``) or of a frame."""
    return _check_polygons(read_vector(source), name)


def vector_source(source: str | Path) -> tuple[str, str | None]:
    """The file and the layer of a vector source: ``FILE|layername=NAME`` (a QGIS layer's source) names
    a layer of the file; a plain path names none."""
    path, named, layer = str(source).partition(LAYER_OPTION)
    if named and (not layer or "|" in layer):
        raise InputError(f"{source}: give one layer as FILE|layername=NAME")
    return path, layer or None


def read_vector(source: str | Path | gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The GeoDataFrame of a vector source (``vector_source``, read by ``read_layer``) or the frame itself."""
    import geopandas as gpd

    if isinstance(source, gpd.GeoDataFrame):
        return source
    return read_layer(*vector_source(source))


def read_layer(path: str, layer: str | int | None = None) -> gpd.GeoDataFrame:
    """A layer of a vector file (GeoPackage, GeoJSON, Shapefile, GeoParquet, ...), feature ids as index:
    the one named (or numbered), else the first with geometries (e.g. not QGIS's ``layer_styles``), with
    a warning that names it where there are more; ``InputError`` where it cannot be read."""
    import geopandas as gpd
    import pyogrio

    if not is_remote(path) and not Path(path).exists():
        raise InputError(f"{path}: no such file; check the path")
    parquet = Path(path).suffix.lower() in (".parquet", ".geoparquet")
    if parquet and layer is not None:
        raise InputError(f"{path}: a GeoParquet file has no layers; give the file alone")
    try:
        if parquet:
            return gpd.read_parquet(path)
        spatial = [name for name, kind in pyogrio.list_layers(path) if kind is not None]
        return pyogrio.read_dataframe(path, layer=_layer(path, layer, spatial), fid_as_index=True)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - DataSourceError, ArrowInvalid, ...: all mean "cannot read it"
        raise InputError(
            f"{path}: not a readable vector file ({reason(exc)}); give a GeoPackage, GeoJSON, Shapefile "
            "or GeoParquet file"
        ) from None


def _layer(path: str, layer: str | int | None, spatial: list[str]) -> str | int:
    """The layer to read of a file whose layers with geometries are ``spatial``: the one named or
    numbered, or the first (with a warning where there are more)."""
    if isinstance(layer, int):
        return layer
    if layer is not None:
        if layer not in spatial:
            among = f"name one of {', '.join(spatial)}" if spatial else "it has none"
            raise InputError(f"{path} has no layer {layer!r} with geometries: {among}")
        return layer
    if len(spatial) > 1:
        log.warning(
            "%s has %d layers with geometries (%s): reading the first, %s; to read another, give "
            "'FILE|layername=LAYER'",
            path, len(spatial), ", ".join(spatial), spatial[0],
        )  # fmt: skip
    return spatial[0] if spatial else 0


def _check_class_field(
    preds: gpd.GeoDataFrame, refs: gpd.GeoDataFrame, class_field: str | None, names: Sequence[str]
) -> bool:
    """Whether the predictions have the class field too; an InputError when the reference lacks it."""
    if class_field is None:
        return False
    fields = [c for c in refs.columns if c != refs.geometry.name]
    if class_field not in fields:
        raise InputError(
            f"{names[1]} has no field {class_field!r} (--class-field); fields: {', '.join(map(str, fields)) or 'none'}"
        )
    return class_field in preds.columns and class_field != preds.geometry.name


def _check_crs(
    preds: gpd.GeoDataFrame, refs: gpd.GeoDataFrame, areas: gpd.GeoDataFrame | None, names: Sequence[str]
) -> None:
    """Every file has a CRS, or none has (their coordinates are then taken as they are)."""
    frames = [(preds, names[0]), (refs, names[1])] + ([(areas, names[2])] if areas is not None else [])
    missing = [name for frame, name in frames if frame.crs is None]
    if missing and len(missing) < len(frames):
        raise InputError(
            f"{missing[0]} has no CRS and the others have one; set its CRS (e.g. ogr2ogr -a_srs EPSG:32633)"
        )


def _working_crs(crs: Any, frames: Sequence[gpd.GeoDataFrame]) -> CRS | None:
    """REF's CRS where planar areas are true areas; else the UTM zone of the objects (None: no CRS)."""
    import geopandas as gpd

    if crs is None:
        return None
    crs = CRS.from_user_input(crs)
    if planar(crs):
        return crs
    every = gpd.GeoSeries(
        np.concatenate([np.asarray(f.to_crs(crs).geometry.values, dtype=object) for f in frames]), crs=crs
    )
    every = every[~(every.is_empty | every.isna())]
    return every.estimate_utm_crs() if len(every) else crs


def _check_polygons(frame: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    """The frame, once its geometries are polygons (or missing)."""
    types = shapely.get_type_id(np.asarray(frame.geometry.values, dtype=object))
    wrong = sorted({shapely.geometry.base.GEOMETRY_TYPES[t] for t in set(types.tolist()) - {-1, *POLYGONAL}})
    if wrong:
        raise InputError(f"{name}: {', '.join(wrong)} geometries cannot be scored; give polygons")
    return frame


def _objects(frame: gpd.GeoDataFrame, work: CRS | None, class_field: str | None) -> _Objects:
    """The frame's polygons in the CRS ``work``, repaired; features without a geometry left out."""
    geometries = np.asarray(frame.geometry.values, dtype=object)
    kept = frame[~(shapely.is_missing(geometries) | shapely.is_empty(geometries))]
    if work is not None and kept.crs is not None:
        kept = kept.to_crs(work)
    repaired = _polygonal(
        shapely.make_valid(shapely.force_2d(np.asarray(kept.geometry.values, dtype=object)))
    )
    classes = None
    if class_field is not None:
        classes = np.array([NO_CLASS if _missing(v) else str(v) for v in kept[class_field]], dtype=object)
    return _Objects(kept.index, repaired, classes)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN


def _region(p: _Objects, r: _Objects, areas: _Objects | None) -> shapely.Geometry | None:
    """The AOI's polygons; else the intersection of the bounding boxes of the non-empty files."""
    if areas is not None:
        return shapely.union_all(areas.geometries)
    boxes = [shapely.box(*shapely.total_bounds(o.geometries)) for o in (p, r) if len(o.ids)]
    return shapely.intersection_all(boxes) if boxes else None


def _inside(p: _Objects, r: _Objects, region: shapely.Geometry, where: str) -> tuple[_Objects, _Objects]:
    """Both files clipped to ``region`` (``where``: what it is); an InputError where nothing is left."""
    before = len(p.ids) + len(r.ids)
    p, r = _clip(p, region), _clip(r, region)
    if before and not len(p.ids) + len(r.ids):
        raise InputError(f"no object lies where {where} overlap; check that they cover the same place")
    return p, r


def _clip(objects: _Objects, region: shapely.Geometry) -> _Objects:
    """The objects' parts inside ``region``; objects with no area inside are left out."""
    shapely.prepare(region)
    geometries = objects.geometries.copy()
    out = ~shapely.covers(region, geometries)
    geometries[out] = _polygonal(shapely.intersection(geometries[out], region))
    keep = shapely.area(geometries) > 0
    return dataclasses.replace(objects.take(keep), geometries=geometries[keep])


def _polygonal(geometries: np.ndarray) -> np.ndarray:
    """The polygonal parts of each geometry (make_valid keeps collapsed parts as lines, a clip adds the
    lines and points where edges touch)."""
    out = geometries.copy()
    for i in np.flatnonzero(shapely.get_type_id(geometries) == COLLECTION):
        parts = shapely.get_parts(geometries[i])
        out[i] = shapely.union_all(parts[np.isin(shapely.get_type_id(parts), POLYGONAL)])
    return out


def _match(p: _Objects, r: _Objects, threshold: float) -> _Matches:
    """One-to-one matches: candidate pairs in descending IoU, each taken while both objects are free."""
    pi, ri = shapely.STRtree(r.geometries).query(p.geometries, predicate="intersects")
    inter = shapely.area(shapely.intersection(p.geometries[pi], r.geometries[ri]))
    union = shapely.area(p.geometries)[pi] + shapely.area(r.geometries)[ri] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    pred_best, ref_best = np.zeros(len(p.ids)), np.zeros(len(r.ids))
    np.maximum.at(pred_best, pi, iou)
    np.maximum.at(ref_best, ri, iou)
    candidate = iou >= threshold
    if p.classes is not None and r.classes is not None:
        candidate &= p.classes[pi] == r.classes[ri]
    pi, ri, iou = pi[candidate], ri[candidate], iou[candidate]
    pred, ref, ref_iou = np.full(len(p.ids), -1), np.full(len(r.ids), -1), np.full(len(r.ids), np.nan)
    for k in np.lexsort((ri, pi, -iou)):  # descending IoU; ties: earlier prediction, earlier reference
        if pred[pi[k]] < 0 and ref[ri[k]] < 0:
            pred[pi[k]], ref[ri[k]], ref_iou[ri[k]] = ri[k], pi[k], iou[k]
    return _Matches(pred, ref, ref_iou, pred_best, ref_best)


@dataclass(frozen=True)
class _Sizes:
    """The size bins (edges in m²) and each prediction's and reference's bin."""

    edges: tuple[float, ...]
    pred_area: np.ndarray
    ref_area: np.ndarray

    @property
    def pred(self) -> np.ndarray:
        return np.digitize(self.pred_area, self.edges)

    @property
    def ref(self) -> np.ndarray:
        return np.digitize(self.ref_area, self.edges)

    @property
    def labels(self) -> list[str]:
        """'<100', '100-1000', '>=1000' for edges 100, 1000."""
        e = [f"{v:g}" for v in self.edges]
        return [f"<{e[0]}", *(f"{a}-{b}" for a, b in pairwise(e)), f">={e[-1]}"]


def _scores(m: _Matches, refs: np.ndarray, preds: np.ndarray | None) -> Scores:
    """The scores of a group: ``refs`` selects its references, ``preds`` its predictions, of which the
    unmatched ones count (a match counts with its reference); None: predictions have no group."""
    references = int(refs.sum())
    tp = int((m.ref[refs] >= 0).sum())
    ious = m.ref_iou[refs & (m.ref >= 0)]
    recall = tp / references if references else None
    mean_iou = float(ious.mean()) if len(ious) else None
    if preds is None:
        return Scores(references, None, tp, None, references - tp, None, recall, None, mean_iou)
    fp = int((m.pred[preds] < 0).sum())
    f1 = 2 * tp / (2 * tp + fp + references - tp) if references + fp else None
    precision = tp / (tp + fp) if tp + fp else None
    return Scores(references, tp + fp, tp, fp, references - tp, precision, recall, f1, mean_iou)


def _by_class(refs: np.ndarray | None, preds: np.ndarray | None, m: _Matches) -> dict[str, Scores]:
    """Scores per class (``refs``, ``preds``: each object's class; None: no class field)."""
    if refs is None:
        return {}
    names = set(refs) | (set(preds) if preds is not None else set())
    return {
        name: _scores(m, refs == name, preds == name if preds is not None else None) for name in sorted(names)
    }


def _outcomes(
    p: _Objects, r: _Objects, m: _Matches, sizes: _Sizes, class_field: str | None
) -> dict[str, Any]:
    """The columns of the outcomes: true positives (predictions), false positives, misses (references)."""
    import pandas as pd

    tp, fp, fn = np.flatnonzero(m.pred >= 0), np.flatnonzero(m.pred < 0), np.flatnonzero(m.ref < 0)
    area = np.concatenate([sizes.pred_area[tp], sizes.pred_area[fp], sizes.ref_area[fn]])
    counted = np.concatenate([sizes.ref_area[m.pred[tp]], sizes.pred_area[fp], sizes.ref_area[fn]])
    kind = "Int64" if all(pd.api.types.is_integer_dtype(o.ids) for o in (p, r)) else "string"
    none = [None] * len(fn)
    columns: dict[str, Any] = {
        "outcome": pd.array(
            [v for (v, _, _), n in zip(style.OUTCOMES, (tp, fp, fn), strict=True) for _ in n], dtype="string"
        ),
        "pred_id": pd.array([*_ids(p.ids[tp], kind), *_ids(p.ids[fp], kind), *none], dtype=kind),
        "ref_id": pd.array(
            [*_ids(r.ids[m.pred[tp]], kind), *[None] * len(fp), *_ids(r.ids[fn], kind)], dtype=kind
        ),
        "iou": np.concatenate([m.ref_iou[m.pred[tp]], m.pred_best[fp], m.ref_best[fn]]),
        "area_m2": area,
        "size_bin": pd.array(np.array(sizes.labels)[np.digitize(counted, sizes.edges)], dtype="string"),
    }
    if class_field is not None and r.classes is not None:
        pred_classes = p.classes[fp] if p.classes is not None else [None] * len(fp)
        columns["class"] = pd.array([*r.classes[m.pred[tp]], *pred_classes, *r.classes[fn]], dtype="string")
    columns["geometry"] = np.concatenate([p.geometries[tp], p.geometries[fp], r.geometries[fn]])
    return columns


def _ids(index: Any, kind: str) -> list[Any]:
    return [int(v) for v in index] if kind == "Int64" else [str(v) for v in index]


def _frame(columns: dict[str, Any], work: CRS | None, crs: Any) -> gpd.GeoDataFrame:
    """The outcomes as a GeoDataFrame in REF's CRS ``crs`` (from ``work``, the CRS evaluated)."""
    import geopandas as gpd

    frame = gpd.GeoDataFrame(columns, geometry="geometry", crs=work)
    return frame.to_crs(crs) if work is not None and work != CRS.from_user_input(crs) else frame
