"""How a scene is read: bands, the scene-wide stretch, validity, CRSs, resampling and input kinds."""

from __future__ import annotations

import http.server
import math
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from dask.distributed import LocalCluster
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.errors import NodataShadowWarning
from rasterio.windows import Window

from geosam.errors import InputError
from geosam.fingerprint import run_key
from geosam.georef import area_m2, is_remote, open_scene, to_uint8
from geosam.scene_run import segment
from geosam.tiling import Box, TileGrid, read_pixels, read_tile

from .doubles import Bright
from .rasters import DATA, squares, write, write_ungeoreferenced


@pytest.fixture(scope="module")
def scheduler():
    """An in-process Dask cluster, so the stand-in segmenter never needs pickling."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def tiles_equal_untiled(scene, size=128, overlap=16) -> None:
    """Every tile's pixels and validity equal the same window of one read of the whole scene."""
    side = max(scene.width, scene.height)
    whole = read_tile(scene, TileGrid(scene.width, scene.height, 8192, 1).tile(0, 0), side)
    for tile in TileGrid(scene.width, scene.height, size, overlap):
        image = read_tile(scene, tile, size)
        r = tile.read
        assert np.array_equal(image.image[: r.height, : r.width], whole.image[r.y0 : r.y1, r.x0 : r.x1])
        assert np.array_equal(image.valid[: r.height, : r.width], whole.valid[r.y0 : r.y1, r.x0 : r.x1])


# Bands


@pytest.mark.parametrize(
    ("count", "colorinterp", "expected"),
    [
        (1, None, (1,)),  # gray
        (3, None, (1, 2, 3)),  # RGB as is
        (4, None, (1, 2, 3)),  # RGBN takes RGB
        (4, ("blue", "green", "red", "undefined"), (3, 2, 1)),  # marked colours win over order
        (2, ("gray", "alpha"), (1,)),  # gray + alpha
    ],
)
def test_default_bands(tmp_path, count, colorinterp, expected):
    path = write(tmp_path / "s.tif", np.repeat(squares(), count, axis=0))
    if colorinterp:
        with rasterio.open(path, "r+") as ds:
            ds.colorinterp = [getattr(rasterio.enums.ColorInterp, c) for c in colorinterp]
    assert open_scene(path).bands == expected


def test_many_bands_need_a_choice(tmp_path):
    path = write(tmp_path / "s.tif", np.repeat(squares(), 6, axis=0))
    with pytest.raises(
        InputError, match="6 bands and none marked red, green, blue: choose 1 or 3 with --bands"
    ):
        open_scene(path)
    assert open_scene(path, bands=(5, 4, 3)).bands == (5, 4, 3)


def test_bands_by_description_or_colour_name(tmp_path):
    names = ("coastal", "Blue", "Green", "Red", "NIR")
    path = write(tmp_path / "s.tif", np.repeat(squares(), 5, axis=0), descriptions=names)
    assert open_scene(path).bands == (4, 3, 2)  # described red, green, blue
    assert open_scene(path, bands=("nir", "red", "GREEN")).bands == (5, 4, 3)
    assert open_scene(path, bands=("5",)).bands == (5,)
    rgb = open_scene(DATA / "pix4d_alpha_nodata.tif", bands=("blue", "green", "red"))
    assert rgb.bands == (3, 2, 1)  # colour interpretation names work without descriptions
    with pytest.raises(InputError, match=r"no band named 'swir'; bands: 1 coastal, 2 Blue"):
        open_scene(path, bands=("swir", "red", "green"))


@pytest.mark.parametrize(("bands", "message"), [((4,), "band 4 does not exist"), ((1, 2), "choose 1 or 3")])
def test_bad_band_choice(bands, message):
    with pytest.raises(InputError, match=message):
        open_scene(DATA / "RGB.byte.tif", bands=bands)


# The scene-wide stretch


def test_tiles_of_a_16bit_scene_share_one_stretch(tmp_path):
    """Halves of very different brightness: every tile maps a value to the same byte as the whole scene."""
    data = squares(600, 600, "uint16", low=1000, high=3000)
    data[:, :, 300:] += 20000
    scene = open_scene(write(tmp_path / "s.tif", data))
    low, high = scene.stretch[0]
    assert np.percentile(data, 2) <= low + 1 and high - 1 <= np.percentile(data, 98)
    tiles_equal_untiled(scene)
    first, last = (read_tile(scene, t, 128) for t in (TileGrid(600, 600, 128, 16).tile(0, 0),
                                                      TileGrid(600, 600, 128, 16).tile(4, 4)))  # fmt: skip
    assert first.image.max() < 128 < last.image.min()  # a per-tile min/max stretch would fill 0..255 in both


@pytest.mark.parametrize("dtype", ["int16", "float32", "float64", "uint32"])
def test_signed_and_float_data_are_stretched(tmp_path, dtype):
    data = (squares(300, 300, "float64") * 10 - 1000).astype(dtype)
    nodata = -9999 if dtype != "uint32" else 0
    data[:, :50] = nodata
    scene = open_scene(write(tmp_path / "s.tif", data, nodata=nodata), percentiles=(0, 100))
    valid = data[data != nodata]
    assert scene.stretch == ((float(valid.min()), float(valid.max())),)  # nodata never enters the stretch
    assert to_uint8(np.array([[[valid.min(), valid.max()]]]), scene.stretch).tolist() == [[[0, 255]]]


def test_8bit_is_read_as_is_unless_asked():
    assert open_scene(DATA / "RGB.byte.tif").stretch is None
    stretched = open_scene(DATA / "RGB.byte.tif", stretch_8bit=True, percentiles=(1, 99))
    assert len(stretched.stretch) == 3 and all(0 < low < high <= 255 for low, high in stretched.stretch)


@pytest.mark.parametrize("percentiles", [(50, 50), (-1, 90), (2, 101)])
def test_bad_percentiles(percentiles):
    with pytest.raises(InputError, match="percentiles"):
        open_scene(DATA / "pan1.tif", percentiles=percentiles)


def test_big_scene_stretch_from_sampled_windows(tmp_path):
    """Without overviews a big scene is sampled in small windows; the limits stay close to the truth."""
    rng = np.random.default_rng(1)
    data = rng.gamma(2.0, 500.0, (1, 2400, 3000)).astype("uint16")
    scene = open_scene(write(tmp_path / "s.tif", data, tiled=True), percentiles=(2, 98))
    truth = np.percentile(data, (2, 98))
    assert np.allclose(scene.stretch[0], truth, rtol=0.05)


def test_the_sample_leaves_no_memory_behind(tmp_path):
    """The sample reads whole blocks through GDAL's cache, freed when the file closes: given back, not
    kept as the process's size (before: +108 MB for this scene, the client's share of a run's peak)."""
    path = tmp_path / "big.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=6144, height=6144, count=3, dtype="uint8", crs="EPSG:32631",
        transform=Affine(1, 0, 500_000, 0, -1, 5_000_000), tiled=True, blockxsize=512, blockysize=512,
        compress="deflate",
    ) as ds:  # fmt: skip
        rows = np.full((3, 512, 6144), 100, np.uint8)
        for y in range(0, 6144, 512):
            ds.write(rows, window=Window(0, y, 6144, 512))
    code = (  # scipy, which looks at this scene's one value for a nodata border (19 MB), counted before
        "import sys, psutil, scipy.ndimage; from geosam.georef import open_scene; p = psutil.Process(); "
        "before = p.memory_info().rss; open_scene(sys.argv[1]); print((p.memory_info().rss - before) / 2**20)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert float(done.stdout) < 32  # its 144 blocks of 768 kB: 108 MB


def test_a_few_valid_pixels_the_sample_misses_are_found(tmp_path):
    data = np.zeros((1, 3000, 3000), "uint16")
    data[0, 2990:, 2990:] = 1234
    scene = open_scene(write(tmp_path / "s.tif", data, nodata=0, tiled=True))
    assert scene.stretch == ((1234.0, 1235.0),)


def test_all_nodata_is_refused(tmp_path):
    path = write(
        tmp_path / "s.tif", np.zeros((1, 3000, 3000), "uint8"), nodata=0, tiled=True, compress="deflate"
    )
    with pytest.raises(InputError, match="every pixel is nodata or masked"):
        open_scene(path)


# Validity


def _validity_cases(tmp_path: Path) -> dict[str, Path]:
    data = np.repeat(squares(), 3, axis=0)
    invalid = np.zeros(data.shape[1:], bool)
    invalid[:200, :200] = True
    nodata = data.copy()
    nodata[:, invalid] = 0
    alpha = np.concatenate([data, np.where(invalid, 0, 255).astype("uint8")[None]])
    floats = data.astype("float32")
    floats[:, invalid] = np.nan
    return {
        "nodata": write(tmp_path / "nodata.tif", nodata, nodata=0),
        "mask": write(tmp_path / "mask.tif", data, mask=np.where(invalid, 0, 255).astype("uint8")),
        "alpha": write(tmp_path / "alpha.tif", alpha, photometric="RGB", alpha="YES"),
        "nan": write(tmp_path / "nan.tif", floats, nodata=float("nan")),
        "nan-without-nodata": write(tmp_path / "nan2.tif", floats),
    }


@pytest.mark.parametrize("kind", ["nodata", "mask", "alpha", "nan", "nan-without-nodata"])
def test_invalid_pixels_never_become_objects(tmp_path, scheduler, kind):
    path = _validity_cases(tmp_path)[kind]
    scene = open_scene(path)
    image = read_tile(scene, TileGrid(512, 512, 512, 1).tile(0, 0), 512)
    assert image.valid.sum() == 512 * 512 - 200 * 200 and not image.valid[:200, :200].any()
    # the double answers all of each tile: the scene's ground, kept here to measure it
    frame = segment(
        path,
        model=Bright(everything=True),
        tile_size=256,
        overlap=32,
        scheduler=scheduler,
        keep_background=True,
    )
    covered = shapely.union_all(frame.geometry.values)
    hole = shapely.box(500_000, 5_000_000 - 400, 500_000 + 400, 5_000_000)  # the 200 × 200 px invalid corner
    assert shapely.area(shapely.intersection(covered, hole)) == 0
    assert covered.area == pytest.approx(4 * (512 * 512 - 200 * 200))


def _black_top(tmp_path: Path, dtype="uint16", **profile) -> Path:
    """A 16-bit scene whose top third is 0, declared nodata or not (``profile``)."""
    data = squares(600, 480, dtype, 100, 4000, seed=3)
    data[:, :200] = 0
    return write(tmp_path / "black.tif", data, **profile)


def test_nodata_value_given_masks_pixels_the_file_does_not_declare(tmp_path, scheduler):
    path = _black_top(tmp_path)
    plain, given = open_scene(path), open_scene(path, nodata=0)
    assert given.nodata == 0 and plain.nodata is None
    assert plain.stretch[0][0] == 0 and given.stretch[0][0] > 90  # the stretch leaves the zeros out
    tile = read_tile(given, TileGrid(480, 600, 1024, 128).tile(0, 0), 1024)
    assert not tile.valid[:200].any() and tile.valid[200:600, :480].all()
    tiles_equal_untiled(given, size=128, overlap=16)
    _, decimated = read_pixels(given, Box(0, 0, 480, 600), out_shape=(150, 120))  # overviews, prompt windows
    assert not decimated[:50].any() and decimated[50:].all()
    resampled = read_tile(
        open_scene(path, nodata=0, resolution=4.0), TileGrid(240, 300, 256, 32).tile(0, 0), 256
    )
    assert not resampled.valid[:100].any() and resampled.valid[100:300, :240].all()
    assert run_key(plain, TileGrid(480, 600), Bright()) != run_key(given, TileGrid(480, 600), Bright())
    # the double answers all of each tile: the ground (of the data, not the black top), kept to look at it
    frame = segment(
        path, model=Bright(everything=True), tile_size=256, overlap=32, nodata=0, scheduler=scheduler,
        keep_background=True,
    )  # fmt: skip
    black = shapely.box(500_000, 5_000_000 - 400, 500_000 + 960, 5_000_000)  # the top 200 px
    assert (
        len(frame)
        and shapely.area(shapely.intersection(shapely.union_all(frame.geometry.values), black)) == 0
    )


def test_nodata_value_given_replaces_the_files_own(tmp_path):
    data = np.repeat(squares(), 3, axis=0)
    data[:, :100] = 255
    data[:, 400:] = 0
    path = write(tmp_path / "s.tif", data, nodata=255)
    tile = read_tile(open_scene(path, nodata=0), TileGrid(512, 512, 512, 1).tile(0, 0), 512)
    assert tile.valid[:400].all() and not tile.valid[400:].any()
    alpha = np.concatenate([data, np.full((1, 512, 512), 255, "uint8")])  # alpha says all valid
    path = write(tmp_path / "alpha.tif", alpha, photometric="RGB", alpha="YES")
    scene = open_scene(path, nodata=0)
    assert scene.bands == (1, 2, 3)  # the alpha band is still no colour
    assert not read_tile(scene, TileGrid(512, 512, 512, 1).tile(0, 0), 512).valid[400:].any()


def test_nodata_value_must_fit_the_data_type(tmp_path):
    with pytest.raises(
        InputError, match=r"--nodata -1 is not a uint16 value; give an integer from 0 to 65535"
    ):
        open_scene(_black_top(tmp_path), nodata=-1)
    with pytest.raises(InputError, match="not a uint8 value"):
        open_scene(DATA / "RGB.byte.tif", nodata=0.5)
    assert open_scene(DATA / "ms1.tif", nodata=0.5).nodata == 0.5  # float data take any value


def test_nodata_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from geosam.cli import main

    result = CliRunner().invoke(main, ["info", str(_black_top(tmp_path)), "--nodata", "0"])
    assert result.exit_code == 0, result.output
    assert "nodata:    0 (--nodata)" in result.stdout and "WARNING" not in result.stderr
    result = CliRunner().invoke(main, ["info", str(DATA / "pan1.tif"), "--nodata", "zero"])
    assert result.exit_code == 2 and "'zero' is not a valid float" in result.stderr


@pytest.fixture
def warnings_once(monkeypatch, caplog):
    """The log of geosam's warnings, with none yet given (they are given once per scene and value)."""
    import geosam.georef

    monkeypatch.setattr(geosam.georef, "_warned", set())
    caplog.set_level("WARNING", logger="geosam")
    return caplog


def _warned(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize(("name", "share"), [("pan2.tif", 32), ("pan3.tif", 39), ("cog.tif", 48)])
def test_a_large_constant_border_without_nodata_is_warned_about(warnings_once, name, share):
    open_scene(DATA / name)
    open_scene(DATA / name)  # a run opens its scene more than once: one warning
    v = 1 if name == "cog.tif" else 0
    assert _warned(warnings_once) == [
        f"{DATA / name}: {share}% of the pixels are {v} in a block at the border and no nodata value is "
        f"declared; pass --nodata {v} (a pipeline file's read: {{nodata: {v}}}) if they are not data"
    ]


def test_no_warning_where_nodata_is_declared_given_or_not_at_the_border(warnings_once, tmp_path):
    open_scene(DATA / "pan3.tif", nodata=0)
    open_scene(_black_top(tmp_path, nodata=0))
    inside = squares(600, 480, "uint16", 100, 4000, seed=3)
    inside[:, 100:400, 100:380] = 0  # 29% of the pixels, not touching the border
    open_scene(write(tmp_path / "inside.tif", inside))
    thin = squares(600, 480, "uint16", 100, 4000, seed=3)
    thin[:, :30] = 0  # 5%: a border, but a thin one
    open_scene(write(tmp_path / "thin.tif", thin))
    for name in ("pan1.tif", "RGB.byte.tif", "rgb_unmasked.tif", "ms1.tif", "m_4709963_se_14_1_20200831.tif"):
        open_scene(DATA / name)
    assert _warned(warnings_once) == []


def test_a_nodata_value_beside_an_alpha_band_is_said_once_not_at_every_read(warnings_once, tmp_path):
    """GDAL lets the nodata value decide; rasterio would warn at each read (each tile, in each worker)."""
    rgb = np.concatenate([squares(256, 256, seed=s) for s in range(3)])
    alpha = np.full((1, 256, 256), 255, np.uint8)
    alpha[:, :, :64] = 0  # the alpha band leaves out a strip; the nodata value, none of it
    path = write(
        tmp_path / "rgba.tif", np.concatenate([rgb, alpha]), nodata=0, photometric="RGB", alpha="YES"
    )
    with rasterio.open(path) as ds:
        assert ds.colorinterp[3] == rasterio.enums.ColorInterp.alpha and ds.nodata == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", NodataShadowWarning)
        scene = open_scene(path)
        open_scene(path)
        image = read_tile(scene, TileGrid(scene.width, scene.height, size=256).tile(0, 0), 256)
    assert _warned(warnings_once) == [
        f"{path}: a nodata value (0) and an alpha band: the nodata value decides which pixels are valid, "
        "as GDAL reads the file (--nodata sets another value)"
    ]
    assert image.valid[:, :64].all(), "the nodata value decided, not the alpha band"
    open_scene(path, nodata=7)
    assert len(_warned(warnings_once)) == 1, "--nodata replaces both: nothing to say"


def test_a_big_scene_without_overviews_is_checked_on_its_sampled_windows(warnings_once, tmp_path):
    data = squares(3000, 3000, "uint16", 100, 4000, seed=4)
    data[:, :, :1000] = 0  # the left third
    open_scene(write(tmp_path / "big.tif", data, tiled=True))
    (line,) = _warned(warnings_once)
    assert "33% of the pixels are 0 in a block at the border" in line


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pan2.tif", "pan3.tif"])
def test_with_nodata_given_no_object_lies_on_the_black_part(tmp_path, model_installed, name):
    """The real model on the sample scenes whose black part has no nodata tag, through the command line."""
    import pyogrio
    from click.testing import CliRunner
    from rasterio.features import shapes

    from geosam.cli import main

    output = tmp_path / "objects.gpkg"
    args = [
        "segment",
        str(DATA / name),
        "-o",
        str(output),
        "-w",
        "0",
        "--points-per-side",
        "16",
        "--nodata",
        "0",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.stderr
    with rasterio.open(DATA / name) as ds:
        zero = (ds.read(1) == 0).astype("uint8")
        black = shapely.union_all(
            [shapely.geometry.shape(g) for g, v in shapes(zero, transform=ds.transform) if v]
        )
    objects = pyogrio.read_dataframe(output, layer="objects")
    assert len(objects) > 0
    assert shapely.area(shapely.intersection(shapely.union_all(objects.geometry.values), black)) == 0


# CRSs and areas


def _band_area(lat1: float, lat2: float, dlon: float) -> float:
    """Exact area (m²) of a lon/lat box on the WGS84 ellipsoid (authalic latitude formula)."""
    a, f = 6378137.0, 1 / 298.257223563
    e = math.sqrt(f * (2 - f))
    b2 = (a * (1 - f)) ** 2

    def q(lat):
        s = math.sin(math.radians(lat))
        return s / (1 - e * e * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)

    return math.radians(dlon) * b2 / 2 * (q(lat2) - q(lat1))


def test_area_in_a_projected_crs_is_planar_metres():
    square = np.array([shapely.box(500_000, 5_000_000, 500_100, 5_000_100)])
    assert area_m2(square, CRS.from_epsg(32631))[0] == pytest.approx(10_000)
    feet = CRS.from_epsg(2263)  # NY Long Island, US survey feet
    assert area_m2(square, feet)[0] == pytest.approx(10_000 * 0.3048006096**2)


def test_area_in_geographic_crs_is_geodesic():
    box = np.array([shapely.box(10.0, 60.0, 10.1, 60.1)])
    assert area_m2(box, CRS.from_epsg(4326))[0] == pytest.approx(_band_area(60.0, 60.1, 0.1), rel=1e-4)


def test_area_in_web_mercator_is_corrected():
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    (x0, x1), (y0, y1) = to_merc.transform([10.0, 10.1], [60.0, 60.1])
    box = np.array([shapely.box(x0, y0, x1, y1)])
    true = _band_area(60.0, 60.1, 0.1)
    assert box[0].area == pytest.approx(4 * true, rel=0.01)  # planar Mercator area: 1 / cos²(60°) too big
    assert area_m2(box, CRS.from_epsg(3857))[0] == pytest.approx(true, rel=1e-4)


def test_area_with_a_custom_wkt():
    scene = open_scene(DATA / "rgb1.tif")  # a UTM zone 18 CRS as WKT without an EPSG code
    assert scene.crs.to_epsg() is None
    pixel = np.array([shapely.box(*rasterio.transform.array_bounds(1, 1, scene.transform))])
    assert area_m2(pixel, scene.crs)[0] == pytest.approx(scene.pixel_size[0] * scene.pixel_size[1])


def test_geographic_scene_runs_to_geodesic_areas(tmp_path, scheduler):
    transform = Affine(0.1 / 512, 0, 10.0, 0, -0.1 / 512, 60.1)
    path = write(
        tmp_path / "s.tif", np.full((1, 512, 512), 200, "uint8"), crs="EPSG:4326", transform=transform
    )
    frame = segment(
        path, model=Bright(), tile_size=256, overlap=32, scheduler=scheduler, keep_background=True
    )
    assert frame.crs.to_epsg() == 4326
    assert frame["area_m2"].sum() == pytest.approx(_band_area(60.0, 60.1, 0.1), rel=1e-4)


def test_pixel_coordinates_only_when_asked(tmp_path):
    write_ungeoreferenced(tmp_path / "s.tif")
    with pytest.raises(InputError, match=r"no georeferencing.*--pixel-coordinates"):
        open_scene(tmp_path / "s.tif")
    scene = open_scene(tmp_path / "s.tif", pixel_coordinates=True)
    assert scene.crs is None and scene.transform.is_identity


# Resampling on read


def test_resolution_resamples_every_read_onto_one_grid(tmp_path):
    path = write(tmp_path / "s.tif", np.repeat(squares(600, 500, "uint16", 100, 4000), 3, axis=0), nodata=0)
    native = open_scene(path)
    coarse = open_scene(path, resolution=5.0)
    assert (coarse.width, coarse.height) == (200, 240) and coarse.pixel_size == (5.0, 5.0)
    assert coarse.bounds == pytest.approx(native.bounds)
    assert coarse.stretch == native.stretch
    tiles_equal_untiled(coarse, size=64, overlap=8)
    assert open_scene(path, resolution=1.0).width == 1000


def test_resampled_objects_stay_in_place(tmp_path, scheduler):
    path = write(tmp_path / "s.tif", squares(640, 640))
    native = segment(path, model=Bright(), tile_size=256, overlap=32, scheduler=scheduler)
    coarse = segment(path, model=Bright(), tile_size=128, overlap=16, resolution=8.0, scheduler=scheduler)
    a, b = shapely.union_all(native.geometry.values), shapely.union_all(coarse.geometry.values)
    assert len(shapely.get_parts(a)) == len(shapely.get_parts(b)) == 25
    assert shapely.area(shapely.symmetric_difference(a, b)) / a.area < 0.15  # 8 m pixels on 80 m squares


def test_bad_resolution(tmp_path):
    with pytest.raises(
        InputError, match=r"gives a 1 × 1 px grid; give a pixel size in the CRS units of the scene \(metre\)"
    ):
        open_scene(DATA / "pan1.tif", resolution=1e6)
    with pytest.raises(InputError, match="positive"):
        open_scene(DATA / "pan1.tif", resolution=0)


# Inputs beyond plain files


def test_cog_reads_its_overviews_for_the_stretch():
    with rasterio.open(DATA / "cog.tif") as ds:
        assert ds.overviews(1)
    scene = open_scene(DATA / "cog.tif")
    assert scene.stretch is not None
    tile = read_tile(scene, TileGrid(scene.width, scene.height, 1024, 128).tile(1, 1), 1024)
    assert tile.valid.all() and tile.image.std() > 0


def test_vrt_mosaic_reads_like_its_source(tmp_path):
    src = DATA / "RGB.byte.tif"
    for name, window in (("west", "0 0 400 718"), ("east", "400 0 391 718")):
        subprocess.run(["gdal_translate", "-q", "-srcwin", *window.split(), str(src), str(tmp_path / f"{name}.tif")],
                       check=True)  # fmt: skip
    vrt = tmp_path / "mosaic.vrt"
    subprocess.run(
        ["gdalbuildvrt", "-q", str(vrt), str(tmp_path / "west.tif"), str(tmp_path / "east.tif")], check=True
    )
    mosaic, original = open_scene(vrt), open_scene(src)
    assert (mosaic.width, mosaic.height, mosaic.transform, mosaic.crs) == (
        original.width, original.height, original.transform, original.crs,
    )  # fmt: skip
    grid = TileGrid(original.width, original.height, 256, 32)
    for tile in grid:
        a, b = read_tile(mosaic, tile, 256), read_tile(original, tile, 256)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.valid, b.valid)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with byte ranges (``Range: bytes=A-B``), as GDAL's /vsicurl/ asks for."""

    def send_head(self):
        path = Path(self.translate_path(self.path))
        spec = self.headers.get("Range")
        if not path.is_file() or not spec:
            return super().send_head()
        size = path.stat().st_size
        start, _, end = spec.removeprefix("bytes=").partition("-")
        start, end = int(start), min(int(end or size - 1), size - 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with path.open("rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        return _Bytes(data)

    def log_message(self, *args) -> None:
        self.server.requests += 1


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, *args) -> bytes:
        data, self.data = self.data, b""
        return data

    def close(self) -> None:
        pass


@pytest.fixture
def http_data(monkeypatch):
    """A threaded HTTP server with Range support on 127.0.0.1, serving ../shared/data."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")

    def handler(*a, **k):
        return RangeHandler(*a, directory=str(DATA), **k)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("prefix", ["/vsicurl/", ""])
def test_remote_cog_over_http(http_data, prefix):
    url = f"{prefix}http://127.0.0.1:{http_data.server_port}/cog.tif"
    remote, local = open_scene(url), open_scene(DATA / "cog.tif")
    assert (remote.width, remote.crs, remote.transform, remote.stretch) == (
        local.width, local.crs, local.transform, local.stretch,
    )  # fmt: skip
    tile = TileGrid(local.width, local.height, 512, 64).tile(2, 3)
    assert np.array_equal(read_tile(remote, tile, 512).image, read_tile(local, tile, 512).image)
    corner = TileGrid(local.width, local.height, 512, 64).tile(0, 1)  # a fifth of it out of the collar of 1s
    remote, local = open_scene(url, nodata=1), open_scene(DATA / "cog.tif", nodata=1)
    assert remote.stretch == local.stretch
    assert np.array_equal(read_tile(remote, corner, 512).valid, read_tile(local, corner, 512).valid)
    assert 0 < read_tile(local, corner, 512).valid.mean() < 0.9
    assert http_data.requests > 0
    assert os.path.getsize(DATA / "cog.tif") > 0


@pytest.mark.parametrize(
    ("path", "remote"),
    [("http://127.0.0.1/a.tif", True), ("/vsicurl/http://127.0.0.1/a.tif", True), ("/vsizip/a.zip/b.tif", True),
     ("s3://bucket/a.tif", True), ("a.tif", False), ("/data/vsi/a.tif", False), ("C:/vsi.tif", False)],
)  # fmt: skip
def test_which_paths_are_not_on_this_disk(path, remote):
    """URLs and GDAL's /vsi paths are not looked for on disk (they are never "no such file")."""
    assert is_remote(path) is remote


def test_a_tile_that_cannot_be_read_is_a_clear_error(tmp_path, scheduler):
    """A COG cut short keeps its overviews (the plan works) but loses full-resolution tiles."""
    cut = tmp_path / "cut.tif"
    data = (DATA / "cog.tif").read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.35)])
    scene = open_scene(cut)
    grid = TileGrid(scene.width, scene.height, 1024, 128)
    with pytest.raises(InputError, match=r"cut.tif: cannot read pixels of tile 0,0 .*truncated or corrupt"):
        read_tile(scene, grid.tile(0, 0), 1024)
    with pytest.raises(InputError, match="truncated or corrupt"):
        segment(cut, model=Bright(), scheduler=scheduler)
