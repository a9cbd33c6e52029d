"""Every output format round-trips; GeoPackages carry QGIS's default style; writes stay atomic."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geosam import output, style
from geosam.errors import OutputError
from geosam.georef import open_scene
from geosam.labels import write_labels

from .rasters import ORIGIN, UTM, squares, write


def objects(n: int = 3, crs=UTM) -> gpd.GeoDataFrame:
    """``n`` nested squares (the first largest) in UTM 31N, ids 1..n, scores 0.90 .. 0.99."""
    x0, y0 = ORIGIN.c, ORIGIN.f
    geometry = [shapely.box(x0 + 10 * i, y0 - 200 + 10 * i, x0 + 200 - 10 * i, y0 - 10 * i) for i in range(n)]
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "score": np.linspace(0.90, 0.99, n),
            "stability": np.full(n, 0.95),
            "area_m2": shapely.area(geometry),
            "tiles": np.ones(n, np.int32),
        },
        geometry=geometry,
        crs=crs,
    )


def read(path):
    if path.suffix == ".parquet":
        return gpd.read_parquet(path)
    return gpd.read_file(path, layer="objects" if path.suffix == ".gpkg" else None)


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".parquet", ".shp"])
@pytest.mark.parametrize("n", [3, 0])
def test_every_format_round_trips(tmp_path, suffix, n):
    frame = objects(n)
    path = tmp_path / f"objects{suffix}"
    output.write(frame, path)
    back = read(path)
    assert len(back) == n
    if n or suffix != ".geojson":  # an empty GeoJSON has no fields to read back
        assert list(back.columns) == list(frame.columns)
    if suffix == ".geojson":  # RFC 7946: longitude/latitude on WGS84, about 1 cm of precision
        assert back.crs.to_epsg() == 4326
        back = back.to_crs(UTM)
        assert (back.geometry.hausdorff_distance(frame.geometry, align=False) < 0.02).all()
    else:
        assert back.crs == frame.crs
        assert all(back.geometry.geom_equals(frame.geometry.set_crs(back.crs, allow_override=True)))
    if n:
        assert back["score"].tolist() == pytest.approx(frame["score"].tolist())
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "no temporary files left beside the output"


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".parquet", ".shp"])
def test_batches_are_written_as_their_frame_is(tmp_path, suffix):
    frame = objects(7)
    whole, batches = tmp_path / f"whole{suffix}", tmp_path / f"batches{suffix}"
    output.write(frame, whole)
    parts = [frame.iloc[:3], frame.iloc[3:4], frame.iloc[4:]]
    output.write(output.Batches(iter(parts), frame["score"].to_numpy()), batches)
    a, b = read(whole), read(batches)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry")) and a.crs == b.crs
    assert a.geometry.geom_equals_exact(b.geometry, 0).all()
    if suffix == ".gpkg":  # the same style: from every batch's scores
        with sqlite3.connect(whole) as x, sqlite3.connect(batches) as y:
            query = "SELECT styleQML FROM layer_styles"
            assert x.execute(query).fetchall() == y.execute(query).fetchall()


def test_batches_split_their_raw_outlines_into_a_layer(tmp_path):
    frame = objects(5)
    frame[output.RAW_GEOMETRY] = frame.geometry.buffer(1).to_numpy()
    parts = [frame.iloc[:2], frame.iloc[2:]]
    output.write(output.Batches(iter(parts), frame["score"].to_numpy()), tmp_path / "o.gpkg")
    raw = gpd.read_file(tmp_path / "o.gpkg", layer="objects_raw")
    assert raw["id"].tolist() == [1, 2, 3, 4, 5]
    assert raw.geometry.geom_equals(gpd.GeoSeries(frame[output.RAW_GEOMETRY], crs=UTM)).all()


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".parquet", ".shp"])
def test_pixel_coordinates_are_written_as_they_are(tmp_path, suffix):
    frame = objects(2, crs=None)
    output.write(frame, tmp_path / f"o{suffix}")
    back = read(tmp_path / f"o{suffix}")
    assert back.total_bounds == pytest.approx(frame.total_bounds)
    assert back.crs is None or suffix == ".geojson"  # GeoJSON readers assume WGS84 whatever the file says


def test_shapefile_field_names_fit_in_ten_characters(tmp_path):
    assert output.shapefile_fields(["id", "score", "stability", "area_m2", "tiles"]) == {
        c: c for c in ["id", "score", "stability", "area_m2", "tiles"]
    }  # geosam's own columns are written as they are
    names = output.shapefile_fields(["prompt_label", "prompt_labels", "Prompt_lab", "x"])
    assert names == {
        "prompt_label": "prompt_lab",
        "prompt_labels": "prompt_l_2",
        "Prompt_lab": "Prompt_l_3",
        "x": "x",
    }
    frame = objects(2).assign(prompt_label=["a", "b"], prompt_labels=["c", "d"])
    output.write(frame, tmp_path / "o.shp")
    back = gpd.read_file(tmp_path / "o.shp")
    assert list(back.columns) == [
        "id",
        "score",
        "stability",
        "area_m2",
        "tiles",
        "prompt_lab",
        "prompt_l_2",
        "geometry",
    ]
    assert back["prompt_l_2"].tolist() == ["c", "d"]


def test_shapefile_overwrite_replaces_every_part(tmp_path):
    path = tmp_path / "o.shp"
    output.write(objects(3), path)
    path.with_suffix(".qix").write_bytes(b"stale spatial index")
    with pytest.raises(OutputError, match="--overwrite"):
        output.write(objects(1), path)
    output.write(objects(1), path, overwrite=True)
    assert len(gpd.read_file(path)) == 1
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".cpg", ".dbf", ".prj", ".shp", ".shx"]


def test_unsupported_extension_names_the_formats(tmp_path):
    with pytest.raises(OutputError, match=r"\.gpkg, \.geojson, \.parquet, \.shp"):
        output.check_output(tmp_path / "o.kml", overwrite=False)


def test_geopackage_carries_a_default_qgis_style(tmp_path):
    path = tmp_path / "o.gpkg"
    output.write(objects(4), path)
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, styleQML,"
            " useAsDefault FROM layer_styles"
        ).fetchall()
        (kind,) = db.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    assert kind == "attributes"
    [(catalog, schema, table, geometry, name, qml, default)] = rows
    assert (catalog, schema, table, geometry, default) == ("", "", "objects", "geom", 1) and name
    renderer = ET.fromstring(qml).find("renderer-v2")
    assert renderer.get("type") == "graduatedSymbol" and renderer.get("attr") == "score"
    ranges = [(float(r.get("lower")), float(r.get("upper"))) for r in renderer.iter("range")]
    assert ranges[0][0] <= 0.90 and ranges[-1][1] >= 0.99 and len(ranges) == len(style.PALETTE)
    fills = {p.get("v") for p in renderer.iter("prop") if p.get("k") == "style"}
    assert fills == {"no"}, "outlines only"
    info = subprocess.run(
        ["ogrinfo", "-so", str(path), "objects"], capture_output=True, text=True, check=False
    )
    assert info.returncode == 0 and "Warning" not in info.stdout + info.stderr, info.stderr


def test_score_classes_cover_the_scores():
    scores = np.array([0.883, 0.91, 0.999])
    ranges = style.classes(scores)
    assert ranges[0][0] == pytest.approx(0.88) and ranges[-1][1] == pytest.approx(1.0)
    assert style.class_of(scores, ranges).tolist() == [0, 1, 4]
    expected = [0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 1]
    assert np.ravel(style.classes(np.array([]))) == pytest.approx(expected)


def test_label_cog_burns_ids_on_the_scene_grid(tmp_path):
    scene = open_scene(write(tmp_path / "s.tif", squares(128, 160)))
    frame = objects(3)
    path = write_labels(frame, scene, tmp_path / "labels.tif")
    with rasterio.open(path) as ds:
        assert ds.profile["dtype"] == "uint32" and ds.nodata == 0
        assert (ds.crs, ds.transform, ds.shape) == (scene.crs, scene.transform, (128, 160))
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        labels = ds.read(1)
    # nested squares of 200, 180, 160 m on 2 m pixels: the smallest (id 3) is drawn on top
    assert labels[50, 50] == 3 and labels[2, 2] == 1 and labels[7, 7] == 2 and labels[120, 150] == 0
    assert (labels == 1).sum() == 100 * 100 - 90 * 90
    with pytest.raises(OutputError, match="--overwrite"):
        write_labels(frame, scene, path)


def test_missing_extras_name_the_install_command(tmp_path, monkeypatch):
    from geosam.preview import check_preview

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(OutputError, match=r"pip install 'geosam\[parquet\]'"):
        output.check_output(tmp_path / "o.parquet", overwrite=False)
    with pytest.raises(OutputError, match=r"pip install 'geosam\[preview\]'"):
        check_preview(tmp_path / "p.png", overwrite=False)
    assert list(tmp_path.iterdir()) == []
