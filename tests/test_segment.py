"""End to end with the real MobileSAM weights on real scenes: GeoTIFF in, polygons out."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely

import geosam
from geosam.models import AutomaticParams, ModelSpec
from geosam.testing import mosaic

FAST = ModelSpec("mobile_sam", params=AutomaticParams(points_per_side=12))


def assert_sound(frame, path):
    """Valid polygons inside the scene, in its CRS, no object twice."""
    with rasterio.open(path) as ds:
        crs, bounds = ds.crs, shapely.box(*ds.bounds)
    assert frame.crs == crs
    assert frame.geometry.is_valid.all()
    assert frame.geometry.within(bounds.buffer(1e-6)).all()
    assert list(frame.columns) == [
        "id",
        "score",
        "stability",
        "area_m2",
        "tiles",
        "outline",
        "outline_iou",
        "vertices_raw",
        "vertices",
        "geometry",
    ]
    assert frame["id"].is_unique and (frame["area_m2"] > 0).all()
    geoms = np.array(frame.geometry)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    inter = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]]))
    union = shapely.area(shapely.union(geoms[left[pairs]], geoms[right[pairs]]))
    assert not (inter / union > 0.5).any(), "an object appears twice"


def valid_area(path) -> shapely.Geometry:
    """The scene's valid pixels as map geometry, from GDAL's mask (nodata or alpha)."""
    from rasterio.features import shapes

    with rasterio.open(path) as ds:
        mask = ds.dataset_mask()
        parts = [shapely.geometry.shape(g) for g, v in shapes(mask, mask=mask > 0, transform=ds.transform)]
    return shapely.union_all(parts)


@pytest.mark.parametrize(
    ("name", "epsg", "minimum"),
    [
        ("pix4d_alpha_nodata.tif", 32750, 20),
        ("RGB.byte.tif", 32618, 2),  # a third mask, 99% of the valid area, is the image: dropped
        ("m_4709963_se_14_1_20090818.tif", 26914, 10),
        ("m_4709963_se_14_1_20200831.tif", 26914, 10),
    ],
)
def test_real_scenes(data, model_installed, name, epsg, minimum):
    path = data / name
    frame = geosam.segment(path, model=FAST, workers=1)
    assert len(frame) >= minimum
    assert frame.crs.to_epsg() == epsg
    assert_sound(frame, path)
    # objects never cover nodata: at most a pixel-edge sliver of each lies outside the valid area
    outside = frame.geometry.difference(valid_area(path).buffer(1e-6)).area
    assert (outside <= 1e-6 * frame.geometry.area + 1e-3).all()


def test_drone_scene_finds_fields_of_plausible_size(data, model_installed):
    frame = geosam.segment(data / "pix4d_alpha_nodata.tif", model=FAST, workers=1, min_area=50)
    assert (frame["area_m2"] >= 50).all()
    fields = frame[(frame["area_m2"] > 100) & (frame["area_m2"] < 5000)]
    assert len(fields) >= 15, "rice fields of 100-5000 m² are what this scene is made of"
    assert frame["score"].between(0.88, 1.1).all() and frame["stability"].between(0.92, 1).all()


@pytest.fixture(scope="module")
def mosaic_4096(tmp_path_factory, data):
    """A 4096×4096 RGB scene of real imagery: the NAIP scenes, mirrored so cells join without edges."""
    sources = [data / "m_4709963_se_14_1_20090818.tif", data / "m_4709963_se_14_1_20200831.tif"]
    return mosaic(tmp_path_factory.mktemp("mosaic") / "mosaic_4096.tif", 4096, sources)


@pytest.mark.slow
def test_large_generated_scene_runs_on_two_workers(mosaic_4096, model_installed):
    spec = ModelSpec("mobile_sam", params=AutomaticParams(points_per_side=6))
    done = []
    frame = geosam.segment(mosaic_4096, model=spec, workers=2, on_tile=done.append)
    assert len(done) == 25 and all(r.segmented for r in done)
    assert len(frame) >= 100
    assert_sound(frame, mosaic_4096)
    assert (frame["tiles"] > 1).any(), "some objects cross seams and are stitched from several tiles"
