"""Objects through time: two dates compared (``change``), or a series followed (``track``).

Every date is brought onto one grid (``geosam.align``: the first date's pixels over the area all
cover), stretched the same way (``geosam.georef.joint_stretch``), and segmented as ``segment`` does
(``segment_scene``: tiles, stitching, resume, Dask, the same model and settings; classes learnt from
examples on the first date apply to the others). Consecutive dates' objects are then matched
(``geosam.matching``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import shapely

from geosam import align, matching, style
from geosam.errors import InputError
from geosam.georef import area_m2, distance_m, joint_stretch, open_scene
from geosam.output import write_layers
from geosam.report import versions
from geosam.resume import WorkDir
from geosam.scene_run import segment_scene
from geosam.settings import CHANGE, READ

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)

READS = ("bands", "nodata", "resolution")  # read options that open_scene takes here too
CHANGE_KEYS = ("same_iou", "match_iou", "part_share")
MOVED = 0.1  # a changed object moved when its centroid shifted by this share of its size (√area)
RESIZED = 0.1  # ... and grew or shrank when its area changed by this share


@dataclass
class ChangeReport:
    """One change or track run: the dates, how they were put on one grid and read, the matching."""

    dates: list[str]
    grid: dict[str, Any]
    alignment: list[str]
    overlap: float
    radiometry: str
    stretch: list[Any]
    parameters: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)  # each date's segment report
    statuses: dict[str, int] = field(default_factory=dict)  # groups per status (change: one pair of dates)
    steps: list[dict[str, int]] = field(default_factory=list)  # track: statuses per consecutive pair
    changed_area_km2: dict[str, float] = field(default_factory=dict)
    segment_s: list[float] = field(default_factory=list)
    match_s: float = 0.0
    wall_s: float = 0.0
    output: str | None = None
    versions: dict[str, Any] = field(default_factory=versions)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    def write(self, path: Path) -> None:
        """Write the JSON report atomically."""
        from geosam.atomic import write_bytes

        write_bytes(path, (self.to_json() + "\n").encode())

    def summary(self) -> str:
        """A few lines for the end of a run."""
        counts = self.statuses or _total(self.steps)
        lines = [*self.alignment, f"radiometry: {self.radiometry}; shared area {100 * self.overlap:.0f}%"]
        lines.append(", ".join(f"{counts.get(s, 0)} {s}" for s in matching.STATUSES))
        segment = " + ".join(f"{s:.1f}" for s in self.segment_s)
        lines.append(f"time: {self.wall_s:.1f} s (segment {segment} s, matching {self.match_s:.2f} s)")
        return "\n".join(lines)


@dataclass(frozen=True)
class ChangeResult:
    """``change``'s layers: groups (``changes``), each date's objects, the changed area; and the report."""

    changes: gpd.GeoDataFrame
    before: gpd.GeoDataFrame
    after: gpd.GeoDataFrame
    changed_area: gpd.GeoDataFrame
    report: ChangeReport | None = None  # None from ``compare``

    def layers(self) -> dict[str, gpd.GeoDataFrame]:
        """The layers as ``geosam.output.write_layers`` takes them."""
        return {
            "changes": self.changes, "before": self.before, "after": self.after,
            "changed_area": self.changed_area,
        }  # fmt: skip


def change(
    before: str | Path,
    after: str | Path,
    *,
    same_iou: float = CHANGE.same_iou,
    match_iou: float = CHANGE.match_iou,
    part_share: float = CHANGE.part_share,
    min_overlap: float = CHANGE.min_overlap,
    radiometry: str = CHANGE.radiometry,
    percentiles: tuple[float, float] = READ.percentiles,
    work_dir: str | Path | None = None,
    on_date: Any = None,
    **options: Any,
) -> ChangeResult:
    """Objects of two dates of a place, matched: same, changed, appeared, disappeared, split, merged.

    Both scenes are brought onto the first's grid, cut to the area both cover (a scene on another
    grid or CRS is warped; ``min_overlap``: the least shared share of the smaller footprint), given
    one stretch (``radiometry``: matched or joint ``percentiles``, see ``joint_stretch``) and
    segmented with the same ``options`` (the keywords of ``segment_scene``). Objects are matched as
    ``geosam.matching`` describes, with ``same_iou``, ``match_iou`` and ``part_share``.

    With ``work_dir``, each date's finished tiles are kept in a folder of it (``0``, ``1``) and a
    rerun resumes; ``on_date(i, path)`` is called before date ``i`` is segmented, and what it returns
    (if not None) is a pair of ``segment_scene`` callbacks for that date: ``on_start`` and ``on_tile``.

    Returns:
        A ``ChangeResult``: ``changes`` (one row per group: status, ids at both dates, IoU, areas,
        area change, shift, what changed; the group's outline at the second date, or the first's
        where it disappeared), ``before`` and ``after`` (each date's objects with their group and
        status), ``changed_area`` (gained and lost ground) and the ``report``.

    Raises:
        InputError: a scene is missing, unreadable or not georeferenced; the scenes overlap too
            little; the thresholds disagree; and whatever ``segment_scene`` raises.
    """
    started = time.monotonic()
    keys = {"same_iou": same_iou, "match_iou": match_iou, "part_share": part_share}
    with _work(work_dir) as work:
        frames, report = _segment_dates(
            [str(before), str(after)], work, min_overlap, radiometry, percentiles, on_date, options
        )
    clock = time.monotonic()
    result = dataclasses.replace(compare(*frames, **keys), report=report)
    report.statuses = _counts(result.changes["status"])
    area = result.changed_area.groupby("kind")["area_m2"].sum()
    report.changed_area_km2 = {k: round(float(area.get(k, 0.0)) / 1e6, 6) for k in ("gained", "lost")}
    report.match_s = round(time.monotonic() - clock, 3)
    report.parameters.update(keys)
    report.wall_s = round(time.monotonic() - started, 3)
    return result


def track(
    scenes: Sequence[str | Path],
    *,
    dates: Sequence[date | str] | None = None,
    same_iou: float = CHANGE.same_iou,
    match_iou: float = CHANGE.match_iou,
    part_share: float = CHANGE.part_share,
    min_overlap: float = CHANGE.min_overlap,
    radiometry: str = CHANGE.radiometry,
    percentiles: tuple[float, float] = READ.percentiles,
    work_dir: str | Path | None = None,
    on_date: Any = None,
    **options: Any,
) -> tuple[gpd.GeoDataFrame, ChangeReport]:
    """Objects of a time series as tracks: one row per object and date, with its track through time.

    The scenes are ordered by ``dates`` (ISO dates or years; default: the dates in their names,
    YYYYMMDD, YYYY-MM-DD or YYYY, else their TIFF date tag), then read and segmented as ``change``
    does, on the grid of the earliest, and each date's objects matched with the next date's.

    Returns:
        The tracks frame (``track``, ``date``, ``end_date``: the next date, ``event``: how the object
        came to be at this date (born, same, changed, split, merged), ``parents``: the tracks it
        split or merged from, ``fate``: what became of it at the next date (same, changed, split,
        merged, died; empty at the last date), ``id``: its id among the date's objects, the
        objects' own fields) and the report.
    """
    started = time.monotonic()
    when = scene_dates([str(s) for s in scenes], dates)
    order = sorted(range(len(scenes)), key=lambda i: when[i])
    paths, when = [str(scenes[i]) for i in order], [when[i] for i in order]
    if len(paths) < 2 or len(set(when)) < len(when):
        raise InputError("give two or more scenes of different dates to track objects through")
    keys = {"same_iou": same_iou, "match_iou": match_iou, "part_share": part_share}
    with _work(work_dir) as work:
        frames, report = _segment_dates(paths, work, min_overlap, radiometry, percentiles, on_date, options)
    clock = time.monotonic()
    steps = [
        matching.match(a.geometry.to_numpy(), b.geometry.to_numpy(), **keys)
        for a, b in itertools.pairwise(frames)
    ]
    frame = _track_frame(frames, steps, when)
    report.steps = [_counts(g.status for g in groups) for groups in steps]
    report.match_s = round(time.monotonic() - clock, 3)
    report.parameters.update(keys, dates=[d.isoformat() for d in when])
    report.wall_s = round(time.monotonic() - started, 3)
    return frame, report


@contextlib.contextmanager
def _work(work_dir: str | Path | None) -> Iterator[Path | None]:
    """The run's work folder, held (``geosam.resume.WorkDir``: one run at a time), or None without one."""
    if work_dir is None:
        yield None
        return
    with WorkDir(work_dir, "").lock():
        yield Path(work_dir)


def write_change(result: ChangeResult, path: Path, overwrite: bool = False) -> None:
    """Write ``change``'s layers to one GeoPackage, each styled for QGIS (outlines by status or kind)."""
    by_status = style.Style(
        "geosam: change by status",
        "Outlines coloured by status",
        style.categories_qml("status", style.STATUSES),
    )
    by_kind = style.Style(
        "geosam: changed area", "Ground gained and lost", style.categories_qml("kind", style.AREA_KINDS)
    )
    write_layers(
        result.layers(), path, overwrite=overwrite,
        styles={"changes": by_status, "before": by_status, "after": by_status, "changed_area": by_kind},
    )  # fmt: skip


def write_tracks(frame: gpd.GeoDataFrame, path: Path, overwrite: bool = False) -> None:
    """Write ``track``'s objects as layer ``tracks`` of a GeoPackage, styled by event, with temporal
    properties (from ``date`` to ``end_date``) that QGIS's temporal controller plays."""
    events = style.Style(
        "geosam: tracks", "Outlines by event; shown from date to end_date",
        style.categories_qml("event", style.EVENTS, temporal=("date", "end_date")),
    )  # fmt: skip
    write_layers({"tracks": frame}, path, overwrite=overwrite, styles={"tracks": events})


def _segment_dates(
    paths: list[str], work: Path | None, min_overlap: float, radiometry: str, percentiles: tuple[float, float],
    on_date: Any, options: dict[str, Any],
) -> tuple[list[gpd.GeoDataFrame], ChangeReport]:  # fmt: skip
    """Every date on one grid, stretched alike and segmented; their frames and the report so far."""
    found = align.footprints(paths)
    grid = align.common_grid(found, min_overlap)
    with contextlib.ExitStack() as stack:
        folder = work if work is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (folder / "grid").mkdir(exist_ok=True)
        on_grid = [align.warp_to(d, grid, folder / "grid" / f"{i}.vrt") for i, d in enumerate(found)]
        reads = {k: options[k] for k in READS if k in options}
        scenes = [open_scene(p, stretch_8bit=True, **reads) for p in on_grid]
        stretches = joint_stretch(scenes, percentiles, radiometry)
        report = _report(paths, grid, found, radiometry, stretches, options)
        frames = []
        for i, (path, stretch) in enumerate(zip(on_grid, stretches, strict=True)):
            callbacks = on_date(i, paths[i]) if on_date is not None else None
            on_start, on_tile = callbacks or (None, None)
            frame, run = segment_scene(
                path, stretch=stretch, percentiles=percentiles, on_start=on_start, on_tile=on_tile,
                work_dir=work / str(i) if work is not None else None, **options,
            )  # fmt: skip
            if i == 0 and "class_model" in frame.attrs:  # learnt here: the same classes for every date
                options = {**options, "examples": None, "class_model": frame.attrs["class_model"]}
            frames.append(frame)
            report.runs.append(json.loads(run.to_json()))
            report.segment_s.append(run.wall_s)
    return frames, report


def _report(
    paths: list[str], grid: align.Grid, found: list[align.Footprint], radiometry: str, stretches: list[Any],
    options: dict[str, Any],
) -> ChangeReport:  # fmt: skip
    return ChangeReport(
        dates=paths,
        grid={"crs": grid.crs.to_string(), "width": grid.width, "height": grid.height, "transform": list(grid.transform)[:6]},
        alignment=align.describe(found, grid), overlap=round(grid.overlap, 4), radiometry=radiometry,
        stretch=[list(s) for s in stretches],
        parameters=json.loads(json.dumps({k: getattr(v, "name", v) for k, v in options.items()}, default=str)),
    )  # fmt: skip


def _counts(statuses: Iterable[str]) -> dict[str, int]:
    found = list(statuses)
    return {s: found.count(s) for s in matching.STATUSES}


def _total(steps: list[dict[str, int]]) -> dict[str, int]:
    return {s: sum(step.get(s, 0) for step in steps) for s in matching.STATUSES}


def compare(
    before: gpd.GeoDataFrame, after: gpd.GeoDataFrame, *, same_iou: float = CHANGE.same_iou,
    match_iou: float = CHANGE.match_iou, part_share: float = CHANGE.part_share,
) -> ChangeResult:  # fmt: skip
    """Match the objects of two dates already segmented (e.g. two dates of ``track``'s frame, or two
    ``segment`` outputs on one grid), as ``change`` does; its result without a report.

    Raises:
        InputError: the frames are in different CRSs, or the thresholds disagree.
    """
    import geopandas as gpd

    if before.crs != after.crs:
        raise InputError("the two dates' objects are in different CRSs; reproject one first")
    crs = before.crs
    groups = matching.match(
        before.geometry.to_numpy(), after.geometry.to_numpy(), same_iou, match_iou, part_share
    )
    first, second = matching.unions(groups, before.geometry.to_numpy(), after.geometry.to_numpy())
    changes = gpd.GeoDataFrame(
        {"group": np.arange(1, len(groups) + 1), **_group_columns(groups, first, second, before, after, crs)},
        geometry=np.where(shapely.is_empty(second), first, second), crs=crs,
    )  # fmt: skip
    rows, kinds, geometries = matching.changed_area(groups, first, second)
    changed = gpd.GeoDataFrame(
        {
            "group": rows + 1, "status": np.array([groups[r].status for r in rows], dtype=object),
            "kind": kinds, "area_m2": area_m2(geometries, crs),
        },
        geometry=geometries, crs=crs,
    )  # fmt: skip
    return ChangeResult(changes, _labelled(before, groups, 0), _labelled(after, groups, 1), changed)


def _group_columns(
    groups: list[matching.Group], first: np.ndarray, second: np.ndarray, before: gpd.GeoDataFrame,
    after: gpd.GeoDataFrame, crs: Any,
) -> dict[str, Any]:  # fmt: skip
    """Per group: status, ids at both dates, IoU of the unions, their areas, area change, shift, what."""
    inter = area_m2(shapely.intersection(first, second), crs)
    area_a, area_b = area_m2(first, crs), area_m2(second, crs)
    both = (area_a > 0) & (area_b > 0)
    union = area_a + area_b - inter
    iou = np.where(both, inter / np.where(union > 0, union, 1), np.nan)
    growth = np.where(both, area_b / np.where(area_a > 0, area_a, 1) - 1, np.nan)
    shift = np.full(len(groups), np.nan)
    if both.any():
        shift[both] = distance_m(shapely.centroid(first[both]), shapely.centroid(second[both]), crs)
    ids = [before["id"].to_numpy(), after["id"].to_numpy()]
    return {
        "status": np.array([g.status for g in groups], dtype=object),
        "before_ids": [",".join(str(ids[0][i]) for i in g.first) for g in groups],
        "after_ids": [",".join(str(ids[1][j]) for j in g.second) for g in groups],
        "iou": iou, "area_before_m2": area_a, "area_after_m2": area_b, "area_change": growth, "shift_m": shift,
        "what": [_what(g.status, a, c, s) for g, a, c, s in zip(groups, area_a, growth, shift, strict=True)],
    }  # fmt: skip


def _what(status: str, area: float, growth: float, shift: float) -> str:
    """What changed, in words: grew or shrank (by how much), moved (how far), else reshaped."""
    if status != "changed":
        return ""
    words = []
    if abs(growth) >= RESIZED:
        words.append(f"{'grew' if growth > 0 else 'shrank'} {100 * abs(growth):.0f}%")
    if shift >= MOVED * np.sqrt(area):
        words.append(f"moved {shift:.0f} m")
    return ", ".join(words) or "reshaped"


def _labelled(frame: gpd.GeoDataFrame, groups: list[matching.Group], side: int) -> gpd.GeoDataFrame:
    """A date's objects with their group and its status."""
    group = np.zeros(len(frame), np.int64)
    status = np.empty(len(frame), dtype=object)
    for k, g in enumerate(groups, start=1):
        members = list(g.first if side == 0 else g.second)
        group[members], status[members] = k, g.status
    out = frame.copy()
    out.insert(1, "group", group)
    out.insert(2, "status", status)
    return out


def _track_frame(
    frames: list[gpd.GeoDataFrame], steps: list[list[matching.Group]], when: list[date]
) -> gpd.GeoDataFrame:
    """One row per object and date: its track, dates, event, parents and fate, and its own fields."""
    import geopandas as gpd
    import pandas as pd

    tracks, events, parents, fates = matching.tracks(steps, [len(f) for f in frames])
    gaps = [b - a for a, b in itertools.pairwise(when)]
    ends = [*when[1:], when[-1] + (gaps[-1] if gaps else timedelta(days=1))]
    parts = []
    for t, frame in enumerate(frames):
        part = frame.copy()
        columns = {
            "track": tracks[t], "date": pd.to_datetime([when[t]] * len(frame)),
            "end_date": pd.to_datetime([ends[t]] * len(frame)), "event": events[t], "parents": parents[t],
            "fate": fates[t],
        }  # fmt: skip
        for k, (name, values) in enumerate(columns.items()):
            part.insert(k, name, values)
        parts.append(part)
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=frames[0].crs)


DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})(?:[-_]?(\d{2})[-_]?(\d{2}))?(?!\d)")


def scene_dates(paths: Sequence[str], given: Sequence[date | str] | None = None) -> list[date]:
    """Each scene's date: ``given`` (ISO dates or years), else the date in its name (YYYYMMDD,
    YYYY-MM-DD, YYYY), else its TIFF date tag; an InputError naming a scene without one."""
    if given is not None:
        if len(given) != len(paths):
            raise InputError(f"give one date per scene: {len(given)} dates for {len(paths)} scenes")
        return [d if isinstance(d, date) else _parse(str(d), str(d)) for d in given]
    return [_date_of(p) for p in paths]


def _date_of(path: str) -> date:
    found = DATE.findall(Path(path).stem)
    if found:
        year, month, day = found[-1]
        return _parse(f"{year}-{month}-{day}" if month else year, path)
    with rasterio.open(path) as ds:
        tag = ds.tags().get("TIFFTAG_DATETIME", "")
    if tag:
        return _parse(tag[:10].replace(":", "-"), path)
    raise InputError(
        f"{path}: no date in its name or tags; name it with one (YYYYMMDD or YYYY) or give the dates"
    )


def _parse(text: str, where: str) -> date:
    try:
        return date(int(text), 1, 1) if text.isdigit() and len(text) == 4 else date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a date; give YYYY-MM-DD or a year") from None
