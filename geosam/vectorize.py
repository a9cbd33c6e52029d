"""Masks to polygons: pixel-exact outlines in scene pixel space, then map coordinates."""

from __future__ import annotations

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import MultiPolygon, shape

from geosam.tiling import Box

EMPTY = MultiPolygon()


def mask_to_geometry(mask: np.ndarray, origin: tuple[int, int]) -> shapely.Geometry:
    """The pixel outline of a boolean mask whose top-left pixel sits at ``origin`` (x, y) in scene pixels.

    Returns a (Multi)Polygon with holes, exact on pixel edges, or an empty geometry.
    """
    box = Box.around(mask)
    if box is None:
        return EMPTY
    crop = np.ascontiguousarray(mask[box.y0 : box.y1, box.x0 : box.x1], dtype=np.uint8)
    transform = Affine.translation(origin[0] + box.x0, origin[1] + box.y0)
    parts = [shape(g) for g, _ in rasterio.features.shapes(crop, mask=crop.astype(bool), transform=transform)]
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def to_map(geometries: np.ndarray, transform: Affine) -> np.ndarray:
    """Geometries from scene pixel coordinates to the scene's CRS through its affine transform."""
    matrix = np.array(transform[:6]).reshape(2, 3)
    return shapely.transform(geometries, lambda xy: xy @ matrix[:, :2].T + matrix[:, 2])


def to_pixels(geometries: np.ndarray, transform: Affine) -> np.ndarray:
    """Geometries from the scene's CRS back to scene pixel coordinates, rounded to 1e-6 px so that
    pixel edges come back as the exact integers they were."""
    matrix = np.array((~transform)[:6]).reshape(2, 3)
    return shapely.transform(geometries, lambda xy: np.round(xy @ matrix[:, :2].T + matrix[:, 2], 6))


def tidy(geometries: np.ndarray, simplify: float) -> np.ndarray:
    """Valid geometries, simplified by ``simplify`` pixels (0 keeps exact pixel outlines)."""
    if simplify > 0:
        geometries = shapely.simplify(geometries, simplify, preserve_topology=True)
    invalid = ~shapely.is_valid(geometries)
    if invalid.any():
        geometries = geometries.copy()
        geometries[invalid] = shapely.make_valid(
            geometries[invalid], method="structure", keep_collapsed=False
        )
    return geometries
