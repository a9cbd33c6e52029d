"""xarray in and out: a rioxarray DataArray as a scene, object ids as a label DataArray."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geosam.errors import InputError
from geosam.georef import Scene

if TYPE_CHECKING:
    import geopandas as gpd

INSTALL = "pip install 'geosam[xarray]' (or pip install xarray rioxarray)"


def is_dataarray(value: Any) -> bool:
    """True for an xarray DataArray, without importing xarray for a path."""
    return type(value).__name__ == "DataArray" and type(value).__module__.startswith("xarray")


def _rioxarray():
    try:
        import rioxarray
    except ImportError:
        raise InputError(f"DataArray scenes need rioxarray: {INSTALL}") from None
    return rioxarray


@contextmanager
def scene_file(array, pixel_coordinates: bool = False) -> Iterator[str]:
    """The DataArray written, with its CRS, transform and nodata, to a temporary tiled GeoTIFF.

    Dask workers are separate processes that read their own windows from a path, so an in-memory
    array is handed to them as a file; it is removed when the block ends. The file is local: with
    a remote ``scheduler`` write the array to storage the workers can reach and pass that path.
    """
    _rioxarray()
    if array.ndim not in (2, 3):
        raise InputError(f"a DataArray scene has dims (y, x) or (band, y, x), not {array.dims}")
    if array.rio.crs is None and not pixel_coordinates:
        raise InputError(
            "the DataArray has no CRS: set one with array.rio.write_crs('EPSG:...'), "
            "or pass pixel_coordinates=True to work in pixel units"
        )
    with tempfile.TemporaryDirectory(prefix="geosam-") as folder:
        path = Path(folder) / "scene.tif"
        data = array if array.dtype != bool else array.astype(np.uint8)
        data.rio.to_raster(path, tiled=True, blockxsize=256, blockysize=256, compress="DEFLATE")
        yield str(path)


def label_raster(objects: gpd.GeoDataFrame, scene: Scene, column: str = "id"):
    """Object ids burnt onto the scene's grid as a DataArray (y, x) of uint32, 0 where there is none.

    Where objects overlap, the smaller one (drawn later, ids are largest first) wins. The whole grid
    is held in memory (4 bytes a pixel); for big scenes write a label COG with ``geosam.write_labels``.

    Needs the ``xarray`` extra (xarray and rioxarray).

    Args:
        objects: The objects, e.g. what ``geosam.segment`` returns; in another CRS they are
            reprojected to the scene's.
        scene: The scene they were found in (from ``open_scene``): the grid the ids are burnt onto.
        column: The integer column burnt as the pixel value, each 1 .. 2³²-1.

    Returns:
        labels (xarray.DataArray): Named ``object_id``, dims (y, x), with x and y pixel-centre
            coordinates (for a grid without rotation) and the scene's transform, CRS and nodata 0
            written through rioxarray.

    Raises:
        InputError: rioxarray is not installed, the objects have no ``column``, or an id is out of
            range (0 is the background).
    """
    import xarray as xr

    _rioxarray()
    from geosam.labels import burn

    ids = burn(objects, scene, column)
    rows, cols = np.arange(scene.height) + 0.5, np.arange(scene.width) + 0.5
    t = scene.transform
    coords = {"y": t.e * rows + t.f, "x": t.a * cols + t.c} if t.b == 0 and t.d == 0 else None
    labels = xr.DataArray(ids, dims=("y", "x"), coords=coords, name="object_id")
    labels = labels.rio.write_transform(scene.transform).rio.write_nodata(0, encoded=False)
    if scene.crs is not None:
        labels = labels.rio.write_crs(scene.crs)
    return labels
