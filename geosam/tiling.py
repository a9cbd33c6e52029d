"""Tiles of a scene: overlapping read windows whose cores cover the scene exactly once."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geosam import settings
from geosam.errors import InputError, reason
from geosam.georef import Scene, reader, to_uint8

_SIZE, _OVERLAP = settings.field(settings.Tiling, "tile_size"), settings.field(settings.Tiling, "overlap")
MIN_TILE, MAX_TILE = _SIZE.metadata["ge"], _SIZE.metadata["le"]
MIN_OVERLAP = _OVERLAP.metadata[
    "ge"
]  # neighbouring tiles must share pixels for objects to merge across seams


def check_tiling(size: int, overlap: int) -> None:
    """Fail early on a tile size or overlap (pixels) that cannot make a tile grid."""
    if not MIN_TILE <= size <= MAX_TILE:
        raise InputError(f"tile size {size} px is out of range: use {MIN_TILE} to {MAX_TILE}")
    if not MIN_OVERLAP <= overlap < size:
        raise InputError(
            f"overlap {overlap} px must be at least {MIN_OVERLAP} and smaller than the tile size {size} px: "
            "tiles must share pixels to merge objects across seams (64 to 256 suits the model)"
        )


@dataclass(frozen=True, order=True)
class Box:
    """A pixel rectangle [x0, x1) × [y0, y1) in scene pixel coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def around(cls, mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> Box | None:
        """The smallest box holding a boolean mask's true pixels, its top-left pixel at ``origin`` (x, y);
        None when it has none."""
        rows = np.flatnonzero(mask.any(axis=1))
        if not len(rows):
            return None
        cols = np.flatnonzero(mask.any(axis=0))
        x, y = origin
        return cls(x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def window(self) -> Window:
        return Window(self.x0, self.y0, self.width, self.height)

    def intersection(self, other: Box) -> Box | None:
        box = Box(
            max(self.x0, other.x0), max(self.y0, other.y0), min(self.x1, other.x1), min(self.y1, other.y1)
        )
        return box if box.x0 < box.x1 and box.y0 < box.y1 else None

    def union(self, other: Box) -> Box:
        """The smallest box holding both."""
        return Box(
            min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1)
        )


@dataclass(frozen=True, order=True)
class Tile:
    """One tile: the window read for the model and the core it answers for.

    ``TileGrid`` makes them; boxes are pixel rectangles [x0, x1) × [y0, y1) of the scene's grid.

    Attributes:
        row: The tile's row in the grid, from 0 at the top.
        col: The tile's column in the grid, from 0 at the left.
        read: The window read for the model: up to the tile size, smaller at the scene's edge.
        core: The part of ``read`` whose objects this tile answers for; the cores of a grid
            cover the scene exactly once.
    """

    row: int
    col: int
    read: Box
    core: Box


@dataclass(frozen=True)
class TileGrid:
    """A scene's tiles of ``size`` pixels that overlap their neighbours by ``overlap`` pixels.

    Tile cores partition the scene: each core is its read window trimmed by half the overlap on
    internal edges only, so the scene border keeps its pixels.

    Iterating gives the tiles row by row; ``len`` is their number and ``shape`` (tiles down,
    tiles across) their layout.

    Attributes:
        width: The scene's grid width, in pixels.
        height: The scene's grid height, in pixels.
        size: Tile side, in pixels (default and limits: the settings' tile size).
        overlap: Pixels shared by neighbouring tiles; at least the settings' minimum and smaller
            than ``size`` (default: the settings' overlap). Objects smaller than this are never cut.

    Raises:
        InputError: ``size`` or ``overlap`` is out of range, or the grid has no pixels.
    """

    width: int
    height: int
    size: int = settings.TILING.tile_size
    overlap: int = settings.TILING.overlap

    def __post_init__(self) -> None:
        check_tiling(self.size, self.overlap)
        if self.width < 1 or self.height < 1:
            raise InputError("the scene has no pixels")

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @property
    def shape(self) -> tuple[int, int]:
        """Tiles down, tiles across."""
        return self._count(self.height), self._count(self.width)

    def _count(self, length: int) -> int:
        return max(1, math.ceil((length - self.overlap) / self.stride))

    def _span(self, index: int, count: int, length: int) -> tuple[int, int, int, int]:
        start = index * self.stride
        half = self.overlap // 2
        core_start = 0 if index == 0 else start + half
        core_end = length if index == count - 1 else (index + 1) * self.stride + half
        return start, min(start + self.size, length), core_start, core_end

    def tile(self, row: int, col: int) -> Tile:
        rows, cols = self.shape
        y0, y1, cy0, cy1 = self._span(row, rows, self.height)
        x0, x1, cx0, cx1 = self._span(col, cols, self.width)
        return Tile(row, col, Box(x0, y0, x1, y1), Box(cx0, cy0, cx1, cy1))

    def __iter__(self) -> Iterator[Tile]:
        rows, cols = self.shape
        return (self.tile(r, c) for r in range(rows) for c in range(cols))

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def neighbours(self, tile: Tile) -> Iterator[Tile]:
        """The up to eight tiles around ``tile``: those whose read windows overlap it."""
        rows, cols = self.shape
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r, c = tile.row + dr, tile.col + dc
                if (dr or dc) and 0 <= r < rows and 0 <= c < cols:
                    yield self.tile(r, c)


class TileMarks:
    """A small whole number (0-255) for each tile of a grid, 0 until set, in one byte a tile: the
    bookkeeping of a run whose memory does not grow with the tiles done (a set of (row, col) keys
    takes about 150 bytes a tile)."""

    def __init__(self, grid: TileGrid) -> None:
        self._marks = np.zeros(grid.shape, np.uint8)

    def __getitem__(self, key: tuple[int, int]) -> int:
        return int(self._marks[key])

    def __setitem__(self, key: tuple[int, int], value: int) -> None:
        self._marks[key] = value

    def count(self) -> int:
        """How many tiles are marked (not 0)."""
        return int(np.count_nonzero(self._marks))

    def marked(self) -> Iterator[tuple[int, int]]:
        """(row, col) of each marked tile, row by row."""
        for row, line in enumerate(self._marks):
            for col in np.flatnonzero(line):
                yield row, int(col)


@dataclass(frozen=True)
class TileImage:
    """A tile's pixels as the model sees them, padded to the tile size at the scene edge.

    ``tile`` places the image in the scene: pixel (row, col) of ``image`` is scene pixel
    (``tile.read.y0 + row``, ``tile.read.x0 + col``).
    """

    tile: Tile
    image: np.ndarray  # uint8 (size, size, 3)
    valid: np.ndarray  # bool (size, size): real, non-nodata pixels


def read_tile(scene: Scene, tile: Tile, size: int) -> TileImage:
    """Read one tile's window (only that window) as uint8 RGB with its validity mask."""
    rgb, valid_part = read_pixels(scene, tile.read, what=f"tile {tile.row},{tile.col}")
    image = np.zeros((size, size, 3), np.uint8)
    valid = np.zeros((size, size), bool)
    h, w = valid_part.shape
    image[:h, :w] = rgb
    valid[:h, :w] = valid_part
    return TileImage(tile, image, valid)


def read_pixels(
    scene: Scene, box: Box, out_shape: tuple[int, int] | None = None, what: str = "a window"
) -> tuple[np.ndarray, np.ndarray]:
    """One window of the scene as uint8 RGB (H, W, 3), zero where invalid, and its validity (H, W).

    ``out_shape`` (H, W) reads the window decimated to that size (GDAL picks overviews where there
    are any; pixel values are averaged, validity is GDAL's mask at the coarser size).
    """
    failure = None
    bands = list(scene.bands)
    try:
        with reader(scene) as ds:
            if out_shape is None:
                data = ds.read(bands, window=box.window)
                masks = ds.read_masks(bands, window=box.window)
            else:
                shape = (len(bands), *out_shape)
                data = ds.read(bands, window=box.window, out_shape=shape, resampling=Resampling.average)
                masks = ds.read_masks(bands, window=box.window, out_shape=shape)
    except RasterioIOError as exc:
        failure = reason(exc)
    if failure is not None:  # raised outside the handler: GDAL's exceptions must not ride along from a worker
        raise InputError(
            f"{scene.path}: cannot read pixels of {what} ({failure}); the file may be truncated or corrupt"
        )
    valid = (masks > 0).all(axis=0)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    rgb = to_uint8(data, scene.stretch)
    if len(rgb) == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    image = np.ascontiguousarray(rgb.transpose(1, 2, 0))
    image[~valid] = 0
    return image, valid


SNAP = 8  # prompt windows start on a grid of 1/SNAP of their size, so nearby prompts share a window
MARGIN = 16  # pixels of context kept around a prompt group, at the window's resolution


@dataclass(frozen=True, order=True)
class PromptWindow:
    """A window read for prompts: ``box`` in scene pixels, decimated by ``factor`` to at most ``size`` px.

    ``factor`` is 1 (full resolution) or, when the prompts span more than one model input, a power of
    two (or just enough to fit the whole scene into ``size`` px).
    """

    box: Box
    factor: float  # scene pixels per image pixel

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the image read."""
        return max(1, math.ceil(self.box.height / self.factor - 1e-9)), max(
            1, math.ceil(self.box.width / self.factor - 1e-9)
        )

    def transform(self, scene_transform: Affine) -> Affine:
        """Image pixel -> map coordinates of the image read through this window."""
        rows, cols = self.shape
        return (
            scene_transform
            @ Affine.translation(self.box.x0, self.box.y0)
            @ Affine.scale(self.box.width / cols, self.box.height / rows)
        )


def prompt_window(
    width: int, height: int, bounds: tuple[float, float, float, float], size: int = 1024
) -> PromptWindow:
    """The window, at most ``size`` px of image, that holds ``bounds`` (x0, y0, x1, y1 scene pixels) whole.

    The window is ``size`` × factor scene pixels, factor the smallest power of two at which the
    bounds and a margin fit; it is centred on the bounds to within 1/SNAP of its size (its origin is
    snapped so that nearby prompts share a window and its embedding) and kept inside the scene.
    """
    x0, y0, x1, y1 = bounds
    extent = max(x1 - x0, y1 - y0)
    factor = 1
    while extent + 2 * MARGIN * factor > size * factor * (1 - 1 / SNAP) and size * factor < max(
        width, height
    ):
        factor *= 2
    span = size * factor
    stride = span // SNAP

    def start(centre: float, length: int) -> int:
        if length <= span:
            return 0
        origin = round((centre - span / 2) / stride) * stride
        return int(min(max(origin, 0), length - span))

    left, top = start((x0 + x1) / 2, width), start((y0 + y1) / 2, height)
    box = Box(left, top, min(left + span, width), min(top + span, height))
    if box.width == width and box.height == height:  # the whole scene: read it just as coarse as needed
        return PromptWindow(box, max(1.0, max(width, height) / size))
    return PromptWindow(box, float(factor))
