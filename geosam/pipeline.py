"""The Dask run over a scene's tiles: workers read their own windows and keep their model loaded."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import geopandas as gpd
import numpy as np
from dask.distributed import Client, LocalCluster, as_completed

from geosam.georef import Scene, area_m2, open_scene
from geosam.models import Masks, ModelSpec, Segmenter
from geosam.stitch import Piece, StitchedObject, Stitcher, pieces_from_masks
from geosam.tiling import Tile, TileGrid, read_tile
from geosam.vectorize import tidy, to_map
from geosam.xr import is_dataarray, scene_file

if TYPE_CHECKING:
    import xarray

log = logging.getLogger(__name__)

COLUMNS = ["id", "score", "stability", "area_m2", "tiles"]


class ModelSource(Protocol):
    """Anything that names a segmenter and loads it on a worker (``ModelSpec`` for real models)."""

    name: str

    def check(self) -> None: ...

    def load(self) -> Segmenter: ...


@dataclass(frozen=True)
class TileResult:
    tile: Tile
    pieces: list[Piece]
    segmented: bool  # False when the tile had no valid pixels


@functools.lru_cache(maxsize=1)
def _worker_model(source: ModelSource, threads: int) -> Segmenter:
    """The model, loaded once per worker process."""
    import torch

    torch.set_num_threads(threads)
    return source.load()


def segment_tile(scene: Scene, grid: TileGrid, tile: Tile, model: Segmenter) -> TileResult:
    """Read the tile's window, segment it, return its pieces (polygons only)."""
    image = read_tile(scene, tile, grid.size)
    if not image.valid.any():
        return TileResult(tile, [], False)
    masks = model.automatic(image)
    masks = Masks(
        masks.masks & image.valid, masks.scores, masks.stability
    )  # invalid pixels are never objects
    return TileResult(tile, pieces_from_masks(tile, masks, grid), True)


def _segment_task(scene: Scene, grid: TileGrid, tile: Tile, source: ModelSource, threads: int) -> TileResult:
    """One Dask task: ``segment_tile`` with the worker's cached model."""
    return segment_tile(scene, grid, tile, _worker_model(source, threads))


def default_workers() -> int:
    return os.cpu_count() or 1


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A client of ``scheduler``, or of a local cluster of ``workers`` single-threaded processes."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(
        n_workers=workers or default_workers(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port: 8787 may be taken by another cluster
        silence_logs=logging.CRITICAL,  # a failed task is re-raised on the client, in one line
    ) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


def run_tiles(
    client: Client,
    scene: Scene,
    grid: TileGrid,
    source: ModelSource,
) -> Iterator[TileResult]:
    """Segment every tile on the cluster, at most a few tasks per worker in flight at a time.

    Yields tiles' results as they come, in no fixed order.
    """
    workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    threads = max(1, default_workers() // workers)
    tiles = iter(grid)
    in_flight = as_completed()
    for tile in _take(tiles, 2 * workers):
        in_flight.add(client.submit(_segment_task, scene, grid, tile, source, threads, pure=False))
    for future in in_flight:
        result: TileResult = future.result()
        future.release()
        for tile in _take(tiles, 1):
            in_flight.add(client.submit(_segment_task, scene, grid, tile, source, threads, pure=False))
        yield result


def _take(tiles: Iterator[Tile], n: int) -> list[Tile]:
    return [tile for _, tile in zip(range(n), tiles)]


def stitch_results(grid: TileGrid, results: Iterable[TileResult]) -> list[StitchedObject]:
    """Objects from tiles' results in any order, each given out as soon as its neighbourhood is in."""
    stitcher = Stitcher(grid)
    objects = [obj for result in results for obj in stitcher.add(result.tile, result.pieces)]
    stitcher.close()
    return objects


def to_frame(
    scene: Scene, objects: list[StitchedObject], min_area: float = 0.0, simplify: float = 0.0
) -> gpd.GeoDataFrame:
    """Stitched objects (scene pixel space) to a GeoDataFrame in the scene's CRS, largest first."""
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


def segment(
    path: str | Path | xarray.DataArray,
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
) -> gpd.GeoDataFrame:
    """Segment every object in a scene; return polygons in the scene's CRS.

    ``path`` is any GDAL raster path, or a rioxarray DataArray (dims (y, x) or (band, y, x), with
    its CRS, transform and nodata), which is written to a temporary GeoTIFF the workers read.
    ``bands``, ``percentiles``, ``stretch_8bit`` and ``resolution`` plan the reads (see
    ``open_scene``). ``tile_size`` and ``overlap`` are in pixels of the (resampled) grid, ``min_area``
    in m² (pixels² without a CRS), ``simplify`` in pixels. Tiles run as Dask tasks on ``scheduler``
    or a local cluster of ``workers`` processes (default: one per core); ``workers=0`` runs them in
    this process, without Dask (tests, debugging).
    """
    if is_dataarray(path):
        (ModelSpec(model) if isinstance(model, str) else model).check()  # before writing the array out
        with scene_file(path, pixel_coordinates) as file:
            return segment(
                file, model=model, bands=bands, percentiles=percentiles, stretch_8bit=stretch_8bit,
                resolution=resolution, tile_size=tile_size, overlap=overlap, min_area=min_area,
                simplify=simplify, workers=workers, scheduler=scheduler, pixel_coordinates=pixel_coordinates,
                on_tile=on_tile,
            )  # fmt: skip
    source = ModelSpec(model) if isinstance(model, str) else model
    source.check()
    scene = open_scene(
        path, bands=bands, percentiles=percentiles, stretch_8bit=stretch_8bit, resolution=resolution,
        pixel_coordinates=pixel_coordinates,
    )  # fmt: skip
    grid = TileGrid(scene.width, scene.height, tile_size, overlap)
    log.info("%s: %d×%d px, %d tiles of %d px", scene.path, scene.width, scene.height, len(grid), tile_size)
    on_tile = on_tile or (lambda result: None)
    if workers == 0 and not scheduler:
        model = source.load()
        results = (segment_tile(scene, grid, tile, model) for tile in grid)
        objects = stitch_results(grid, _notify(results, on_tile))
    else:
        with dask_client(workers, scheduler) as client:
            objects = stitch_results(grid, _notify(run_tiles(client, scene, grid, source), on_tile))
    return to_frame(scene, objects, min_area, simplify)


def _notify(results: Iterator[TileResult], on_tile: Callable[[TileResult], None]) -> Iterator[TileResult]:
    for result in results:
        on_tile(result)
        yield result
