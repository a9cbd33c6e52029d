"""A class model from the analyst's examples on one scene: points on objects or polygons around them.

Each example's tile (the grid tile whose core holds it) is read and segmented as the run would; an example
polygon is described by the tile's embedding under its pixels, an example point by the model's best mask
there. The tile's objects that match an example (IoU at least ``geosam evaluate``'s) are the model's own
outlines of it: more instances of its class, described the way the objects classified later are. The
tile's other objects (those that overlap no example) are the background the classes are told from, with
any examples of class ``background``; other objects that look as much like a class as its examples look
like each other are left out of the background (they may be unlabelled instances).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geosam.classes import BACKGROUND, FIND_MARGIN, ClassModel, fit, prototypes
from geosam.errors import InputError
from geosam.evaluation import read_vector
from geosam.georef import Scene, pixel_area_m2
from geosam.seams import WHOLE, raster
from geosam.settings import EVALUATION
from geosam.tiling import Tile, TileGrid, TileImage, read_tile
from geosam.vectorize import to_pixels

if TYPE_CHECKING:
    import geopandas as gpd

OVERLAP = 0.2  # an object sharing more than this share of the smaller of it and an example is that example
CELL_COVER = 0.5  # cells at least this much under an example's mask calibrate find-them-all
ALIKE_QUANTILE = 0.1  # of the examples' cosines to the others' mean: an object as alike is no background


def read_examples(source: str | Path | gpd.GeoDataFrame, scene: Scene, class_field: str) -> gpd.GeoDataFrame:
    """The examples (points or polygons) in the scene's pixel coordinates, with their ``class``."""
    import geopandas as gpd

    name = "the examples" if isinstance(source, gpd.GeoDataFrame) else str(source)
    frame = read_vector(source)
    if class_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != frame.geometry.name) or "none"
        raise InputError(f"{name} have no field {class_field!r} (fields: {fields}): give --class-field")
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    kinds = set(frame.geom_type) - {"Point", "MultiPoint", "Polygon", "MultiPolygon"}
    if kinds:
        raise InputError(f"{name}: {', '.join(sorted(kinds))} geometries; give points or polygons")
    if frame[class_field].isna().any():
        raise InputError(f"{name}: {int(frame[class_field].isna().sum())} examples without a {class_field}")
    if frame.crs is not None and scene.crs is not None:
        frame = frame.to_crs(scene.crs)
    elif (frame.crs is None) != (scene.crs is None):
        raise InputError(f"{name} and the scene must both have a CRS, or neither")
    pixels = to_pixels(np.asarray(frame.geometry.values, dtype=object), scene.transform)
    out = gpd.GeoDataFrame({"class": frame[class_field].astype(str).to_numpy()}, geometry=pixels)
    inside = shapely.intersects(pixels, shapely.box(0, 0, scene.width, scene.height))
    if not inside.all():
        raise InputError(f"{name}: {int((~inside).sum())} of {len(out)} examples lie outside the scene")
    return out


def learn(
    scene: Scene,
    grid: TileGrid,
    model: Any,
    examples: gpd.GeoDataFrame,
    on_tile: Callable[[int, int], None] | None = None,
) -> ClassModel:
    """A class model from examples in scene pixels (``read_examples``), described by ``model``;
    ``on_tile(done, total)`` before the first of the examples' tiles and as each one is segmented."""
    for need in ("automatic", "point_masks", "describe", "similarity"):
        if not hasattr(model, need):
            raise InputError(
                f"the model {getattr(model, 'name', model)} gives no descriptors: use a SAM model"
            )
    by_tile: dict[Tile, list[int]] = defaultdict(list)
    for i, geometry in enumerate(examples.geometry):
        by_tile[_tile_of(grid, shapely.point_on_surface(geometry))].append(i)
    labels: list[str] = []
    described: list[np.ndarray] = []
    pixels: list[int] = []  # of each example
    outlines: tuple[list[np.ndarray], list[str]] = ([], [])
    others: list[np.ndarray] = []
    shown: dict[str, list[tuple[TileImage, np.ndarray]]] = defaultdict(list)
    progress = on_tile or (lambda done, total: None)
    progress(0, len(by_tile))
    for done, (tile, indexes) in enumerate(by_tile.items(), 1):
        image = read_tile(scene, tile, grid.size)
        found = model.automatic(image)
        masks = np.stack([_example_mask(model, image, examples.geometry.iloc[i], grid.size) for i in indexes])
        described.extend(model.describe(image, masks))
        pixels.extend(masks.sum((1, 2)).tolist())
        labels.extend(examples["class"].iloc[indexes])
        overlap = _Overlap.of(found.masks, masks)
        others.extend(found.descriptors[~overlap.taken()])
        match = overlap.matching()
        outlines[0].extend(found.descriptors[match >= 0])
        outlines[1].extend(examples["class"].iloc[np.asarray(indexes)[match[match >= 0]]])
        for i, mask in zip(indexes, masks, strict=True):
            shown[examples["class"].iloc[i]].append((image, mask))
        progress(done, len(by_tile))
    examples_d, examples_l = np.stack(described), np.array(labels, object)
    found_classes, protos = prototypes(examples_d, examples_l)
    others_d = np.array(others, np.float32).reshape(-1, examples_d.shape[1])
    background = _background(others_d, examples_d, examples_l, protos, found_classes)
    thresholds = {
        c: FIND_MARGIN * _least_peak(model, shown[c], protos[k]) for k, c in enumerate(found_classes)
    }
    descriptors = np.concatenate([examples_d, background])
    labels_all = np.concatenate([examples_l, np.full(len(background), BACKGROUND, object)])
    alike = (
        np.array(outlines[0], np.float32).reshape(-1, examples_d.shape[1]),
        np.array(outlines[1], object),
    )
    return fit(
        descriptors, labels_all, encoder(model.name, getattr(model, "checksum", None)), thresholds, alike,
        _sizes(scene, np.array(pixels, np.float64), examples_l, found_classes),
    )  # fmt: skip


def _sizes(
    scene: Scene, pixels: np.ndarray, labels: np.ndarray, classes: list[str]
) -> dict[str, tuple[float, float]] | None:
    """The least and greatest area in m² of each class's examples (``pixels`` each); None without a CRS."""
    pixel = pixel_area_m2(scene)
    if pixel is None:
        return None
    return {
        c: (float(pixels[labels == c].min()) * pixel, float(pixels[labels == c].max()) * pixel)
        for c in classes
    }


def encoder(name: str, checksum: str | None) -> str:
    """What a class model's descriptors are comparable across: the model's name and weights."""
    return f"{name} sha256:{checksum[:16]}" if checksum else name


def _tile_of(grid: TileGrid, point: shapely.Point) -> Tile:
    """The tile whose core holds the point (scene pixels)."""
    x = min(max(int(point.x), 0), grid.width - 1)
    y = min(max(int(point.y), 0), grid.height - 1)
    rows, cols = grid.shape
    row = min(max(0, (y - grid.overlap // 2) // grid.stride), rows - 1) if y >= grid.overlap // 2 else 0
    col = min(max(0, (x - grid.overlap // 2) // grid.stride), cols - 1) if x >= grid.overlap // 2 else 0
    for r in (row, row + 1, row - 1):
        for c in (col, col + 1, col - 1):
            if 0 <= r < rows and 0 <= c < cols:
                tile = grid.tile(r, c)
                if tile.core.x0 <= x < tile.core.x1 and tile.core.y0 <= y < tile.core.y1:
                    return tile
    raise AssertionError(f"no tile core holds pixel {x},{y}")  # cores partition the scene


def _example_mask(model: Any, image: TileImage, geometry: shapely.Geometry, size: int) -> np.ndarray:
    """The example's pixels in the tile image: a polygon's own, or the model's best mask at a point that
    is not the whole tile (``seams.WHOLE``: automatic mode's ground, never an object)."""
    read = image.tile.read
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        mask = np.zeros((size, size), bool)
        mask[: read.height, : read.width] = raster([geometry], read)
        if not (mask & image.valid).any():
            raise InputError(f"an example polygon near pixel {_where(geometry)} covers no valid pixel")
        return mask & image.valid
    points = np.array(shapely.get_coordinates(geometry), np.float32) - np.array(
        [read.x0, read.y0], np.float32
    )
    masks = model.point_masks(image, [points])[0]
    part = masks.masks.reshape(len(masks), -1).sum(1) < WHOLE * int(image.valid.sum())
    if not part.any():
        raise InputError(
            f"the model finds no object at the example point {_where(geometry)}: move it or draw a polygon"
        )
    return masks.masks[int(np.argmax(np.where(part, masks.scores, -np.inf)))]


def _where(geometry: shapely.Geometry) -> str:
    p = shapely.point_on_surface(geometry)
    return f"{p.x:.0f},{p.y:.0f} (scene pixels)"


@dataclass(frozen=True)
class _Overlap:
    """Pixels each of a tile's found masks (N, H, W) shares with each example (M, H, W), (N, M), and the
    areas of both: computed once, read by ``taken`` and ``matching``."""

    shared: np.ndarray
    found: np.ndarray
    examples: np.ndarray

    @classmethod
    def of(cls, found: np.ndarray, examples: np.ndarray) -> _Overlap:
        f = found.reshape(len(found), examples[0].size).astype(np.float32)
        e = examples.reshape(len(examples), -1).astype(np.float32)
        return cls(f @ e.T, f.sum(1), e.sum(1))

    def taken(self) -> np.ndarray:
        """Which found masks are one of the examples: they share > OVERLAP of the smaller."""
        smaller = np.minimum(self.found[:, None], self.examples[None, :])
        return (self.shared > OVERLAP * np.maximum(smaller, 1)).any(1)

    def matching(self) -> np.ndarray:
        """For each found mask, the example it matches best with IoU at least ``geosam evaluate``'s, or -1."""
        union = self.found[:, None] + self.examples[None, :] - self.shared
        iou = self.shared / np.maximum(union, 1)
        return np.where(iou.max(1) >= EVALUATION.iou, iou.argmax(1), -1)


def _background(
    others: np.ndarray, described: np.ndarray, labels: np.ndarray, prototypes: np.ndarray, classes: list[str]
) -> np.ndarray:
    """The tiles' other objects and the background examples, less those at least as like a class's
    prototype as its examples are like each other (``_likeness``), unless that is all of them."""
    if not len(others):
        return described[labels == BACKGROUND]
    least = np.array([_likeness(described[labels == c]) for c in classes])
    alike = (others @ prototypes.T >= least).any(1)
    if alike.all():  # an atypical example: nothing would be left to tell the classes from
        alike[:] = False
    return np.concatenate([described[labels == BACKGROUND], others[~alike]])


def _likeness(examples: np.ndarray) -> float:
    """How alike a class's unit descriptors are: the ``ALIKE_QUANTILE`` of each one's cosine to the unit
    mean of the others (not to the prototype, which holds it and so flatters it); 1 for one example."""
    if len(examples) < 2:
        return 1.0
    rest = examples.sum(0) - examples  # each row: the sum of the others
    cosines = (examples * rest).sum(1) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
    return float(np.quantile(cosines, ALIKE_QUANTILE))


def _least_peak(model: Any, examples: list[tuple[TileImage, np.ndarray]], prototype: np.ndarray) -> float:
    """The lowest, over a class's examples, of the best similarity to the prototype of a cell under it."""
    peaks = []
    for image, mask in examples:
        sims = model.similarity(image, prototype[None])[0]
        cells = sims.shape[-1]
        cover = _cell_cover(mask, cells)
        under = cover >= min(CELL_COVER, float(cover.max()))
        peaks.append(float(sims[under].max()))
    return min(peaks)


def _cell_cover(mask: np.ndarray, cells: int) -> np.ndarray:
    """The share of each of cells × cells blocks of a square mask that it covers."""
    size = mask.shape[0]
    step = size / cells
    edges = np.round(np.arange(cells + 1) * step).astype(int)
    sums = np.add.reduceat(np.add.reduceat(mask.astype(np.float32), edges[:-1], 0), edges[:-1], 1)
    areas = np.diff(edges)[:, None] * np.diff(edges)[None, :]
    return sums / areas
