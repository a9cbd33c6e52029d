"""Bad input through the real command line: one line on stderr, exit 1 (2 for usage), no output file.

One test per row of the table in docs/errors.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .rasters import DATA, squares, write, write_ungeoreferenced

ROOT = Path(__file__).parents[1]
RGB = str(DATA / "RGB.byte.tif")


def geosam(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="default")
    return subprocess.run(
        [sys.executable, "-m", "geosam", "segment", *args, "--points-per-side", "4", "-w", "1"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def make_scene(kind: str, folder: Path) -> str:
    """The input file of one row of the table."""
    if kind == "not a raster":
        (folder / "notes.tif").write_text("not a raster\n")
        return str(folder / "notes.tif")
    if kind == "truncated":
        full = write(folder / "full.tif", squares(400, 400, "uint16", 100, 4000))
        (folder / "cut.tif").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        return str(folder / "cut.tif")
    if kind == "truncated cog":  # overviews intact, so the plan works; full-resolution tiles fail on workers
        data = (DATA / "cog.tif").read_bytes()
        (folder / "cut-cog.tif").write_bytes(data[: int(len(data) * 0.35)])
        return str(folder / "cut-cog.tif")
    if kind == "zero size":
        (folder / "empty.vrt").write_text(
            '<VRTDataset rasterXSize="0" rasterYSize="0"><SRS>EPSG:32631</SRS>'
            '<GeoTransform>500000,2,0,5000000,0,-2</GeoTransform><VRTRasterBand dataType="Byte" band="1"/></VRTDataset>'
        )
        return str(folder / "empty.vrt")
    if kind == "all nodata":
        return str(write(folder / "void.tif", np.zeros((1, 300, 300), "uint16"), nodata=0))
    if kind == "no georeferencing":
        return str(write_ungeoreferenced(folder / "plain.tif"))
    if kind == "many bands":
        return str(write(folder / "stack.tif", np.repeat(squares(), 6, axis=0)))
    return RGB


# (row, scene kind, extra arguments, output name, exit code, message)
ROWS = [
    ("missing file", "rgb", ["-o", "out.gpkg"], "out.gpkg", 1, "no such file"),
    ("not a raster", "not a raster", ["-o", "out.gpkg"], "out.gpkg", 1, "not a readable raster"),
    ("truncated TIFF", "truncated", ["-o", "out.gpkg"], "out.gpkg", 1, "not a readable raster"),
    ("truncated COG, found in a tile", "truncated cog", ["--nodata", "1", "-o", "out.gpkg"], "out.gpkg", 1,
     "truncated or corrupt"),  # its collar of 1s: declared, as the warning about it asks
    ("zero-size raster", "zero size", ["-o", "out.gpkg"], "out.gpkg", 1, "not a readable raster"),
    ("all-nodata scene", "all nodata", ["-o", "out.gpkg"], "out.gpkg", 1, "every pixel is nodata"),
    ("no georeferencing", "no georeferencing", ["-o", "out.gpkg"], "out.gpkg", 1, "--pixel-coordinates"),
    ("band index out of range", "rgb", ["-b", "4,2,1", "-o", "out.gpkg"], "out.gpkg", 1, "band 4 does not exist"),
    ("unknown band name", "rgb", ["-b", "nir", "-o", "out.gpkg"], "out.gpkg", 1, "no band named 'nir'"),
    ("two bands", "rgb", ["-b", "1,2", "-o", "out.gpkg"], "out.gpkg", 1, "choose 1 or 3 bands"),
    ("many bands, none chosen", "many bands", ["-o", "out.gpkg"], "out.gpkg", 1, "choose 1 or 3 with --bands"),
    ("bad band list", "rgb", ["-b", "3,,1", "-o", "out.gpkg"], "out.gpkg", 2, "Invalid value for '-b'"),
    ("nodata outside the data type", "rgb", ["--nodata", "-1", "-o", "out.gpkg"], "out.gpkg", 1,
     "--nodata -1 is not a uint8 value"),
    ("bad percentiles", "rgb", ["--percentiles", "98,2", "-o", "out.gpkg"], "out.gpkg", 2, "LOW < HIGH"),
    ("absurd resolution", "rgb", ["--resolution", "1e9", "-o", "out.gpkg"], "out.gpkg", 1, "1 × 1 px grid"),
    ("tile size <= overlap", "rgb", ["--tile-size", "128", "--overlap", "128", "-o", "out.gpkg"], "out.gpkg", 2,
     "smaller than the tile size"),
    ("absurd tile size", "rgb", ["--tile-size", "100000", "-o", "out.gpkg"], "out.gpkg", 2, "100000 is not in the range 64<=x<=8192"),
    ("output folder missing", "rgb", ["-o", "nowhere/out.gpkg"], "nowhere/out.gpkg", 1, "does not exist"),
    ("output exists", "rgb", ["-o", "old.gpkg"], "old.gpkg", 1, "pass --overwrite"),
    ("unsupported output extension", "rgb", ["-o", "out.kml"], "out.kml", 1, "unsupported output format"),
    ("unsupported preview extension", "rgb", ["-o", "o.gpkg", "--preview", "p.jpg"], "o.gpkg", 1, "use one of .png"),
    ("unsupported labels extension", "rgb", ["-o", "o.gpkg", "--labels", "l.png"], "o.gpkg", 1, "use one of .tif"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "kind", "args", "output", "code", "message"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(tmp_path, row, kind, args, output, code, message):
    scene = "missing.tif" if row == "missing file" else make_scene(kind, tmp_path)
    if row == "output exists":
        (tmp_path / output).write_bytes(b"keep me")
    before = set(tmp_path.rglob("*"))
    result = geosam(scene, *args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    lines = [
        line.rsplit("\r", 1)[-1].strip() for line in result.stderr.split("\n")
    ]  # as a terminal shows them
    lines = [line for line in lines if line]  # the progress bar erases itself
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0] and "Traceback" not in result.stderr
    # no output, no temporary file left behind; a failure found in a tile is in the run's report
    report = {tmp_path / "out.report.json"} if row == "truncated COG, found in a tile" else set()
    assert set(tmp_path.rglob("*")) == before | report
    if row == "output exists":
        assert (tmp_path / output).read_bytes() == b"keep me"


def test_output_folder_not_writable(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits: use a folder no one can create files in
        output = "/proc/out.gpkg"
    else:
        (tmp_path / "locked").mkdir(mode=0o500)
        output = str(tmp_path / "locked" / "out.gpkg")
    result = geosam(RGB, "-o", output, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr  # fails before any work
    assert "output folder is not writable" in result.stderr
    assert not Path(output).exists()
