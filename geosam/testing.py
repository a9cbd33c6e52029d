"""Synthetic scenes with known objects, and a reference segmenter that answers with their exact masks.

Public, for checking the pipeline around the model: ``ReferenceModel`` stands in for a model so that
tiling, vectorizing and stitching can be measured against objects whose polygons are known (geosam's
tests, ``benchmarks/seams.py`` and ``benchmarks/plan.py`` use it; so can a user's own checks). The
tests' other doubles live in ``tests/doubles.py``. ``dask_cluster`` starts a real scheduler and
workers on this machine, for the tests and benchmarks that need separate processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from shapely.geometry import shape

from geosam.models.base import Masks, Segmenter
from geosam.tiling import TileImage

CRS_UTM = CRS.from_epsg(32633)


@dataclass(frozen=True)
class SyntheticScene:
    """A generated GeoTIFF scene, its object-id raster and the polygons of its visible objects."""

    path: Path  # RGB uint8 GeoTIFF, nodata 0
    labels: Path  # int32 GeoTIFF on the same grid: object id per pixel, 0 for background and nodata
    truth: dict[int, shapely.Geometry]  # object id -> polygon, scene pixel coordinates
    transform: Affine
    crs: CRS
    width: int
    height: int

    @property
    def model(self) -> ReferenceModel:
        return ReferenceModel(str(self.labels))


def make_scene(
    folder: Path,
    seed: int = 0,
    width: int = 512,
    height: int = 384,
    max_size: int = 192,
    objects: int = 60,
    name: str = "scene",
    min_size: int = 2,
    rings: bool = True,
) -> SyntheticScene:
    """Write a seeded scene of known objects to ``folder``.

    Objects are rectangles, discs and (with ``rings``) rings, polygons with a hole, from ``min_size``
    up to ``max_size`` px across (sizes in pixels, log-uniform), some in touching pairs, some cut by
    the scene border, some cut by two nodata blocks. Every object's visible part is one 4-connected
    region, so it is exactly one polygon. The scene has a UTM CRS and 0.5 m pixels.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.int32)
    next_id = 1
    kinds = ["rect", "disc", "ring"] if rings else ["rect", "disc"]
    for _ in range(objects * 4):
        if next_id > objects:
            break
        size = int(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
        kind = rng.choice(kinds) if size >= 8 else "rect"
        footprint = _footprint(kind, size, rng)
        # centres may fall a little outside the scene, so some objects are cut by its border
        y = int(rng.integers(-size // 3, height - size + size // 3 + 1))
        x = int(rng.integers(-size // 3, width - size + size // 3 + 1))
        if _place(labels, footprint, y, x, next_id):
            next_id += 1
            if kind == "rect" and rng.random() < 0.5 and next_id <= objects:
                # a touching neighbour: shares the rectangle's right edge
                other = np.ones((int(rng.integers(2, size + 2)), int(rng.integers(2, size + 2))), bool)
                if _place(labels, other, y, x + footprint.shape[1], next_id):
                    next_id += 1
    valid = np.ones((height, width), bool)
    for _ in range(2):
        h, w = int(rng.integers(height // 8, height // 3)), int(rng.integers(width // 8, width // 3))
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        valid[y : y + h, x : x + w] = False
    labels[~valid] = 0
    return _write_scene(folder, _one_region_each(labels), valid, rng, seed, name)


def scene_from_labels(
    folder: Path, labels: np.ndarray, valid: np.ndarray | None = None, seed: int = 0, name: str = "scene"
) -> SyntheticScene:
    """Write a scene whose objects are given: ``labels`` holds an object id per pixel (0: ground), each
    object one 4-connected region; flat colours over textured ground, nodata off ``valid``."""
    valid = np.ones(labels.shape, bool) if valid is None else valid
    return _write_scene(folder, labels, valid, np.random.default_rng(seed), seed, name)


def flat_shapes(folder: Path, tile_size: int = 512, overlap: int = 64, seed: int = 1) -> SyntheticScene:
    """A scene of 4×4 tiles (at ``tile_size`` and ``overlap``) with flat shapes larger than a tile on
    textured ground: a disc that holds a whole tile, a bar 3.5 tiles long, an L and a rectangle."""
    step = tile_size - overlap
    side = 4 * step + overlap
    centre = step + tile_size / 2  # of tile (1, 1)'s read window
    shapes = [
        shapely.Point(centre, centre).buffer(0.8 * tile_size),
        shapely.box(0.05 * side, 0.81 * side, 0.94 * side, 0.89 * side),
        shapely.box(0.75 * side, 0.05 * side, 0.86 * side, 0.7 * side)
        | shapely.box(0.65 * side, 0.6 * side, 0.86 * side, 0.7 * side),
        shapely.box(0.05 * side, 0.67 * side, 0.38 * side, 0.75 * side),
    ]
    labels = rasterio.features.rasterize(
        [(g, k) for k, g in enumerate(shapes, start=1)], out_shape=(side, side), dtype="int32"
    )
    return scene_from_labels(folder, labels, seed=seed, name="flat")


def _write_scene(
    folder: Path, labels: np.ndarray, valid: np.ndarray, rng: np.random.Generator, seed: int, name: str
) -> SyntheticScene:
    height, width = labels.shape
    transform = Affine(0.5, 0, 400_000.0 + 100 * seed, 0, -0.5, 5_000_000.0)
    folder.mkdir(parents=True, exist_ok=True)
    path, label_path = folder / f"{name}.tif", folder / f"{name}-labels.tif"
    _write(path, _render(labels, valid, rng), transform, nodata=0)
    _write(label_path, labels[None], transform, nodata=None)
    truth = {
        int(value): shape(geom)
        for geom, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=4)
    }
    return SyntheticScene(path, label_path, truth, transform, CRS_UTM, width, height)


def _footprint(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "rect":
        return np.ones((size, max(2, int(size * rng.uniform(0.4, 1.0)))), bool)
    yy, xx = np.mgrid[:size, :size] + 0.5 - size / 2
    r = np.hypot(yy, xx)
    disc = r <= size / 2
    return disc & (r >= size / 5) if kind == "ring" else disc


def _place(labels: np.ndarray, footprint: np.ndarray, y: int, x: int, value: int) -> bool:
    """Paint ``footprint`` (top-left at y, x, cut by the scene) where no object is yet."""
    h, w = labels.shape
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + footprint.shape[0], h), min(x + footprint.shape[1], w)
    if y0 >= y1 or x0 >= x1:
        return False
    part = footprint[y0 - y : y1 - y, x0 - x : x1 - x]
    if not part.any() or labels[y0:y1, x0:x1][part].any():
        return False
    labels[y0:y1, x0:x1][part] = value
    return True


def _one_region_each(labels: np.ndarray) -> np.ndarray:
    """Keep each object's largest 4-connected region (nodata and the border can cut objects in parts)."""
    for value, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        crop = labels[box]
        regions, count = ndimage.label(crop == value)
        if count > 1:
            largest = 1 + int(np.argmax(np.bincount(regions.ravel())[1:]))
            crop[(regions > 0) & (regions != largest)] = 0
    return labels


def _render(labels: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An RGB image: a colour per object over textured ground; 0 only on nodata."""
    colours = rng.integers(30, 256, (int(labels.max()) + 1, 3), dtype=np.uint8)
    colours[0] = 0
    ground = rng.integers(1, 40, (*labels.shape, 3), dtype=np.uint8)
    image = np.where(labels[..., None] > 0, colours[labels], ground)
    image[~valid] = 0
    return image.transpose(2, 0, 1)


def _write(path: Path, data: np.ndarray, transform: Affine, nodata: float | None) -> None:
    profile = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": len(data), "dtype": data.dtype,
        "crs": CRS_UTM, "transform": transform, "nodata": nodata, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)


@dataclass(frozen=True)
class ReferenceModel:
    """A model source (like ``ModelSpec``) for the reference segmenter of one synthetic scene."""

    labels: str  # the scene's object-id GeoTIFF
    name: str = "reference"
    misses_cut: bool = False  # see ReferenceSegmenter
    ground: bool = False  # see ReferenceSegmenter

    def check(self) -> None:
        if not Path(self.labels).exists():
            raise FileNotFoundError(f"{self.labels}: no such label raster")

    def load(self) -> Segmenter:
        return ReferenceSegmenter(self.labels, self.misses_cut, self.ground)


class ReferenceSegmenter:
    """Test double for a segmenter: the exact masks of the known objects visible in a tile.

    It reads the tile's own window (``TileImage.tile.read``) of the scene's object-id raster, so its
    answer depends only on where the tile is, never on how the scene is tiled. Asked with points,
    it answers the object under the first point. Like SAM, it answers a tile that lies inside an
    object with the whole tile. With ``misses_cut``, automatic mode leaves out the objects that run
    out of the window in every other tile (those whose id + row + col is even), as SAM can miss an
    object it sees only in part; points still find them. With ``ground``, it also answers the ground
    between the objects as one mask, as SAM does on uniform ground (the whole tile where the tile
    holds no object).
    """

    name = "reference"

    def __init__(self, labels: str, misses_cut: bool = False, ground: bool = False) -> None:
        self.labels = labels
        self.misses_cut = misses_cut
        self.ground = ground

    def _ids(self, tile: TileImage) -> np.ndarray:
        """The tile's object ids, padded to the tile image, 0 off objects and on invalid pixels."""
        with rasterio.open(self.labels) as ds:
            ids = ds.read(1, window=tile.tile.read.window)
        padded = np.zeros(tile.valid.shape, ids.dtype)
        padded[: ids.shape[0], : ids.shape[1]] = ids
        return np.where(tile.valid, padded, 0)

    def automatic(self, tile: TileImage) -> Masks:
        ids = self._ids(tile)
        present = np.unique(ids[ids > 0])
        if self.misses_cut:
            with rasterio.open(self.labels) as ds:
                width, height = ds.width, ds.height
            read = tile.tile.read
            edges = [ids[:, 0] if read.x0 > 0 else None, ids[0] if read.y0 > 0 else None]
            edges += [ids[:, read.width - 1] if read.x1 < width else None]
            edges += [ids[read.height - 1] if read.y1 < height else None]
            cut = np.unique(np.concatenate([e for e in edges if e is not None] or [np.zeros(0, ids.dtype)]))
            missed = np.isin(present, cut) & ((present + tile.tile.row + tile.tile.col) % 2 == 0)
            present = present[~missed]
        masks = ids[None] == present[:, None, None]
        ground = (ids == 0) & tile.valid
        if self.ground and ground.any():
            masks = np.concatenate([masks, ground[None]])
        ones = np.ones(len(masks), np.float32)
        return Masks(masks, ones, ones.copy())

    def point_masks(self, tile: TileImage, points: list[np.ndarray]) -> list[Masks]:
        ids = self._ids(tile)
        h, w = ids.shape
        found = []
        for group in points:
            x, y = np.asarray(group, float)[0]
            row, col = min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)
            hit = tile.valid[row, col] and (ids[row, col] > 0 or self.ground)
            masks = ((ids == ids[row, col]) & tile.valid)[None] if hit else np.zeros((0, h, w), bool)
            ones = np.ones(len(masks), np.float32)
            found.append(Masks(masks, ones, ones.copy()))
        return found


def mosaic(path: Path, size: int, sources: list[Path]) -> Path:
    """A size×size RGB GeoTIFF of real imagery: ``sources`` alternating, mirrored so cells join smoothly.

    Written cell by cell (memory: the sources plus one cell), georeferenced on the first source's
    grid, so large test and benchmark scenes come from real pixels without being held whole.
    """
    cells = []
    for source in sources:
        with rasterio.open(source) as ds:
            cells.append(ds.read([1, 2, 3]))
    with rasterio.open(sources[0]) as ds:
        crs, transform = ds.crs, ds.transform
    h, w = min(c.shape[1] for c in cells), min(c.shape[2] for c in cells)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": crs,
        "transform": transform, "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for i, y in enumerate(range(0, size, h)):
            for j, x in enumerate(range(0, size, w)):
                cell = cells[(i + j) % len(cells)][:, :h, :w]
                cell = cell[:, ::-1] if i % 2 else cell
                cell = cell[:, :, ::-1] if j % 2 else cell
                cell = cell[:, : min(h, size - y), : min(w, size - x)]
                dst.write(
                    np.ascontiguousarray(cell),
                    window=rasterio.windows.Window(x, y, cell.shape[2], cell.shape[1]),
                )
    return path


@dataclass(frozen=True)
class DaskProcesses:
    """A running ``dask_cluster``: the scheduler's address and file, and the worker processes."""

    address: str
    file: Path
    workers: list[subprocess.Popen]


@contextmanager
def dask_cluster(
    folder: Path, workers: int = 2, pythonpath: Sequence[str | Path] = ()
) -> Iterator[DaskProcesses]:
    """A `dask scheduler` and ``workers`` single-threaded `dask worker` processes on 127.0.0.1.

    The workers have no nanny, so a killed worker stays dead. The scheduler file is written in
    ``folder``. The processes import this geosam (its checkout first on PYTHONPATH, where
    ``tests/`` is too), then ``pythonpath``. Ready once the scheduler file is written (an error if
    the scheduler dies or 60 s pass first) and every worker has joined. Terminated on exit, killed
    if still running 15 s later.
    """
    from geosam import scheduler  # imports Dask's distributed

    file = folder / "scheduler.json"
    path = [Path(__file__).resolve().parents[1], *pythonpath]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path))}
    worker = [sys.executable, "-m", "distributed.cli.dask_worker", "--host", "127.0.0.1", "--no-dashboard",
              "--scheduler-file", str(file), "--nthreads", "1", "--no-nanny"]  # fmt: skip
    commands = [scheduler.command(file, "--no-dashboard")] + workers * [worker]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for command in commands
    ]
    try:
        _wait_for(file, processes[0], workers)
        yield DaskProcesses(json.loads(file.read_text())["address"], file, processes[1:])
    finally:
        _stop(processes)


def _wait_for(file: Path, scheduler: subprocess.Popen, workers: int) -> None:
    """Until the scheduler has written ``file`` and ``workers`` workers have joined it."""
    from distributed import Client

    deadline = time.monotonic() + 60
    while not file.exists():
        if scheduler.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the dask scheduler did not start")
        time.sleep(0.1)
    with Client(scheduler_file=str(file), timeout="30s") as client:
        client.wait_for_workers(workers, timeout=60)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
