"""One scene's run: its tiles through the cluster (or this process), resumed from the work folder,
prompt rounds across seams, the stitched objects as a GeoDataFrame and the run's report.

``segment`` is the public entry point; ``segment_scene`` returns the report too; ``segmented`` gives
the objects a batch at a time (``Segmented``) for output that never holds them all. ``SceneRun`` holds the
state that tile results change as they arrive (stitcher, prompt rounds, report), in small methods.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
import typing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geosam import objectstore, outlines, output, scale, settings
from geosam.classes import ClassModel
from geosam.cluster import GPU_TILES_PER_TASK, dask_client, run_tiles, run_tiles_here, scheduler_address
from geosam.errors import InputError, TileError, TileInputError
from geosam.examples import encoder, learn, read_examples
from geosam.fingerprint import model_identity, run_key
from geosam.georef import Scene, area_m2, is_remote, open_scene, pixel_area_m2
from geosam.models import AutomaticParams, ModelSpec
from geosam.models.base import Funnel
from geosam.objectstore import ObjectStore, class_columns
from geosam.report import RunReport, TileFailure, peak_rss
from geosam.reprompt import PromptJob, Reprompter
from geosam.resume import WorkDir, iter_finished
from geosam.stitch import Piece, StitchedObject, Stitcher
from geosam.tasks import ModelSource, TileResult
from geosam.tiling import Box, Tile, TileGrid, TileMarks, read_pixels
from geosam.xr import is_dataarray, scene_file

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray

log = logging.getLogger(__name__)

READ, MODEL, TILING, FILTERS = settings.READ, settings.MODEL, settings.TILING, settings.FILTERS
CLASSES = settings.CLASSES
OUTLINES = settings.OUTLINES
CLUSTER, EXECUTION = settings.CLUSTER, settings.EXECUTION
OBJECTS_FILE = "objects.sqlite"  # the run's object store (geosam.objectstore), in the work folder
FEATURELESS_SAMPLE = 1024  # longest side of the read that tells a featureless scene, where no object came out


class SceneRun:
    """The state of one scene's run as tile results arrive: stitching, prompt rounds, resume, report.

    Results come in any order. Each goes to the work folder (when there is one), its pieces to the
    prompt rounds (``Reprompter``), which say which tiles' pieces are final; final pieces go to the
    stitcher one result later, so that the last tiles' objects are assembled after a local cluster
    has closed (its workers, each holding a model, are then no longer alive); the objects it releases
    go to the ``store`` on disk.
    """

    def __init__(
        self, grid: TileGrid, report: RunReport, work: WorkDir | None, prompt_rounds: int, store: ObjectStore,
        on_tile: Callable[[TileResult], None] | None = None,
    ) -> None:  # fmt: skip
        self.grid, self.report, self.work, self.store = grid, report, work, store
        self.on_tile = on_tile or (lambda result: None)
        self.stitcher = Stitcher(grid)
        self.reprompter = Reprompter(grid, prompt_rounds)
        self.jobs: deque[PromptJob] = deque()  # prompts to send, taken by the cluster between tiles
        self.asked: dict[tuple[int, int, int], str] = {}  # digests of the jobs out, by tile and round
        self.finished: deque[tuple[Tile, list[Piece]]] = deque()  # final pieces, not yet stitched
        self.input_failures: list[bool] = []  # of failed tiles: whether each failed on its input
        self.data_pixels = 0  # valid pixels in the cores of all tiles: the scene's data
        self.data_pixels_now = 0  # of those, in the tiles segmented in this run
        self.extent: Box | None = None  # the bounds of the scene's data (valid pixels in tile cores)
        # masks through automatic mode's stages, over the tiles that counted them
        self.funnel = Funnel(tiles=0)

    def resume(self) -> TileMarks:
        """Take the tiles finished by an earlier run from the work folder; they are marked 1."""
        reused = TileMarks(self.grid)
        if self.work is None:
            return reused
        for tile, pieces, segmented, data, funnel, box in iter_finished(
            self.work, self.grid, self.work.finished(self.grid)
        ):
            reused[tile.row, tile.col] = 1
            self.take(
                TileResult(
                    tile, pieces, segmented, reused=True, data_pixels=data, data_box=box, funnel=funnel
                )
            )
        if found := reused.count():
            log.info("resuming: %d of %d tiles reused from %s", found, len(self.grid), self.work.folder)
        return reused

    def take(self, result: TileResult) -> None:
        """One tile's result: a tile segmented (round 0) or a tile's answers to prompts."""
        self._stitch()
        self.report.model_s += result.model_s
        if result.round:
            self._take_answers(result)
        else:
            self._take_tile(result)

    def _take_answers(self, result: TileResult) -> None:
        """A failure here only leaves the seam as it was."""
        digest = self.asked.pop((result.tile.row, result.tile.col, result.round))
        if self.work is not None and result.error is None:
            self.work.store(result.tile, result.pieces, True, result.round, digest)
        self._feed(result.tile, result.round, result.pieces)

    def _take_tile(self, result: TileResult) -> None:
        self.on_tile(result)
        report = self.report
        if result.error is not None:
            report.failed.append(TileFailure(result.tile.row, result.tile.col, result.error))
            self.input_failures.append(result.input_error)
        else:
            if self.work is not None and not result.reused:
                self.work.store(
                    result.tile, result.pieces, result.segmented, data_pixels=result.data_pixels,
                    funnel=result.funnel, data_box=result.data_box,
                )  # fmt: skip
            report.tiles_skipped += result.reused
            report.tiles_done += not result.reused
            report.tiles_empty += not result.segmented
            self.data_pixels += result.data_pixels
            self.data_pixels_now += 0 if result.reused else result.data_pixels
            if result.data_pixels:  # where the data lies (a tile file from before data bounds: the core)
                box = result.data_box or result.tile.core
                self.extent = box if self.extent is None else self.extent.union(box)
            self.funnel += result.funnel or Funnel(tiles=0)
        self._feed(result.tile, 0, result.pieces, result.segmented and result.error is None)

    def _feed(self, tile: Tile, round: int, pieces: list[Piece], segmented: bool = True) -> None:
        """Pieces to the prompt rounds; the jobs they make are sent, or answered from the work folder."""
        ready, final = self.reprompter.add(tile, round, pieces, segmented)
        self.report.prompt_pieces += len(pieces) if round else 0
        for job in ready:
            self.report.prompts += len(job.prompts)
            stored = self.work.load(job.tile, job.round, job.digest) if self.work is not None else None
            if stored is None:
                self.jobs.append(job)
                self.asked[(job.tile.row, job.tile.col, job.round)] = job.digest
            else:
                self._feed(job.tile, job.round, stored[0])
        self.finished.extend(final)

    def _stitch(self) -> None:
        """Assemble the objects that tiles finished so far complete (a scene-wide one can take hundreds of MB)."""
        while self.finished:
            self.store.add(self.stitcher.add(*self.finished.popleft()))

    def close(self, keep_background: bool = False) -> int:
        """Once all results are in: the objects in the store less duplicates and (unless ``keep_background``)
        the scene's ground; how many are left."""
        self.reprompter.close()
        self._stitch()
        self.stitcher.close()
        left, self.report.ground = self.store.finish(self.data_pixels, self.extent, keep_background)
        return left


def segment(path: str | Path | xarray.DataArray, **options: Any) -> gpd.GeoDataFrame:
    """Segment every object in a scene; return its polygons in the scene's CRS.

    Args:
        path: Any GDAL raster path, or a rioxarray DataArray (dims (y, x) or (band, y, x), with its
            CRS, transform and nodata), written to a temporary GeoTIFF that the workers read.
        **options: The keywords of ``segmented`` (tiling, model, reads, cluster, resume).

    Returns:
        One row per object (id, score, stability, area_m2, tiles, geometry), largest first; the
            run's report, as plain JSON data (what ``RunReport.to_json`` writes), in
            ``frame.attrs["report"]``.

    Raises:
        GeosamError: a subclass that says what is wrong: the scene (InputError), the model
            (ModelError), the cluster (SchedulerError) or tiles that failed (TileError).
    """
    if is_dataarray(path):
        model = options.get("model", MODEL.name)
        (ModelSpec(model) if isinstance(model, str) else model).check()  # before writing the array out
        with scene_file(path, options.get("pixel_coordinates", READ.pixel_coordinates)) as file:
            return segment(file, **options)
    frame, report = segment_scene(typing.cast(str | Path, path), **options)
    frame.attrs["report"] = json.loads(report.to_json())
    return frame


@contextlib.contextmanager
def segmented(
    path: str | Path,
    *,
    model: ModelSource | str = MODEL.name,
    bands: tuple[int | str, ...] | None = READ.bands,
    percentiles: tuple[float, float] = READ.percentiles,
    stretch_8bit: bool = READ.stretch_8bit,
    resolution: float | None = READ.resolution,
    pixel_coordinates: bool = READ.pixel_coordinates,
    nodata: float | None = READ.nodata,
    stretch: tuple[tuple[float, float], ...] | None = None,
    tile_size: int = TILING.tile_size,
    overlap: int = TILING.overlap,
    prompt_rounds: int = TILING.prompt_rounds,
    min_area: float = FILTERS.min_area,
    simplify: float = FILTERS.simplify,
    keep_background: bool = FILTERS.keep_background,
    examples: str | Path | gpd.GeoDataFrame | None = CLASSES.examples,
    class_field: str = CLASSES.class_field,
    class_model: ClassModel | str | Path | None = CLASSES.class_model,
    keep: tuple[str, ...] | None = CLASSES.keep,
    find_all: bool = CLASSES.find_all,
    min_class_score: float = CLASSES.min_class_score,
    class_outlines: tuple[str, ...] | None = CLASSES.class_outlines,
    outline: str = OUTLINES.outline,
    fill_holes: float = OUTLINES.fill_holes,
    flat: bool = OUTLINES.flat,
    keep_raw: bool = OUTLINES.keep_raw,
    workers: int | None = CLUSTER.workers,
    scheduler: str | None = CLUSTER.scheduler,
    tiles_per_task: int | None = EXECUTION.tiles_per_task,
    retries: int = EXECUTION.retries,
    work_dir: str | Path | None = None,
    allow_partial: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_tile: Callable[[TileResult], None] | None = None,
    parameters: dict | None = None,
    threads: int | None = None,
    on_learn: Callable[[int, int], None] | None = None,
) -> Iterator[Segmented]:
    """Segment every object in a scene; the run's objects (``Segmented``: polygons in the scene's CRS, on
    disk until the ``with`` block ends, read a batch at a time or whole) and its report.

    ``path`` is any GDAL raster path. ``bands``, ``nodata``, ``percentiles``, ``stretch_8bit``,
    ``stretch`` and ``resolution`` plan the reads (see ``open_scene``). ``tile_size`` and ``overlap`` are in pixels of the
    (resampled) grid, ``min_area`` in m² (pixels² without a CRS), ``simplify`` in pixels. An object over
    more than half of the scene's data that spans it both ways is its ground and is left out unless
    ``keep_background`` (see ``geosam.objectstore.ObjectStore.finish``). ``outline`` is the kind of outline written
    (``geosam.outlines``: pixel, simplify, smooth, orthogonal, orthogonal45, circle, auto), after holes
    under ``fill_holes`` m² (pixels² without a CRS) are filled and, with ``flat``, overlaps resolved
    (the smaller object keeps the area); ``keep_raw`` adds the pixel outlines as column
    ``raw_geometry`` (written as layer ``objects_raw``).

    With ``examples`` (a vector file or frame of points or polygons with a ``class_field``), a class model
    is learnt on this scene first (``geosam.examples``; in ``frame.attrs["class_model"]``), or
    ``class_model`` (a ``ClassModel`` or its file) is used: every object gets ``class``,
    ``class_score`` and ``source`` (a class other than the background from a probability of
    ``min_class_score``); ``keep`` leaves only those classes; ``find_all`` also prompts
    where tiles look like a class's examples; ``class_outlines`` (``CLASS=KIND`` pairs) gives a class's
    objects their own kind of outline. Tiles run as Dask tasks on
    ``scheduler`` (an address or scheduler file; default: Dask's ``scheduler-address`` setting when
    ``workers`` is not given) or on a local cluster of ``workers`` processes (default: one on the CPU,
    using every core; one per core for a GPU); ``workers=0`` runs them in this process, without Dask, as
    does the default for a scene of up to ``settings.IN_PROCESS_TILES`` tiles.

    With ``work_dir``, each finished tile is kept there and a run with the same scene, model and
    settings segments only the tiles not kept yet (see ``geosam.resume``). A failing tile is tried
    ``retries`` more times; tiles that still fail raise ``TileError`` (its ``report`` lists them)
    after every other tile has run, unless ``allow_partial``, which leaves their objects out.
    ``parameters`` are recorded in the report as the run's settings (default: these keywords).
    ``tiles_per_task`` tiles are embedded in one encoder call (default: 4 on a GPU, else 1).
    A piece that runs out of its tile into a neighbour that found nothing of it is put to the
    neighbour's model as a prompt, for up to ``prompt_rounds`` rounds (see ``geosam.reprompt``).
    ``threads`` is torch's threads per worker (default: cores / workers on a local cluster, the
    workers' own on ``scheduler``; 0: cores / workers). ``on_start`` is called once with the number of
    tiles planned, before any tile; ``on_tile`` with each tile's result; ``on_learn(done, total)`` as
    the examples' tiles are segmented to learn from (before ``on_start``).
    """
    started = time.monotonic()
    if parameters is None:
        parameters = {
            k: v
            for k, v in locals().items()
            if k not in ("path", "on_start", "on_tile", "on_learn", "started", "parameters")
        }
        parameters["model"] = getattr(model, "name", model)
    source: ModelSource = ModelSpec(model) if isinstance(model, str) else model
    source.check()
    if workers is None:
        scheduler = scheduler_address(scheduler)
    if scheduler and not is_remote(str(path)) and Path(path).exists():
        path = os.path.abspath(path)  # workers elsewhere do not share this process's folder
    scene = open_scene(
        path, bands=bands, percentiles=percentiles, stretch_8bit=stretch_8bit, resolution=resolution,
        pixel_coordinates=pixel_coordinates, nodata=nodata, stretch=stretch,
    )  # fmt: skip
    grid = _plan(scene, tile_size, overlap)
    if workers is None and not scheduler and len(grid) <= settings.IN_PROCESS_TILES:
        workers = 0  # a cluster would cost more than it gives
    classes = _classes(scene, grid, source, examples, class_field, class_model, on_learn)
    if on_start is not None:
        on_start(len(grid))
    outlined = _class_outlines(classes, keep, class_outlines)
    source = _finding(source, classes, find_all)
    key = run_key(scene, grid, source)
    report = _report(scene, grid, source, parameters, key, work_dir)
    work = WorkDir(work_dir, key) if work_dir else None
    pixel_area = pixel_area_m2(scene)
    with contextlib.ExitStack() as stack:
        if work is not None:
            stack.enter_context(work.lock())  # one run per work folder
        store = stack.enter_context(_store(work, classes, min_class_score, pixel_area))
        run = SceneRun(grid, report, work, prompt_rounds, store, on_tile)
        _run_tiles(run, scene, grid, source, (workers, scheduler, threads, tiles_per_task), retries)
        found = run.close(keep_background)
        if pixel_area is not None:
            report.area_km2 = run.data_pixels * pixel_area / 1e6
            report.area_km2_this_run = run.data_pixels_now * pixel_area / 1e6
        report.finish(time.monotonic() - started)
        if report.failed and not allow_partial:
            raise _failure(report, run, work, len(grid), retries)
        shape = settings.Outlines(typing.cast(settings.OutlineKind, outline), fill_holes, flat, keep_raw)
        chunks = store.chunks(_chunk(store, shape, outlined))
        report.outlines_s = round(
            _stage(scene, chunks, store, (min_area, simplify), classes, keep, shape, outlined), 3
        )
        if classes is not None:
            report.classes, report.sources = store.counts("class"), store.counts("source")
        report.objects = store.staged
        report.status = "partial" if report.failed else "complete"
        report.masks = dataclasses.asdict(run.funnel)
        params = getattr(source, "params", None)
        report.advice = _advice(
            scene, run.funnel, params if isinstance(params, AutomaticParams) else None, (found, store.staged),
            (tile_size, overlap, min_area), report.ground,
        )  # fmt: skip
        yield Segmented(report, classes, store)


def segment_scene(path: str | Path, **options: Any) -> tuple[gpd.GeoDataFrame, RunReport]:
    """Segment every object in a scene; return polygons in the scene's CRS and the run's report.

    The keywords are ``segmented``'s; the objects come back as one frame, largest first, with the class
    model (if any) in ``frame.attrs["class_model"]``.
    """
    with segmented(path, **options) as result:
        return result.frame(), result.report


@dataclass(frozen=True)
class Segmented:
    """A finished run: its ``report``, its class model (``classes``) and its objects in the ``store``, which
    lasts as long as ``segmented``'s ``with`` block."""

    report: RunReport
    classes: ClassModel | None
    store: ObjectStore

    def batches(self, size: int = objectstore.CHUNK) -> Iterator[gpd.GeoDataFrame]:
        """The objects ``size`` at a time, largest first, with ids from 1 (one empty frame for none)."""
        return self.store.ordered(size)

    def layer(self) -> output.Batches:
        """The objects as ``geosam.output.write`` takes them: a batch at a time, never all in memory."""
        return output.Batches(self.batches(), self.store.scores()[1])

    def frame(self) -> gpd.GeoDataFrame:
        """Every object in one frame, largest first (the class model in ``attrs["class_model"]``)."""
        import pandas as pd

        parts = list(self.batches())
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        if self.classes is not None:
            frame.attrs["class_model"] = self.classes
        return frame


def _run_tiles(
    run: SceneRun, scene: Scene, grid: TileGrid, source: ModelSource,
    cluster: tuple[int | None, str | None, int | None, int | None], retries: int,
) -> None:  # fmt: skip
    """Every tile not finished yet through ``run``: in this process, or on a cluster (``cluster``: workers,
    scheduler, threads, tiles per task as ``segmented`` takes them)."""
    workers, scheduler, threads, tiles_per_task = cluster
    report = run.report
    reused = run.resume()
    remaining = (tile for tile in grid if not reused[tile.row, tile.col])
    # None: no prompts follow, workers keep nothing for them
    jobs = run.jobs if run.reprompter.rounds else None
    if workers == 0 and not scheduler:
        report.workers = 1
        for result in run_tiles_here(scene, grid, source, remaining, retries, jobs):
            run.take(result)
        report.peak_rss_bytes = {"this process": peak_rss()}
        return
    device = getattr(source, "device", "cpu")
    with dask_client(workers, scheduler, device) as client:
        report.workers = len(client.scheduler_info(n_workers=-1)["workers"])
        threads = threads if threads is not None or scheduler else 0
        batch = tiles_per_task or (1 if device == "cpu" else GPU_TILES_PER_TASK)
        results = run_tiles(
            client, scene, grid, source, remaining, retries, threads, report.peak_rss_bytes, batch, jobs
        )
        for result in results:
            run.take(result)


@contextlib.contextmanager
def _store(
    work: WorkDir | None, classes: ClassModel | None, min_class_score: float, pixel_area: float | None
) -> Iterator[ObjectStore]:
    """The run's object store (classifying with ``classes`` at ``min_class_score``, a pixel being
    ``pixel_area`` m²): a file in the work folder, else in the system's temporary folder."""
    with contextlib.ExitStack() as stack:
        if work is not None:
            folder, after = work.scratch(), f"; finished tiles are kept in {work.folder}"
        else:
            folder, after = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="geosam-"))), ""
        store = ObjectStore(folder / OBJECTS_FILE, classes, after, min_class_score, pixel_area)
        try:
            yield store
        finally:
            store.close()


def _plan(scene: Scene, tile_size: int, overlap: int) -> TileGrid:
    """The scene's tile grid, logged."""
    grid = TileGrid(scene.width, scene.height, tile_size, overlap)
    log.info("%s: %d×%d px, %d tiles of %d px", scene.path, scene.width, scene.height, len(grid), tile_size)
    return grid


def _classes(
    scene: Scene,
    grid: TileGrid,
    source: ModelSource,
    examples: Any,
    class_field: str,
    class_model: Any,
    on_learn: Callable[[int, int], None] | None,
) -> ClassModel | None:
    """The run's class model: learnt from ``examples`` on the scene (``on_learn``: ``learn``'s
    ``on_tile``), or ``class_model`` (or its file)."""
    if examples is not None and class_model is not None:
        raise InputError("give examples or a class model, not both")
    if examples is not None:
        found = read_examples(examples, scene, class_field)
        log.info("learning %d classes from %d examples", found["class"].nunique(), len(found))
        return learn(scene, grid, source.load(), found, on_learn)
    if class_model is None:
        return None
    classes = class_model if isinstance(class_model, ClassModel) else ClassModel.load(class_model)
    identity = model_identity(source)
    classes.check_encoder(encoder(identity["name"], identity["checksum"]))
    return classes


def _class_outlines(
    classes: ClassModel | None, keep: tuple[str, ...] | None, class_outlines: tuple[str, ...] | None
) -> dict[str, str]:
    """``class_outlines`` as a mapping, checked with ``keep`` against the class model before any tile."""
    try:
        mapping = outlines.by_class(class_outlines)
    except ValueError as exc:
        raise InputError(f"--class-outlines: {exc}") from None
    for option, names in (("--keep", keep or ()), ("--class-outlines", mapping)):
        if not names:
            continue
        if classes is None:
            raise InputError(
                f"{option} {','.join(names)}: classes come from --examples or --class-model: give one"
            )
        unknown = sorted(set(names) - set(classes.classes))
        if unknown:
            known = ", ".join(classes.classes)
            raise InputError(f"{option} {','.join(unknown)}: not a class of the class model ({known})")
    return mapping


def _finding(source: ModelSource, classes: ClassModel | None, find_all: bool) -> ModelSource:
    """With ``find_all``, the model source that also prompts where tiles look like the classes' examples."""
    if classes is None or not find_all or not isinstance(source, ModelSpec):
        return source
    return dataclasses.replace(source, params=dataclasses.replace(source.params, find=classes.find()))


def _advice(
    scene: Scene, funnel: Funnel, params: AutomaticParams | None, counts: tuple[int, int],
    settings: tuple[int, int, float], ground: int,
) -> list[str]:  # fmt: skip
    """A run's advice: why it gave no objects (``counts``: found, and kept by --min-area; ``ground``: left
    out as the scene's ground), and what the scene's pixel size means for the model (``geosam.scale``);
    ``settings``: tile size, overlap, min area."""
    tile_size, overlap, min_area = settings
    found, kept = counts
    lines = [] if kept else [_why_none(scene, funnel, params, found, min_area, ground)]
    points = params.points_per_side if params is not None else MODEL.points_per_side
    pixels = scale.advice(scene, tile_size, overlap, points)
    return lines + ([pixels] if pixels else [])


def _why_none(
    scene: Scene, funnel: Funnel, params: AutomaticParams | None, found: int, min_area: float, ground: int
) -> str:
    """Why a run gave no objects, in one line: the stage of automatic mode that let none through, what to try."""
    if found:
        return f"no objects: {found} found, all smaller than --min-area {min_area:g} m²; lower it"
    if not funnel.tiles:  # tiles of an earlier run, or a model that does not count
        return "no objects: the model found none"
    if not funnel.prompts:
        return "no objects: no prompt point fell on valid pixels; try more --points-per-side"
    iou = f" {params.pred_iou_thresh:g}" if params is not None else ""
    stability = f" {params.stability_score_thresh:g}" if params is not None else ""
    if not funnel.confident:
        return (
            f"no objects: none of the {funnel.masks} masks the model proposed for {funnel.prompts} prompts reached "
            f"--pred-iou-thresh{iou} (its predicted IoU); try a lower one"
        )
    if not funnel.stable:
        return (
            f"no objects: {funnel.confident} of the model's {funnel.masks} masks reached --pred-iou-thresh{iou}, "
            f"none --stability-thresh{stability}; try a lower one"
        )
    whole = (
        f"no objects: of the model's {funnel.masks} masks {funnel.stable} passed the thresholds, and those that "
        + (
            f"differ ({funnel.distinct}) make one region over most of the scene: its ground, left out "
            "(--keep-background keeps it)"
            if ground
            else f"differ ({funnel.distinct}) each cover (nearly) all valid pixels of their tile: the image, not an object"
        )
    )
    value = _one_value(scene)
    if value is not None:
        return f"{whole}; every valid pixel of the scene reads as {value}: check --bands and --nodata (geosam info)"
    return (
        f"{whole}; the objects may be larger than a tile: try a coarser --resolution or a larger --tile-size"
    )


def _one_value(scene: Scene) -> str | None:
    """The one value every valid pixel of a decimated read of the scene has, as the model sees it; None if
    it has more."""
    factor = max(1.0, max(scene.width, scene.height) / FEATURELESS_SAMPLE)
    shape = (max(1, round(scene.height / factor)), max(1, round(scene.width / factor)))
    image, valid = read_pixels(scene, Box(0, 0, scene.width, scene.height), out_shape=shape)
    values = np.unique(image[valid], axis=0)
    if len(values) != 1:
        return None
    red, green, blue = (int(v) for v in values[0])
    return str(red) if red == green == blue else f"{red},{green},{blue}"


def _report(
    scene: Scene, grid: TileGrid, source: ModelSource, parameters: dict, key: str, work_dir: str | Path | None
) -> RunReport:
    identity = model_identity(source)
    return RunReport(
        scene=scene.path, scene_size_px=(scene.width, scene.height),
        crs=scene.crs.to_string() if scene.crs is not None else None,
        model=identity["name"], model_sha256=identity["checksum"],
        parameters=json.loads(json.dumps(parameters, default=str)), run_key=key,
        work_dir=str(work_dir) if work_dir else None, tiles_planned=len(grid),
    )  # fmt: skip


def _failure(report: RunReport, run: SceneRun, work: WorkDir | None, tiles: int, retries: int) -> TileError:
    """The error of a run whose tiles failed: which, and what to do."""
    report.status = "failed"
    if work is not None:
        work.remove_if_empty()
    shown = "; ".join(f"tile {f.row},{f.col}: {f.error}" for f in report.failed[:3])
    more = f"; and {len(report.failed) - 3} more" if len(report.failed) > 3 else ""
    kept = f"finished tiles are kept in {work.folder}: " if work is not None and work.holds_tiles() else ""
    error = TileInputError if all(run.input_failures) else TileError
    return error(
        f"{len(report.failed)} of {tiles} tiles failed after {retries + 1} tries ({shown}{more}); "
        f"{kept}run the same command again to retry them, or pass --allow-partial to leave them out",
        report,
    )


def _chunk(store: ObjectStore, shape: settings.Outlines, class_outlines: dict[str, str] | None) -> int:
    """How many objects of ``store`` to make outlines of at a time: all of them where an object's outline
    depends on its neighbours' (``shape``, ``class_outlines``)."""
    alone = not shape.flat and {shape.outline, *(class_outlines or {}).values()} <= outlines.ALONE_KINDS
    return objectstore.CHUNK if alone else max(store.count, 1)


def _stage(
    scene: Scene, chunks: Iterable[tuple[list[StitchedObject], dict[str, np.ndarray]]], store: ObjectStore,
    filters: tuple[float, float], classes: ClassModel | None, keep: tuple[str, ...] | None,
    shape: settings.Outlines, class_outlines: dict[str, str] | None,
) -> float:  # fmt: skip
    """The output's rows of objects that come in ``chunks`` with their class columns (``class_columns``),
    staged in ``store`` (see ``_frame``); the seconds their outlines took."""
    seconds = 0.0
    for objects, columns in chunks:
        part, took = _frame(scene, objects, columns, filters, keep if classes is not None else None, shape,
                            class_outlines)  # fmt: skip
        store.stage(part)
        seconds += took
    if not store.staged:  # none: the columns of the output
        store.stage(_frame(scene, [], class_columns([], classes), filters, None, shape, class_outlines)[0])
    return seconds


def _frame(
    scene: Scene, objects: list[StitchedObject], classified: dict[str, np.ndarray], filters: tuple[float, float],
    keep: tuple[str, ...] | None, shape: settings.Outlines, class_outlines: dict[str, str] | None,
) -> tuple[gpd.GeoDataFrame, float]:  # fmt: skip
    """The objects' rows, unordered, with ``classified``'s columns, those under ``filters``' minimum area
    (and, with ``keep``, of other classes) left out; and the seconds the outlines took."""
    import geopandas as gpd  # here: workers import this module's neighbours and never need it

    min_area, simplify = filters
    pixel = np.array([o.geometry for o in objects], dtype=object)
    started = time.monotonic()
    kinds = outlines.kinds_of(classified.get("class", np.array([])), shape.outline, class_outlines or {})
    geometry, measures = outlines.apply(pixel, scene.transform, pixel_area_m2(scene), shape, simplify, kinds)
    seconds = time.monotonic() - started
    area = (
        area_m2(geometry, scene.crs)
        if scene.crs is not None
        else np.abs(np.asarray(shapely.area(geometry), float)) / abs(scene.transform.determinant)
    )
    frame = gpd.GeoDataFrame(
        {
            "score": np.array([o.score for o in objects], np.float64),
            "stability": np.array([o.stability for o in objects], np.float64),
            "area_m2": area,
            "tiles": np.array([o.tiles for o in objects], np.int32),
            **classified,
            **measures,
        },
        geometry=geometry,
        crs=scene.crs,
    )
    kept = (~frame.geometry.is_empty) & (frame["area_m2"] >= min_area)
    if keep:
        kept &= frame["class"].isin(keep)
    return frame[kept], seconds
