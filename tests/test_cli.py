"""The command line as analysts use it: exit codes, one-line errors, no partial output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner

from geosam.cli import main

QGIS_PYTHON = "/usr/bin/python3"


def geosam(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geosam", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess, code: int, pattern: str) -> None:
    assert done.returncode == code, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert pattern.lower() in lines[-1].lower(), done.stderr
    assert len(lines) <= 3, done.stderr  # usage errors: 'Usage', 'Try', 'Error'


def test_help_reads_well():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("segment", "models", "info"):
        assert command in result.output
    result = CliRunner().invoke(main, ["segment", "--help"])
    for option in ("--output", "--overwrite", "--tile-size", "--overlap", "--points-per-side", "--workers",
                   "--scheduler", "--work-dir", "--keep-work", "--retries", "--allow-partial", "--report"):  # fmt: skip
        assert option in result.output


def test_missing_scene(tmp_path):
    done = geosam("segment", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "out.gpkg"))
    assert_one_line_error(done, 1, "no such file")
    assert not (tmp_path / "out.gpkg").exists()


def test_usage_error_exits_2(tmp_path, data):
    done = geosam("segment", str(data / "RGB.byte.tif"))
    assert_one_line_error(done, 2, "missing option '-o'")
    done = geosam("segment", str(data / "RGB.byte.tif"), "-o", "x.gpkg", "--points-per-side", "0")
    assert_one_line_error(done, 2, "points-per-side")


def test_refuses_to_overwrite(tmp_path, data):
    out = tmp_path / "out.gpkg"
    out.write_bytes(b"precious")
    done = geosam("segment", str(data / "RGB.byte.tif"), "-o", str(out))
    assert_one_line_error(done, 1, "--overwrite")
    assert out.read_bytes() == b"precious"


def test_tile_size_not_above_overlap(tmp_path, data):
    done = geosam("segment", str(data / "RGB.byte.tif"), "-o", str(tmp_path / "o.gpkg"), "--overlap", "2000")
    assert_one_line_error(done, 2, "smaller than the tile size")
    assert list(tmp_path.iterdir()) == []


def test_missing_model_offline_names_the_fetch_and_import_commands(tmp_path, data, monkeypatch):
    monkeypatch.setenv("GEOSAM_MODELS_DIR", str(tmp_path / "empty"))
    done = geosam("segment", str(data / "RGB.byte.tif"), "-o", str(tmp_path / "o.gpkg"), "--offline")
    assert_one_line_error(done, 1, "geosam models fetch mobile_sam")
    assert "geosam models import FILE" in done.stderr


def test_info(data):
    done = geosam("info", str(data / "pix4d_alpha_nodata.tif"))
    assert done.returncode == 0, done.stderr
    assert "EPSG:32750" in done.stdout and "686 × 758" in done.stdout


@pytest.mark.qgis
def test_segment_writes_a_geopackage_that_gdal_and_qgis_open(tmp_path, data, model_installed):
    out = tmp_path / "fields.gpkg"
    done = geosam(
        "segment", str(data / "pix4d_alpha_nodata.tif"), "-o", str(out), "--points-per-side", "12", "-w", "1"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith(
        f"objects written to {out}"
    )  # the progress bar shows on terminals only
    frame = gpd.read_file(out, layer="objects")  # the GeoPackage also holds QGIS's layer_styles table
    assert len(frame) >= 20 and frame.crs.to_epsg() == 32750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fields.gpkg", "fields.report.json"], (
        "no temporary files or work folder left beside it"
    )
    report = json.loads((tmp_path / "fields.report.json").read_text())
    assert report["model_sha256"].startswith("6dbb9052") and report["objects"] == len(frame)
    # ogrinfo and QGIS read the file the way GDAL 3.6 / QGIS 3.22 LTR do
    if shutil.which("ogrinfo"):
        info = subprocess.run(
            ["ogrinfo", "-so", str(out), "objects"], capture_output=True, text=True, check=False
        )
        assert info.returncode == 0 and "Warning" not in info.stderr + info.stdout, info.stderr
        assert f"Feature Count: {len(frame)}" in info.stdout
    qgis = qgis_load(out, "objects")
    assert qgis == {
        **qgis,
        "valid": True,
        "count": len(frame),
        "crs": "EPSG:32750",
        "spatial_index": True,
        "invalid_geometries": 0,
        "warnings": [],
        "renderer": "graduatedSymbol",  # the GeoPackage's default style, applied on opening
        "style_field": "score",
        "fill": ["no"],
    }


@pytest.mark.qgis
def test_qgis_opens_every_geopackage_with_its_style(tmp_path):
    """The GeoPackage writer alone (no model): QGIS applies the stored style, outlines coloured by score."""
    from geosam import output, style

    from .test_outputs import objects

    frame = objects(4)
    output.write(frame, tmp_path / "o.gpkg")
    qgis = qgis_load(tmp_path / "o.gpkg", "objects")
    assert qgis == {
        **qgis,
        "valid": True,
        "count": 4,
        "crs": "EPSG:32631",
        "invalid_geometries": 0,
        "warnings": [],
        "renderer": "graduatedSymbol",
        "style_field": "score",
        "fill": ["no"],
        "outline_colours": [",".join(map(str, c)) + ",255" for c in style.PALETTE],
        "styles": [output.STYLE_NAME],
    }
    assert qgis["classes"][0][0] <= frame["score"].min() and qgis["classes"][-1][1] >= frame["score"].max()


def qgis_load(path: Path, layer: str) -> dict:
    """What real QGIS (Debian's python3-qgis, headless) makes of a layer."""
    probe = (
        Path(QGIS_PYTHON).exists()
        and subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], check=False).returncode == 0
    )
    if not probe:
        pytest.skip(
            f"QGIS is not installed ({QGIS_PYTHON} cannot import qgis.core; apt-get install python3-qgis)"
        )
    runtime = path.parent / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("PYTHONPATH", None)
    script = Path(__file__).with_name("qgis_load.py")
    done = subprocess.run(
        [QGIS_PYTHON, str(script), str(path), layer], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_progress_json_lines(tmp_path):
    """``--progress json``: one JSON object a line on stderr per tile, for programs that run geosam."""
    from geosam.testing import make_scene

    from .test_resume import double_cli, finish

    scene = make_scene(tmp_path, seed=1, width=300, height=200, max_size=40, objects=10)
    args = [str(scene.path), "-m", str(scene.labels), "--tile-size", "128", "--overlap", "16", "-w", "0"]
    code, err = finish(double_cli("--progress", "json", "segment", *args, "-o", str(tmp_path / "o.gpkg")))
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [(e["event"], e["done"], e["total"]) for e in events] == [("tiles", i, 6) for i in range(1, 7)]
    assert "objects written to" in err.splitlines()[-1]


def test_options_json_gives_the_settings_defaults():
    """``geosam options``: what programs that run geosam (the QGIS plugin) make their parameters from."""
    from geosam import settings

    done = geosam("options", "segment", "evaluate")
    assert done.returncode == 0, done.stderr
    commands = json.loads(done.stdout)["commands"]
    segment = {p["name"]: p for p in commands["segment"]}
    assert segment["points_per_side"] == {
        **segment["points_per_side"],
        "opts": ["--points-per-side"],
        "default": settings.MODEL.points_per_side,
        "min": 1,
        "max": 256,
    }
    assert (
        segment["model"]["opts"] == ["-m", "--model"] and segment["model"]["default"] == settings.MODEL.name
    )
    assert segment["tile_size"]["default"] == settings.TILING.tile_size
    assert {p["name"]: p["default"] for p in commands["evaluate"]}["iou"] == settings.EVALUATION.iou
    assert_one_line_error(geosam("options", "nope"), 2, "no command nope")
