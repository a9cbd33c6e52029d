"""The Dask run over a scene's tiles: workers read their own windows and keep their model loaded."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import shapely
from dask.distributed import Client, LocalCluster, as_completed

from geosam import heap
from geosam.errors import InputError, SchedulerError, TileError, TileInputError, reason
from geosam.georef import Scene, area_m2, open_scene
from geosam.models import ModelSpec, Segmenter
from geosam.report import RunReport, TileFailure, peak_rss
from geosam.reprompt import ROUNDS, PromptJob, Reprompter, answer
from geosam.resume import WorkDir, iter_finished, model_identity, run_key
from geosam.stitch import Piece, StitchedObject, Stitcher, drop_duplicates, pieces_from_masks
from geosam.tiling import Tile, TileGrid, read_tile
from geosam.vectorize import tidy, to_map
from geosam.xr import is_dataarray, scene_file

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray

log = logging.getLogger(__name__)

COLUMNS = ["id", "score", "stability", "area_m2", "tiles"]
GPU_TILES_PER_TASK = 4  # tiles per encoder call on a GPU: keeps it busy; 4 ViT-H inputs fit in 16 GB


class ModelSource(Protocol):
    """Anything that names a segmenter and loads it on a worker (``ModelSpec`` for real models)."""

    name: str

    def check(self) -> None: ...

    def load(self) -> Segmenter: ...


@dataclass(frozen=True)
class TileResult:
    tile: Tile
    pieces: list[Piece]
    segmented: bool  # False when the tile had no valid pixels (or failed)
    reused: bool = False  # read back from the work folder of an earlier run
    error: str | None = None  # why the tile failed, after its retries
    input_error: bool = False  # it failed on its input (an InputError), not in the model or the cluster
    round: int = 0  # 0: automatic mode; k: answers to the tile's round-k prompts (geosam.reprompt)
    model_s: float = 0.0  # seconds in the model on the worker: segmenting the tile, or answering its prompts


@functools.lru_cache(maxsize=1)
def _worker_model(source: ModelSource, threads: int | None) -> Segmenter:
    """The model, loaded once per worker process (``threads=None``: torch's threads as the worker set them)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return source.load()


def segment_tiles(
    scene: Scene, grid: TileGrid, tiles: Sequence[Tile], model: Segmenter, prompts_follow: bool = True
) -> list[TileResult]:
    """Read the tiles' windows, segment them (in one encoder call where the model can), return pieces.

    Unless ``prompts_follow``, the model then drops what it keeps for prompts about them (a ViT-B
    worker: up to 16 embeddings and 2 tiles' decoding terms, 120 MB).
    """
    images = [read_tile(scene, tile, grid.size) for tile in tiles]
    todo = [image for image in images if image.valid.any()]
    many = getattr(model, "automatic_many", None)
    start = time.perf_counter()
    found = iter(many(todo) if many is not None and len(todo) > 1 else [model.automatic(i) for i in todo])
    seconds = (time.perf_counter() - start) / max(len(todo), 1)
    results = []
    for tile, image in zip(tiles, images, strict=True):
        if not image.valid.any():
            results.append(TileResult(tile, [], False))
            continue
        masks = next(found)
        np.logical_and(masks.masks, image.valid, out=masks.masks)  # invalid pixels are never objects
        results.append(TileResult(tile, pieces_from_masks(tile, masks, grid), True, model_s=seconds))
    forget = getattr(model, "forget", None)  # SAM models keep embeddings for prompts
    if not prompts_follow and forget is not None:
        forget()
    return results


def _segment_task(
    scene: Scene, grid: TileGrid, tiles: tuple[Tile, ...], source: ModelSource, threads: int | None,
    prompts_follow: bool,
) -> tuple[list[TileResult], str, int]:  # fmt: skip
    """One Dask task: ``segment_tiles`` with the worker's cached model; with the worker's peak memory."""
    return _task_done(segment_tiles(scene, grid, tiles, _worker_model(source, threads), prompts_follow))


def _task_done(results: list[TileResult]) -> tuple[list[TileResult], str, int]:
    """A task's results with the worker's name and peak memory, its heap given back first."""
    heap.give_back()  # a worker then holds what one task needs, not what the heap kept over many (see MALLOC)
    return results, _worker_name(), peak_rss()


def prompt_tile(scene: Scene, grid: TileGrid, job: PromptJob, model: Segmenter) -> TileResult:
    """Read a tile's window again and answer its prompts (``geosam.reprompt``)."""
    image = read_tile(scene, job.tile, grid.size)
    start = time.perf_counter()
    pieces = answer(image, job.prompts, model, grid)
    return TileResult(job.tile, pieces, True, round=job.round, model_s=time.perf_counter() - start)


def _prompt_task(
    scene: Scene, grid: TileGrid, job: PromptJob, source: ModelSource, threads: int | None
) -> tuple[list[TileResult], str, int]:
    """One Dask task: ``prompt_tile`` with the worker's cached model; with the worker's peak memory."""
    return _task_done([prompt_tile(scene, grid, job, _worker_model(source, threads))])


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # not on a Dask worker
        return f"pid {os.getpid()}"


def cores() -> int:
    return os.cpu_count() or 1


def default_workers(device: str = "cpu") -> int:
    """Local worker processes for a model on ``device``: on the CPU one, whose torch threads use every
    core (one model in memory, and faster than a process per core); with a GPU, one per core."""
    return 1 if device == "cpu" else cores()


def scheduler_address(scheduler: str | None) -> str | None:
    """``scheduler``, else Dask's configured ``scheduler-address`` (``DASK_SCHEDULER_ADDRESS``), else None."""
    if scheduler:
        return scheduler
    import dask

    return dask.config.get("scheduler-address", None) or None


# glibc's allocator in local workers. Dask sets MALLOC_TRIM_THRESHOLD_ to 64 kB to give memory back
# sooner; set at all, it stops glibc from adapting its mmap threshold, so every array over 128 kB is
# fresh pages from the OS, and the model ran half as fast. Arrays up to 32 MB (the most glibc takes)
# come from the heap and are reused instead, but for the image encoder's activations, mapped from 8 MB
# (geosam.heap.mapped_above), and the decoder's, kept between its calls (geosam.models.decoder): both
# left holes in the heap that raised a ViT-B worker's peak by ~100 MiB. Up to 64 MB of freed heap is kept.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 64 * 2**20}


@contextmanager
def dask_client(
    workers: int | None = None, scheduler: str | None = None, device: str = "cpu"
) -> Iterator[Client]:
    """A client of ``scheduler`` (an address or a scheduler file), or of a local cluster of
    ``workers`` processes (default: ``default_workers(device)``) that run one task at a time."""
    import dask

    if scheduler:
        file = scheduler.endswith(".json") and Path(scheduler).is_file()
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        try:
            client = (
                Client(scheduler_file=scheduler, timeout=timeout)
                if file
                else Client(scheduler, timeout=timeout)
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise SchedulerError(
                f"cannot reach the Dask scheduler {scheduler} ({reason(exc)}); "
                "check that it runs and that this machine can reach its address"
            ) from None
        with client:
            yield client
        return
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in MALLOC.items()}), LocalCluster(
        n_workers=workers or default_workers(device),
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port: 8787 may be taken by another cluster
        silence_logs=logging.CRITICAL,  # a failed task is re-raised on the client, in one line
    ) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


class _Slots:
    """How many tasks to keep in flight: two per worker thread, rechecked as workers come and go."""

    def __init__(self, client: Client, every_s: float = 2.0) -> None:
        self.client, self.every_s, self.checked, self.value = client, every_s, 0.0, 2

    def __call__(self) -> int:
        now = time.monotonic()
        if now - self.checked >= self.every_s:
            self.checked = now
            try:
                info = self.client.scheduler_info(n_workers=-1)["workers"]
                self.value = max(2, 2 * sum(int(w.get("nthreads", 1)) for w in info.values()))
            except (OSError, TimeoutError, KeyError):  # the scheduler is busy or reconnecting: keep the last
                pass
        return self.value


def run_tiles(
    client: Client,
    scene: Scene,
    grid: TileGrid,
    source: ModelSource,
    tiles: Iterable[Tile] | None = None,
    retries: int = 2,
    threads: int | None = 0,
    peaks: dict[str, int] | None = None,
    tiles_per_task: int = 1,
    jobs: deque[PromptJob] | None = None,
) -> Iterator[TileResult]:
    """Segment ``tiles`` (default: all) on the cluster, with a bounded number of tasks in flight.

    Tiles are submitted as earlier ones finish, about two per worker thread at a time, so the
    scheduler never holds more than a few tasks however large the scene. A task that raises is
    retried ``retries`` times by the scheduler; a task whose worker dies is moved to another
    worker by the scheduler. A tile that still fails comes back with ``error`` set, not raised.
    ``threads`` is torch's threads per worker (0: cores / local workers; None: leave as the worker
    has it). ``tiles_per_task`` tiles go to each task, embedded in one encoder call (for GPUs).
    ``peaks`` collects each worker's peak resident memory in bytes. ``jobs``: prompt jobs that the
    caller adds to while it takes results; they go before tiles, one per task (None: no prompts
    follow, and the workers' models keep nothing for them). Yields tiles' results as they come, in no
    fixed order.
    """
    if threads == 0:
        workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        threads = max(1, cores() // workers)
    pending = iter(grid if tiles is None else tiles)
    slots = _Slots(client)
    in_flight = as_completed()
    run = uuid.uuid4().hex[:8]
    tiles_of: dict[str, tuple[Tile, ...]] = {}
    rounds_of: dict[str, int] = {}

    def submit(n: int) -> None:
        for _ in range(n):
            if jobs:
                job = jobs.popleft()
                future = client.submit(
                    _prompt_task, scene, grid, job, source, threads, retries=retries,
                    key=f"geosam-prompt-{job.tile.row}-{job.tile.col}-{job.round}-{run}",
                )  # fmt: skip
                tiles_of[future.key], rounds_of[future.key] = (job.tile,), job.round
                in_flight.add(future)
                continue
            group = tuple(_take(pending, tiles_per_task))
            if not group:
                return
            future = client.submit(
                _segment_task, scene, grid, group, source, threads, jobs is not None, retries=retries,
                key=f"geosam-tile-{group[0].row}-{group[0].col}-{run}",
            )  # fmt: skip
            tiles_of[future.key], rounds_of[future.key] = group, 0
            in_flight.add(future)

    submit(slots())
    for future in in_flight:
        group, round = tiles_of.pop(future.key), rounds_of.pop(future.key)
        if future.status == "finished":
            results, worker, peak = future.result()
            if peaks is not None:
                peaks[worker] = max(peaks.get(worker, 0), peak)
        else:
            error, bad_input = _failure(future)
            results = [
                TileResult(tile, [], False, error=error, input_error=bad_input, round=round) for tile in group
            ]
            for tile in group:
                log.warning("tile %d,%d failed%s: %s", tile.row, tile.col, _round(round), error)
        future.release()
        yield from results  # the caller may add jobs here: submitted next, so none is left behind
        submit(max(0, slots() - in_flight.count()))


def _round(round: int) -> str:
    return f" in prompt round {round}" if round else ""


def _failure(future) -> tuple[str, bool]:
    """Why a task failed, and whether on its input."""
    try:
        exc = future.exception()
    except Exception as raised:  # noqa: BLE001 - cancelled futures raise instead of returning
        exc = raised
    if exc is None:
        return future.status, False
    return reason(exc), isinstance(exc, InputError)


def run_tiles_here(
    scene: Scene,
    grid: TileGrid,
    source: ModelSource,
    tiles: Iterable[Tile] | None = None,
    retries: int = 2,
    jobs: deque[PromptJob] | None = None,
) -> Iterator[TileResult]:
    """``run_tiles`` in this process, without Dask (tests, debugging); ``jobs`` go before each tile."""
    model = source.load()
    prompts_follow = jobs is not None
    jobs = deque() if jobs is None else jobs
    pending = iter(grid if tiles is None else tiles)
    while True:
        job = jobs.popleft() if jobs else None
        tile = next(pending, None) if job is None else job.tile
        if tile is None:
            return
        for attempt in range(retries + 1):
            try:
                if job is None:
                    yield from segment_tiles(scene, grid, [tile], model, prompts_follow)
                else:
                    yield prompt_tile(scene, grid, job, model)
                break
            except Exception as exc:  # noqa: BLE001 - reported as a failed tile, like a Dask task's error
                if attempt == retries:
                    round = 0 if job is None else job.round
                    log.warning("tile %d,%d failed%s: %s", tile.row, tile.col, _round(round), reason(exc))
                    yield TileResult(
                        tile,
                        [],
                        False,
                        error=reason(exc),
                        input_error=isinstance(exc, InputError),
                        round=round,
                    )


def _take(tiles: Iterator[Tile], n: int) -> list[Tile]:
    return [tile for _, tile in zip(range(n), tiles)]


def to_frame(
    scene: Scene, objects: list[StitchedObject], min_area: float = 0.0, simplify: float = 0.0
) -> gpd.GeoDataFrame:
    """Stitched objects (scene pixel space) to a GeoDataFrame in the scene's CRS, largest first."""
    import geopandas as gpd  # here: workers import this module for their tasks and never need it

    pixel = tidy(np.array([o.geometry for o in objects], dtype=object), simplify)
    geometry = to_map(pixel, scene.transform)
    area = (
        area_m2(geometry, scene.crs)
        if scene.crs is not None
        else np.abs(np.array([g.area for g in pixel], float))
    )
    frame = gpd.GeoDataFrame(
        {
            "score": np.array([o.score for o in objects], np.float64),
            "stability": np.array([o.stability for o in objects], np.float64),
            "area_m2": area,
            "tiles": np.array([o.tiles for o in objects], np.int32),
        },
        geometry=geometry,
        crs=scene.crs,
    )
    frame = frame[(~frame.geometry.is_empty) & (frame["area_m2"] >= min_area)]
    # objects come in the order tiles finished: sort on the outline too, so equal areas get stable ids
    frame["_key"] = [g.wkb for g in frame.geometry.normalize()]
    frame = frame.sort_values(["area_m2", "_key"], ascending=[False, True], kind="stable")
    frame = frame.drop(columns="_key").reset_index(drop=True)
    frame.insert(0, "id", np.arange(1, len(frame) + 1, dtype=np.int64))
    return frame


def segment(path: str | Path | xarray.DataArray, **options) -> gpd.GeoDataFrame:
    """Segment every object in a scene; return polygons in the scene's CRS.

    ``path`` is any GDAL raster path, or a rioxarray DataArray (dims (y, x) or (band, y, x), with
    its CRS, transform and nodata), which is written to a temporary GeoTIFF the workers read.
    Takes the keywords of ``run``; the run's report, as plain JSON data (what ``RunReport.to_json``
    writes), is in ``frame.attrs["report"]``, so the frame still writes to any format.
    """
    if is_dataarray(path):
        model = options.get("model", "mobile_sam")
        (ModelSpec(model) if isinstance(model, str) else model).check()  # before writing the array out
        with scene_file(path, options.get("pixel_coordinates", False)) as file:
            return segment(file, **options)
    frame, report = run(path, **options)
    frame.attrs["report"] = json.loads(report.to_json())
    return frame


def run(
    path: str | Path,
    *,
    model: ModelSource | str = "mobile_sam",
    bands: tuple[int | str, ...] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    stretch_8bit: bool = False,
    resolution: float | None = None,
    tile_size: int = 1024,
    overlap: int = 128,
    min_area: float = 0.0,
    simplify: float = 0.0,
    workers: int | None = None,
    scheduler: str | None = None,
    pixel_coordinates: bool = False,
    on_tile: Callable[[TileResult], None] | None = None,
    work_dir: str | Path | None = None,
    retries: int = 2,
    allow_partial: bool = False,
    parameters: dict | None = None,
    tiles_per_task: int | None = None,
    prompt_rounds: int = ROUNDS,
    threads: int | None = None,
) -> tuple[gpd.GeoDataFrame, RunReport]:
    """Segment every object in a scene; return polygons in the scene's CRS and the run's report.

    ``path`` is any GDAL raster path. ``bands``, ``percentiles``, ``stretch_8bit`` and ``resolution`` plan the reads (see
    ``open_scene``). ``tile_size`` and ``overlap`` are in pixels of the (resampled) grid, ``min_area``
    in m² (pixels² without a CRS), ``simplify`` in pixels. Tiles run as Dask tasks on ``scheduler``
    (an address or scheduler file; default: Dask's ``scheduler-address`` setting when ``workers`` is
    not given) or on a local cluster of ``workers`` processes (default: one on the CPU, using every
    core; one per core for a GPU); ``workers=0``
    runs them in this process, without Dask (tests, debugging).

    With ``work_dir``, each finished tile is kept there and a run with the same scene, model and
    settings segments only the tiles not kept yet (see ``geosam.resume``). A failing tile is tried
    ``retries`` more times; tiles that still fail raise ``TileError`` (its ``report`` lists them)
    after every other tile has run, unless ``allow_partial``, which leaves their objects out.
    ``parameters`` are recorded in the report as the run's settings (default: these keywords).
    ``tiles_per_task`` tiles are embedded in one encoder call (default: 4 on a GPU, else 1).
    A piece that runs out of its tile into a neighbour that found nothing of it is put to the
    neighbour's model as a prompt, for up to ``prompt_rounds`` rounds (see ``geosam.reprompt``).
    ``threads`` is torch's threads per worker (default: cores / workers on a local cluster, the
    workers' own on ``scheduler``; 0: cores / workers).
    """
    started = time.monotonic()
    if parameters is None:
        parameters = {
            k: v for k, v in locals().items() if k not in ("path", "on_tile", "started", "parameters")
        }
        parameters["model"] = getattr(model, "name", model)
    source = ModelSpec(model) if isinstance(model, str) else model
    source.check()
    if workers is None:
        scheduler = scheduler_address(scheduler)
    if scheduler and "://" not in str(path) and not str(path).startswith("/vsi") and Path(path).exists():
        path = os.path.abspath(path)  # workers elsewhere do not share this process's folder
    scene = open_scene(
        path, bands=bands, percentiles=percentiles, stretch_8bit=stretch_8bit, resolution=resolution,
        pixel_coordinates=pixel_coordinates,
    )  # fmt: skip
    grid = TileGrid(scene.width, scene.height, tile_size, overlap)
    log.info("%s: %d×%d px, %d tiles of %d px", scene.path, scene.width, scene.height, len(grid), tile_size)
    identity = model_identity(source)
    key = run_key(scene, grid, source)
    report = RunReport(
        scene=scene.path, scene_size_px=(scene.width, scene.height),
        crs=scene.crs.to_string() if scene.crs is not None else None,
        model=identity["name"], model_sha256=identity["checksum"],
        parameters=json.loads(json.dumps(parameters, default=str)), run_key=key,
        work_dir=str(work_dir) if work_dir else None, tiles_planned=len(grid),
    )  # fmt: skip
    work = WorkDir(work_dir, key) if work_dir else None
    if work is not None:
        work.check()
    on_tile = on_tile or (lambda result: None)
    stitcher = Stitcher(grid)
    reprompter = Reprompter(grid, prompt_rounds)
    jobs: deque[PromptJob] = deque()
    asked: dict[tuple[int, int, int], str] = {}  # digests of the jobs out, by tile and round
    objects: list[StitchedObject] = []
    finished: deque[tuple[Tile, list[Piece]]] = deque()  # tiles whose pieces are final, not yet stitched
    inputs: list[bool] = []  # of failed tiles: failed on their input
    pixels = {"all": 0, "now": 0}  # core pixels of tiles with valid pixels: all, this run's

    def feed(tile: Tile, round: int, pieces: list[Piece], segmented: bool = True) -> None:
        ready, final = reprompter.add(tile, round, pieces, segmented)
        report.prompt_pieces += len(pieces) if round else 0
        for job in ready:
            report.prompts += len(job.prompts)
            stored = work.load(job.tile, job.round, job.digest) if work is not None else None
            if stored is None:
                jobs.append(job)
                asked[(job.tile.row, job.tile.col, job.round)] = job.digest
            else:
                feed(job.tile, job.round, stored[0])
        finished.extend(final)

    def stitch() -> None:
        """Assemble the objects that tiles finished so far complete (a scene-wide one can take hundreds of MB)."""
        while finished:
            objects.extend(stitcher.add(*finished.popleft()))

    def take(result: TileResult) -> None:
        # One result behind: the last tiles' objects are assembled after a local cluster has closed,
        # so that its workers, each holding a model, are not alive as well.
        stitch()
        report.model_s += result.model_s
        if result.round:  # answers to prompts; a failure there only leaves the seam as it was
            digest = asked.pop((result.tile.row, result.tile.col, result.round))
            if work is not None and result.error is None:
                work.store(result.tile, result.pieces, True, result.round, digest)
            feed(result.tile, result.round, result.pieces)
            return
        on_tile(result)
        if result.error is not None:
            report.failed.append(TileFailure(result.tile.row, result.tile.col, result.error))
            inputs.append(result.input_error)
        else:
            if work is not None and not result.reused:
                work.store(result.tile, result.pieces, result.segmented)
            report.tiles_skipped += result.reused
            report.tiles_done += not result.reused
            report.tiles_empty += not result.segmented
            if result.segmented:
                core = result.tile.core.width * result.tile.core.height
                pixels["all"] += core
                pixels["now"] += 0 if result.reused else core
        feed(result.tile, 0, result.pieces, result.segmented and result.error is None)

    reused: set[tuple[int, int]] = set()
    if work is not None:
        for tile, pieces, segmented in iter_finished(work, grid, work.finished()):
            reused.add((tile.row, tile.col))
            take(TileResult(tile, pieces, segmented, reused=True))
        if reused:
            log.info("resuming: %d of %d tiles reused from %s", len(reused), len(grid), work.folder)
    remaining = (tile for tile in grid if (tile.row, tile.col) not in reused)
    asked_jobs = jobs if prompt_rounds else None  # None: no prompts follow, workers keep nothing for them
    if workers == 0 and not scheduler:
        report.workers = 1
        for result in run_tiles_here(scene, grid, source, remaining, retries, asked_jobs):
            take(result)
        report.peak_rss_bytes = {"this process": peak_rss()}
    else:
        device = getattr(source, "device", "cpu")
        with dask_client(workers, scheduler, device) as client:
            report.workers = len(client.scheduler_info(n_workers=-1)["workers"])
            threads = threads if threads is not None or scheduler else 0
            peaks = report.peak_rss_bytes
            batch = tiles_per_task or (1 if device == "cpu" else GPU_TILES_PER_TASK)
            results = run_tiles(
                client, scene, grid, source, remaining, retries, threads, peaks, batch, asked_jobs
            )
            for result in results:
                take(result)
    reprompter.close()
    stitch()
    stitcher.close()
    objects = drop_duplicates(objects)
    area = _pixel_area_km2(scene)
    if area is not None:
        report.area_km2, report.area_km2_this_run = pixels["all"] * area, pixels["now"] * area
    report.finish(time.monotonic() - started)
    if report.failed and not allow_partial:
        report.status = "failed"
        if work is not None:
            work.remove_if_empty()
        shown = "; ".join(f"tile {f.row},{f.col}: {f.error}" for f in report.failed[:3])
        more = f"; and {len(report.failed) - 3} more" if len(report.failed) > 3 else ""
        kept = f"finished tiles are kept in {work.folder}: " if work is not None and work.finished() else ""
        error = TileInputError if all(inputs) else TileError
        raise error(
            f"{len(report.failed)} of {len(grid)} tiles failed after {retries + 1} tries ({shown}{more}); "
            f"{kept}run the same command again to retry them, or pass --allow-partial to leave them out",
            report,
        )
    frame = to_frame(scene, objects, min_area, simplify)
    report.objects = len(frame)
    report.status = "partial" if report.failed else "complete"
    return frame, report


def _pixel_area_km2(scene: Scene) -> float | None:
    """Mean area of one pixel of the scene's grid, in km² (None without a CRS)."""
    if scene.crs is None:
        return None
    west, south, east, north = scene.bounds
    total = area_m2(np.array([shapely.box(west, south, east, north)]), scene.crs)[0]
    return float(total) / (scene.width * scene.height) / 1e6
