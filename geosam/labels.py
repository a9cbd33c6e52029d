"""Objects as a label raster: each object's id burnt onto the scene's grid, 0 where there is none."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

from geosam.errors import InputError
from geosam.georef import Scene

BLOCK = 512  # COG tile size, and rows burnt per step: memory stays at BLOCK rows of the scene's width


def _ready(objects: gpd.GeoDataFrame, scene: Scene, column: str) -> tuple[np.ndarray, np.ndarray]:
    if column not in objects:
        raise InputError(f"the objects have no column {column!r} to burn")
    if objects.crs is not None and scene.crs is not None and objects.crs != scene.crs:
        objects = objects.to_crs(scene.crs)
    ids = objects[column].to_numpy()
    if len(ids) and (ids.min() < 1 or ids.max() >= 2**32):
        raise InputError(f"label ids ({column}) must be 1 .. 2³²-1; 0 is the background")
    return objects.geometry.to_numpy(), ids.astype(np.uint32)


def _burn_window(geometries, ids, tree, scene: Scene, window: Window) -> np.ndarray:
    """Ids in one window; objects keep their order, so later (smaller) ones are drawn on top."""
    transform = scene.transform @ Affine.translation(window.col_off, window.row_off)
    corners = [
        transform @ xy
        for xy in ((0, 0), (window.width, 0), (0, window.height), (window.width, window.height))
    ]
    hits = np.sort(tree.query(shapely.MultiPoint(corners).envelope))
    out = np.zeros((int(window.height), int(window.width)), np.uint32)
    if len(hits):
        rasterize(
            zip(geometries[hits], ids[hits], strict=True), out=out, transform=transform,
            dtype="uint32",
        )  # fmt: skip
    return out


def burn(objects: gpd.GeoDataFrame, scene: Scene, column: str = "id") -> np.ndarray:
    """The whole scene's label array (H, W) uint32."""
    geometries, ids = _ready(objects, scene, column)
    return _burn_window(
        geometries, ids, shapely.STRtree(geometries), scene, Window(0, 0, scene.width, scene.height)
    )


def write_labels(
    objects: gpd.GeoDataFrame, scene: Scene, path: str | Path, overwrite: bool = False, column: str = "id"
) -> Path:
    """Write object ids as a Cloud-Optimized GeoTIFF on the scene's grid (uint32, nodata 0), atomically.

    Burnt block by block into a tiled GeoTIFF, then copied to a COG with nearest-neighbour overviews
    (ids must not be averaged), then moved into place. Where objects overlap, the later one in
    ``objects`` wins (``geosam.segment`` lists them largest first). Memory stays at a block of rows.

    Args:
        objects: The objects, e.g. what ``geosam.segment`` returns; in another CRS they are
            reprojected to the scene's.
        scene: The scene they were found in (from ``open_scene``): the grid the ids are burnt onto.
        path: The .tif or .tiff file to write.
        overwrite: Replace an existing file at ``path``.
        column: The integer column burnt as the pixel value, each 1 .. 2³²-1.

    Returns:
        ``path``, as a Path.

    Raises:
        OutputError: ``path`` does not end in .tif or .tiff, exists (without ``overwrite``), or its
            folder does not exist or is not writable.
        InputError: The objects have no ``column``, or an id is out of range (0 is the background).
    """
    from geosam.output import check_output

    path = Path(path)
    check_output(path, overwrite, formats={".tif": "COG", ".tiff": "COG"})
    geometries, ids = _ready(objects, scene, column)
    tree = shapely.STRtree(geometries)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-") as folder:
        plain, cog = Path(folder) / "plain.tif", Path(folder) / path.name
        profile = {
            "driver": "GTiff", "width": scene.width, "height": scene.height, "count": 1, "dtype": "uint32",
            "nodata": 0, "crs": scene.crs, "transform": scene.transform, "tiled": True, "blockxsize": BLOCK,
            "blockysize": BLOCK,
        }  # fmt: skip
        with rasterio.open(plain, "w", **profile) as ds:
            for y in range(0, scene.height, BLOCK):
                window = Window(0, y, scene.width, min(BLOCK, scene.height - y))
                ds.write(_burn_window(geometries, ids, tree, scene, window), 1, window=window)
            ds.set_band_description(1, "object id (0: none)")
        rasterio.shutil.copy(
            plain, cog, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=BLOCK, OVERVIEW_RESAMPLING="NEAREST"
        )
        os.replace(cog, path)
    return path
