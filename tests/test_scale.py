"""What a scene's pixel size means for the model: a tile's ground footprint and advice."""

from __future__ import annotations

import pytest
from affine import Affine
from click.testing import CliRunner

from geosam import scale
from geosam.cli import main
from geosam.georef import open_scene

from .rasters import DATA, squares, write


def _fine(tmp_path, pixel=0.02):
    """A 2000 px square scene of ``pixel`` m pixels (a drone's, or finer)."""
    return write(
        tmp_path / "fine.tif", squares(2000, 2000), transform=Affine(pixel, 0, 500_000, 0, -pixel, 5_000_000)
    )


@pytest.mark.parametrize(
    ("name", "metres"),
    [("pan1.tif", 0.5), ("RGB.byte.tif", 300.0), ("shade.tif", 7.36), ("landsat_peru/1985.tif", 89.5)],
)
def test_ground_pixel_in_metres_in_any_crs(name, metres):
    """UTM as it is; Web Mercator's 9.55 m at 40° N; EPSG:4326's 0.00081° at 8° S."""
    assert scale.ground_pixel_m(open_scene(DATA / name)) == pytest.approx(metres, rel=0.01)


def test_footprint_of_a_tile():
    assert scale.footprint(open_scene(DATA / "pan1.tif")) == "512 m × 512 m"
    assert scale.footprint(open_scene(DATA / "pan1.tif"), 256) == "128 m × 128 m"


def test_no_advice_where_the_pixel_suits_typical_objects():
    for name in ("pan1.tif", "pix4d_alpha_nodata.tif", "m_4709963_se_14_1_20200831.tif", "shade.tif"):
        assert scale.advice(open_scene(DATA / name)) is None


def test_fine_pixels_advise_a_coarser_resolution_that_silences_the_advice(tmp_path):
    path = _fine(tmp_path)
    assert scale.advice(open_scene(path)) == (
        "pixels of 0.02 m: a 1024-px tile covers only 20 m, so objects larger than about 10 m fill tiles and come "
        "out cut or not at all; for such objects try --resolution 0.1 (or --tile-size 5120)"
    )
    assert scale.advice(open_scene(path, resolution=0.1)) is None
    assert scale.advice(open_scene(path), tile_size=5120, overlap=128) is None


def test_coarse_pixels_advise_a_finer_resolution_that_silences_the_advice():
    cog = open_scene(DATA / "cog.tif")  # 100 m
    assert scale.advice(cog) == (
        "pixels of 100 m: objects smaller than about 1.0 km are too small for the model, and its prompt points "
        "lie 3.2 km apart; for smaller objects try --resolution 30 (or --tile-size 256), which shows the model "
        "the scene enlarged (more tiles)"
    )
    assert scale.advice(open_scene(DATA / "cog.tif", resolution=30)) is None
    assert scale.advice(cog, tile_size=256, overlap=64) is None
    landsat = scale.advice(
        open_scene(DATA / "RGB.byte.tif")
    )  # 300 m: no tile size larger than the overlap does
    assert landsat is not None and "try --resolution 30, which" in landsat
    peru = scale.advice(open_scene(DATA / "landsat_peru/1985.tif"))  # EPSG:4326: in degrees
    assert peru is not None and "--resolution 0.000272 " in peru


def test_no_advice_without_a_crs(tmp_path):
    from .rasters import write_ungeoreferenced

    scene = open_scene(write_ungeoreferenced(tmp_path / "u.tif"), pixel_coordinates=True)
    assert scale.advice(scene) is None and scale.footprint(scene) is None


def test_info_shows_the_footprint_and_the_advice(tmp_path):
    result = CliRunner().invoke(main, ["info", str(DATA / "pan1.tif")])
    assert result.exit_code == 0 and "ground:    0.5 m pixels; a tile covers 512 m × 512 m" in result.stdout
    assert "advice:" not in result.stdout
    result = CliRunner().invoke(main, ["info", str(_fine(tmp_path)), "--tile-size", "512", "--overlap", "64"])
    assert result.exit_code == 0
    assert "ground:    0.02 m pixels; a tile covers 10 m × 10 m" in result.stdout
    assert "advice:    pixels of 0.02 m: a 512-px tile covers only 10 m" in result.stdout
    assert "try --resolution 0.2 (or --tile-size 5120)" in result.stdout


def test_the_run_summary_gives_the_advice(tmp_path):
    from geosam.scene_run import segment_scene

    from .doubles import Bright

    frame, report = segment_scene(_fine(tmp_path, 0.01), model=Bright(), tile_size=1024, workers=0)
    assert len(frame) > 0 and len(report.advice) == 1
    assert report.advice[0].startswith("pixels of 0.01 m: a 1024-px tile covers only 10 m")
    assert report.advice[0] in report.summary().splitlines()
