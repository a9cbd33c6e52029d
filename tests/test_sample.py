"""The sample scene in the package: small, georeferenced, described by its note, shipped in the wheel
and the sdist, and segmented end to end as the README's quickstart does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from PIL import Image
from rasterio.enums import ColorInterp, Compression

import geosam
from geosam.cli import main

ROOT = Path(__file__).parents[1]
# landmarks of the scene (pixel column, row): each is inside one object of its own
LANDMARKS = {"central lake": (470, 450), "pond, top right": (855, 55), "bare field, top left": (115, 95),
             "bare field, right": (870, 560)}  # fmt: skip


def test_the_sample_is_a_small_tiled_compressed_georeferenced_rgb_scene():
    path = geosam.sample_path()
    assert path.stat().st_size <= 3 * 2**20
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 26914 and ds.res == (5.0, 5.0)
        assert ds.count == 3 and set(ds.dtypes) == {"uint8"} and ds.nodata is None
        assert ds.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert ds.profile["tiled"] and ds.compression == Compression.deflate
        assert (ds.read_masks() == 255).all(), "every pixel is valid"
    scene = geosam.open_scene(path)
    assert len(geosam.TileGrid(scene.width, scene.height)) == 1, "one tile with the default settings"


def test_its_note_describes_the_file_beside_it_and_states_its_licence():
    path = geosam.sample_path()
    note = path.with_suffix(".md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\w+) \| (.+) \|$", note, re.MULTILINE))
    with rasterio.open(path) as ds:
        width_km, height_km = ds.width * ds.res[0] / 1000, ds.height * ds.res[1] / 1000
        assert rows["size"] == f"{ds.width} × {ds.height} px, {width_km:.2f} × {height_km:.2f} km"
        assert (
            rows["grid"].startswith(f"EPSG:{ds.crs.to_epsg()} ")
            and f", {ds.res[0]:g} m pixels" in rows["grid"]
        )
        assert rows["bands"].startswith("red, green, blue (uint8; no nodata)")
        assert "public domain" in ds.tags()["TIFFTAG_IMAGEDESCRIPTION"]
    assert rows["file"].endswith(f", {path.stat().st_size / 1e6:.1f} MB")
    assert "public domain" in note.splitlines()[0]
    assert "## Provenance" in note and "## Licence" in note and "Permission is hereby granted" in note


def test_geosam_sample_prints_its_path_and_says_what_it_is():
    result = CliRunner().invoke(main, ["sample"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{geosam.sample_path()}\n"
    assert "NAIP 2020" in result.stderr and "public domain" in result.stderr
    assert str(geosam.sample_path().with_suffix(".md")) in result.stderr
    quiet = CliRunner().invoke(main, ["-q", "sample"])
    assert quiet.stdout == result.stdout and quiet.stderr == ""


def test_the_wheel_and_the_sdist_ship_the_sample_and_its_note(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "geosam", tmp_path / "geosam", ignore=shutil.ignore_patterns("__pycache__"))
    build = "from setuptools import build_meta as b; print('built', b.build_wheel('.'), b.build_sdist('.'))"
    done = subprocess.run(
        [sys.executable, "-c", build], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    built = next(line for line in done.stdout.splitlines() if line.startswith("built "))
    wheel, sdist = (tmp_path / name for name in built.split()[1:])
    members = {"geosam/data/sample.tif", "geosam/data/sample.md", "geosam/sample.py"}
    with zipfile.ZipFile(wheel) as archive:
        assert members <= set(archive.namelist())
        assert archive.read("geosam/data/sample.tif") == geosam.sample_path().read_bytes()
    with tarfile.open(sdist) as archive:
        assert {f"{sdist.name.removesuffix('.tar.gz')}/{m}" for m in members} <= set(archive.getnames())


@pytest.mark.slow
def test_the_readme_quickstart_segments_the_sample_into_fields_and_ponds(tmp_path, model_installed):
    """``geosam segment "$(geosam sample)" -o sample.gpkg --preview sample.png``, the real model."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    geosam_cli = [sys.executable, "-m", "geosam"]
    sample = subprocess.run(
        [*geosam_cli, "-q", "sample"], env=env, capture_output=True, text=True, check=True
    )
    scene = sample.stdout.strip()
    run = subprocess.run(
        [*geosam_cli, "segment", scene, "-o", "sample.gpkg", "--preview", "sample.png"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    objects = pyogrio.read_dataframe(tmp_path / "sample.gpkg", layer="objects")
    report = json.loads((tmp_path / "sample.report.json").read_text())
    assert report["status"] == "complete" and report["tiles_done"] == 1 and report["objects"] == len(objects)
    assert 60 <= len(objects) <= 200, f"{len(objects)} objects"
    with rasterio.open(scene) as ds:
        assert objects.crs == ds.crs
        footprint = shapely.box(*ds.bounds)
        transform = ds.transform
        assert Image.open(tmp_path / "sample.png").size == (ds.width, ds.height)
    assert objects.geometry.is_valid.all() and objects.geometry.within(footprint.buffer(1)).all()
    found = {}
    for name, (col, row) in LANDMARKS.items():
        inside = objects[objects.contains(shapely.Point(transform @ (col + 0.5, row + 0.5)))]
        assert len(inside) >= 1 and inside.score.max() >= 0.9, f"{name}: no confident object there"
        found[name] = int(inside.loc[inside.score.idxmax(), "id"])
    assert len(set(found.values())) == len(LANDMARKS), f"one object for several landmarks: {found}"
