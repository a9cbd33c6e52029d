"""xarray in and out: a rioxarray DataArray segments like its file; labels come back as a DataArray."""

from __future__ import annotations

import numpy as np
import pytest

import geosam
from geosam.errors import InputError
from geosam.georef import open_scene

from .doubles import Bright
from .rasters import ORIGIN, squares, write
from .test_outputs import objects

pytestmark = pytest.mark.filterwarnings(  # rioxarray 0.19 still applies affine transforms with `*`
    "ignore:Use `@` matmul instead of `\\*` mul operator:PendingDeprecationWarning"
)
rioxarray = pytest.importorskip(
    "rioxarray", reason="the xarray extra is not installed: pip install -e '.[xarray]'"
)


def test_a_dataarray_segments_like_its_file(tmp_path):
    path = write(tmp_path / "s.tif", squares(300, 300), nodata=0)
    array = rioxarray.open_rasterio(path)
    assert array.rio.crs is not None
    from_array = geosam.segment(array, model=Bright(), tile_size=256, overlap=32, workers=1)
    from_file = geosam.segment(path, model=Bright(), tile_size=256, overlap=32, workers=1)
    assert len(from_array) == len(from_file) >= 1
    assert from_array.crs == from_file.crs
    assert all(from_array.geometry.geom_equals(from_file.geometry))
    assert list(tmp_path.iterdir()) == [path], "the temporary GeoTIFF is gone"


def test_a_dataarray_without_crs_is_refused_with_what_to_do():
    import xarray as xr

    array = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=("band", "y", "x"))
    with pytest.raises(InputError, match=r"rio.write_crs"):
        geosam.segment(array, model=Bright(), workers=1)


def test_label_raster_is_a_georeferenced_dataarray(tmp_path):
    scene = open_scene(write(tmp_path / "s.tif", squares(128, 160)))
    labels = geosam.label_raster(objects(3), scene)
    assert labels.dims == ("y", "x") and labels.shape == (128, 160) and labels.dtype == np.uint32
    assert labels.rio.crs == scene.crs and labels.rio.transform() == scene.transform
    assert float(labels.x[0]) == ORIGIN.c + 1 and float(labels.y[0]) == ORIGIN.f - 1  # pixel centres
    assert int(labels[50, 50]) == 3 and int(labels[2, 2]) == 1 and int(labels[120, 150]) == 0
    assert set(np.unique(labels.values)) == {0, 1, 2, 3}
