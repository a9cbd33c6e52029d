"""Objects through time: two dates compared (geosam change), a series followed (geosam track)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine

from geosam.errors import InputError
from geosam.matching import match
from geosam.testing import scene_from_labels
from geosam.tiling import TileGrid
from geosam.timeseries import change, scene_dates, track, write_change, write_tracks

from .doubles import FlatRegions

SIDE = 320
RUN = {"tile_size": 256, "overlap": 64, "workers": 0}


def _box(labels: np.ndarray, value: int, y: int, x: int, h: int, w: int) -> None:
    labels[y : y + h, x : x + w] = value


def planted() -> tuple[np.ndarray, np.ndarray]:
    """Two dates' object ids: one of each change, and objects that stay the same."""
    before, after = np.zeros((SIDE, SIDE), np.int32), np.zeros((SIDE, SIDE), np.int32)
    for k, (y, x) in enumerate([(10, 10), (10, 250), (250, 10), (250, 250)], start=1):  # the same
        _box(before, k, y, x, 40, 50)
        _box(after, k, y, x, 40, 50)
    _box(before, 5, 80, 80, 40, 40)  # removed
    _box(before, 6, 80, 160, 40, 40)  # reshaped: grows by half
    _box(after, 6, 80, 160, 40, 60)
    _box(before, 7, 150, 20, 40, 40)  # moved by 10 px
    _box(after, 7, 160, 20, 40, 40)
    _box(before, 8, 150, 100, 40, 60)  # split in two, 10 px apart (the model sees a narrower gap as none)
    _box(after, 8, 150, 100, 40, 25)
    _box(after, 9, 150, 135, 40, 25)
    _box(before, 10, 150, 200, 40, 27)  # two merged into one
    _box(before, 11, 150, 237, 40, 27)
    _box(after, 10, 150, 200, 40, 64)
    _box(after, 12, 230, 120, 40, 40)  # inserted
    return before, after


EXPECTED = {"same": 4, "changed": 2, "appeared": 1, "disappeared": 1, "split": 1, "merged": 1}


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    before, after = planted()
    return (
        scene_from_labels(tmp_path / "before", before, seed=1, name="scene_2019").path,
        scene_from_labels(tmp_path / "after", after, seed=1, name="scene_2020").path,
    )


def _counts(result) -> dict[str, int]:
    return {k: v for k, v in result.report.statuses.items() if v}


def test_every_planted_change_is_found_with_its_status(pair):
    result = change(*pair, model=FlatRegions(), **RUN)
    assert _counts(result) == EXPECTED
    changes = result.changes.set_index("status")
    assert changes.loc["split", "after_ids"].count(",") == 1
    assert changes.loc["merged", "before_ids"].count(",") == 1
    what = sorted(result.changes.loc[result.changes.status == "changed", "what"])
    assert what == ["grew 50%, moved 5 m", "moved 5 m"]  # its centroid too; 10 px of 0.5 m
    assert set(result.changed_area["kind"]) == {"gained", "lost"}
    assert (result.changed_area["status"] != "same").all()
    gained = result.changed_area[result.changed_area["kind"] == "gained"]["area_m2"].sum()
    # appeared 40×40, grown 40×20, moved 10×40, the merged objects' gap 10×40: pixels of 0.25 m²
    assert gained == pytest.approx((1600 + 800 + 400 + 400) * 0.25)


def test_identical_dates_are_the_same(pair):
    result = change(pair[0], pair[0], model=FlatRegions(), **RUN)
    assert _counts(result) == {"same": 10}
    assert result.changed_area.empty
    assert result.report.alignment[1].endswith("read as it is")


def test_a_gain_and_an_offset_between_dates_are_no_change(pair, tmp_path):
    other = tmp_path / "brighter_2021.tif"
    with rasterio.open(pair[0]) as ds:
        data, profile = ds.read(), ds.profile
    valid = data.any(axis=0)
    brighter = np.where(valid, np.clip(np.rint(data * 0.8 + 20), 1, 255), 0).astype(np.uint8)
    with rasterio.open(other, "w", **profile) as ds:
        ds.write(brighter)
    result = change(pair[0], other, model=FlatRegions(), **RUN)
    assert _counts(result) == {"same": 10}
    low, high = (np.array(s) for s in result.report.stretch)
    assert np.allclose(high[:, 0], low[:, 0] * 0.8 + 20, atol=1)  # each date its own percentiles
    joint = change(pair[0], pair[0], model=FlatRegions(), radiometry="joint", **RUN)
    assert joint.report.stretch[0] == joint.report.stretch[1]


def test_dates_on_other_grids_are_cut_to_the_shared_area(pair, tmp_path):
    cut = tmp_path / "cut_2021.tif"
    with rasterio.open(pair[0]) as ds:  # the first date less its 64 western columns: every object kept
        profile = {**ds.profile, "width": SIDE - 64, "transform": ds.transform @ Affine.translation(64, 0)}
        data = ds.read(window=((0, SIDE), (64, SIDE)))
    with rasterio.open(cut, "w", **profile) as ds:
        ds.write(data)
    result = change(pair[0], cut, model=FlatRegions(), **RUN)
    assert result.report.grid["width"] == SIDE - 64
    assert "cut to the area all dates cover" in result.report.alignment[0]
    assert set(_counts(result)) == {"same"}


def test_scenes_of_other_places_are_refused_in_one_line(pair, tmp_path):
    far = tmp_path / "far.tif"
    with rasterio.open(pair[0]) as ds:
        profile, data = (
            {**ds.profile, "transform": ds.transform @ Affine.translation(10 * SIDE, 0)},
            ds.read(),
        )
    with rasterio.open(far, "w", **profile) as ds:
        ds.write(data)
    with pytest.raises(InputError, match="overlap on 0% of the smaller footprint"):
        change(pair[0], far, model=FlatRegions(), **RUN)
    out = tmp_path / "out.gpkg"
    done = subprocess.run(
        [sys.executable, "-m", "geosam", "change", str(pair[0]), str(far), "-o", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr.count("\n") == 1 and done.stderr.startswith("Error: ") and "overlap on 0%" in done.stderr
    )
    assert not out.exists() and not out.with_name("out.geosam-work").exists()


def test_a_rerun_resumes_from_the_work_folder_and_gives_the_same_layers(pair, tmp_path):
    first = change(*pair, model=FlatRegions(), work_dir=tmp_path / "work", **RUN)
    again = change(*pair, model=FlatRegions(), work_dir=tmp_path / "work", **RUN)
    assert all(run["tiles_skipped"] == run["tiles_planned"] for run in again.report.runs)
    assert again.changes.drop(columns="geometry").equals(first.changes.drop(columns="geometry"))
    assert again.changes.geometry.geom_equals(first.changes.geometry).all()


def test_the_change_layers_are_written_styled(pair, tmp_path):
    out = tmp_path / "changes.gpkg"
    write_change(change(*pair, model=FlatRegions(), **RUN), out)
    import pyogrio

    assert {name for name, _ in pyogrio.list_layers(out)} >= {"changes", "before", "after", "changed_area"}
    written = gpd.read_file(out, layer="changes")
    assert written["status"].value_counts().to_dict() == EXPECTED


def test_matching_statuses_on_polygons():
    import shapely

    a = np.array([shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10), shapely.box(40, 0, 50, 10)])
    # the first: a building appears inside the same field; the second splits; the third disappears
    b = np.array(
        [
            shapely.box(0, 0, 10, 10),
            shapely.box(4, 4, 6, 6),
            shapely.box(20, 0, 24, 10),
            shapely.box(26, 0, 30, 10),
        ]
    )
    groups = {g.status: (g.first, g.second) for g in match(a, b)}
    assert groups == {
        "same": ((0,), (0,)),
        "split": ((1,), (2, 3)),
        "disappeared": ((2,), ()),
        "appeared": ((), (1,)),
    }
    with pytest.raises(InputError, match="above --same-iou"):
        match(a, b, same_iou=0.3, match_iou=0.5)


def test_a_series_becomes_tracks(tmp_path, pair):
    after = planted()[1]
    third = after.copy()
    third[third == 12] = 0  # the inserted object dies again
    path = scene_from_labels(tmp_path / "third", third, seed=1, name="scene_2021").path
    frame, report = track([path, pair[1], pair[0]], model=FlatRegions(), **RUN)
    assert [d.year for d in sorted(set(frame["date"]))] == [2019, 2020, 2021]
    assert report.steps[0]["split"] == 1 and report.steps[1] == {
        **dict.fromkeys(EXPECTED, 0),
        "same": 9,
        "disappeared": 1,
    }
    same = frame[frame["event"] == "same"]
    assert same.groupby("track").size().max() == 2  # the four unchanged objects keep their track
    born = frame[(frame["event"] == "born") & (frame["date"].dt.year == 2020)]
    assert len(born) == 1 and born["fate"].tolist() == ["died"]
    split = frame[frame["event"] == "split"]
    assert len(split) == 2 and split["parents"].nunique() == 1
    out = tmp_path / "tracks.gpkg"
    write_tracks(frame, out)
    written = gpd.read_file(out, layer="tracks")
    assert len(written) == len(frame)
    import sqlite3

    with sqlite3.connect(out) as db:
        (qml,) = db.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = 'tracks'").fetchone()
    assert 'startField="date"' in qml and 'endField="end_date"' in qml


def test_dates_from_names_or_given():
    assert [d.isoformat() for d in scene_dates(["a/1985.tif", "m_4709963_se_14_1_20200831.tif"])] == [
        "1985-01-01", "2020-08-31",
    ]  # fmt: skip
    assert scene_dates(["x.tif"], ["2001-02-03"])[0].isoformat() == "2001-02-03"
    with pytest.raises(InputError, match="one date per scene"):
        scene_dates(["x.tif", "y.tif"], ["2001"])


def test_the_report_is_json(pair, tmp_path):
    result = change(*pair, model=FlatRegions(), **RUN)
    data = json.loads(result.report.to_json())
    assert data["statuses"]["split"] == 1 and len(data["runs"]) == 2


def test_a_pipeline_file_compares_two_dates(pair, tmp_path):
    from geosam.batch.config import parse
    from geosam.batch.run import run

    raw = {
        "inputs": [str(p) for p in pair], "tiling": {"tile_size": 256, "overlap": 64},
        "change": {"same_iou": 0.7}, "output": {"mode": "change", "path": "out/changes.gpkg"},
    }  # fmt: skip
    (tmp_path / "out").mkdir()
    summary = run(parse(raw, base=tmp_path), model=FlatRegions(), workers=0)
    assert [o.status for o in summary.outcomes] == ["done", "done"]
    written = gpd.read_file(tmp_path / "out" / "changes.gpkg", layer="changes")
    assert written["status"].value_counts().to_dict() == EXPECTED
    third = shutil.copy(pair[0], tmp_path / "third.tif")
    with pytest.raises(InputError, match="compares two scenes, not 3"):
        run(
            parse({**raw, "inputs": [*raw["inputs"], str(third)]}, base=tmp_path),
            model=FlatRegions(),
            workers=0,
        )


# where each planted change lies (row, col of the date whose layer shows it) and the status it should get
PLANTED = [
    ("before", 100, 100, "disappeared"), ("after", 100, 190, "changed"), ("after", 180, 40, "changed"),
    ("after", 170, 112, "split"), ("after", 170, 147, "split"), ("after", 170, 232, "merged"),
    ("after", 250, 140, "appeared"),
]  # fmt: skip
UNCHANGED = [("before", 30, 35), ("before", 30, 275), ("before", 270, 35), ("before", 270, 275)]


def _status_at(result, layer: str, row: int, col: int, transform: Affine) -> str | None:
    """The status of the largest object of ``layer`` under a pixel, None where there is none."""
    import shapely

    x, y = transform @ (col + 0.5, row + 0.5)
    objects = getattr(result, layer)
    under = objects[objects.geometry.contains(shapely.Point(x, y))]
    return None if under.empty else under.sort_values("area_m2").iloc[-1]["status"]


@pytest.mark.slow
def test_the_real_model_finds_the_planted_changes(pair, model_installed):
    from geosam.models import AutomaticParams, ModelSpec

    model = ModelSpec("mobile_sam", params=AutomaticParams(points_per_side=16))
    # flat: SAM's masks nest (two parts and a mask of both); a partition shows the split as one
    result = change(*pair, model=model, tile_size=SIDE, overlap=32, workers=0, flat=True)
    with rasterio.open(pair[0]) as ds:
        transform = ds.transform
    found = [_status_at(result, layer, r, c, transform) == status for layer, r, c, status in PLANTED]
    unchanged = [_status_at(result, layer, r, c, transform) for layer, r, c in UNCHANGED]
    print("planted:", found, "unchanged:", unchanged, result.report.statuses)
    assert sum(found) >= 0.9 * len(found)
    assert sum(s not in ("same", None) for s in unchanged) <= 0.05 * len(unchanged)


@pytest.mark.slow
def test_a_change_run_killed_and_rerun_gives_the_same_layers(tmp_path):
    import signal

    from .test_resume import double_cli, finish, wait_for_tiles

    before, _ = planted()
    scene = scene_from_labels(tmp_path, before, seed=1, name="scene_2019")
    second = shutil.copy(scene.path, tmp_path / "scene_2020.tif")
    args = [
        str(scene.path),
        str(second),
        "-m",
        str(scene.labels),
        "--tile-size",
        "64",
        "--overlap",
        "16",
        "-w",
        "0",
    ]
    whole, resumed = tmp_path / "whole.gpkg", tmp_path / "resumed.gpkg"
    assert finish(double_cli("change", *args, "-o", str(whole)))[0] == 0
    work = tmp_path / "resumed.geosam-work"
    slow = {"GEOSAM_TEST_DELAY": "0.05"}  # part of the model's identity: the same in both runs
    process = double_cli("change", *args, "-o", str(resumed), env=slow)
    wait_for_tiles(process, work / "0", 5)  # killed while the first date runs
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not resumed.exists()
    code, err = finish(double_cli("change", *args, "-o", str(resumed), env=slow))
    assert code == 0, err
    report = json.loads(resumed.with_name("resumed.report.json").read_text())
    assert report["runs"][0]["tiles_skipped"] >= 5
    for layer in ("changes", "before", "after"):
        a, b = gpd.read_file(whole, layer=layer), gpd.read_file(resumed, layer=layer)
        assert len(a) == len(b) > 0 and a.drop(columns="geometry").equals(b.drop(columns="geometry"))
        assert [g.wkb for g in a.geometry] == [g.wkb for g in b.geometry]


def test_geosam_track_writes_one_layer_with_dates(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import geosam.models
    from geosam.cli import main

    from .doubles import from_environment

    monkeypatch.setattr(
        geosam.models, "ModelSpec", from_environment
    )  # -m LABELS.tif: the reference segmenter
    scene = scene_from_labels(tmp_path, planted()[0], seed=1, name="scene")
    dates = [shutil.copy(scene.path, tmp_path / f"site_{year}.tif") for year in (2003, 2001, 2002)]
    out = tmp_path / "tracks.gpkg"
    args = [
        "track",
        *map(str, dates),
        "-o",
        str(out),
        "-m",
        str(scene.labels),
        "--tile-size",
        "128",
        "-w",
        "0",
    ]
    done = CliRunner().invoke(main, ["--progress", "json", *args, "--overlap", "16"])
    assert done.exit_code == 0, done.output
    events = [json.loads(line) for line in done.output.splitlines() if line.startswith("{")]
    tiles = [(e["what"], e["done"], e["total"]) for e in events if e["event"] == "tiles"]
    per_date = len(TileGrid(scene.width, scene.height, 128, 16))
    assert tiles == [(f"date {d}", k, per_date) for d in (1, 2, 3) for k in range(1, per_date + 1)]
    tracks = gpd.read_file(out, layer="tracks")
    assert sorted(tracks["date"].dt.year.unique()) == [2001, 2002, 2003]
    assert tracks.groupby("track").size().eq(3).all() and len(tracks) == 3 * 10
    report = json.loads(out.with_name("tracks.report.json").read_text())
    assert [step["same"] for step in report["steps"]] == [10, 10]
    assert not out.with_name("tracks.geosam-work").exists()
    again = CliRunner().invoke(main, [*args, "--overlap", "16"])
    assert again.exit_code == 1 and "exists: pass --overwrite" in again.output


def test_a_date_in_another_crs_is_warped_onto_the_first_grid_once(data, tmp_path):
    from geosam import align

    dates = align.footprints(
        [str(data / "RGB.byte.tif"), str(data / "rgb1.tif")]
    )  # rgb1: a quarter, custom WKT
    grid = align.common_grid(dates, 0.1)
    assert (grid.width, grid.height, grid.overlap) == (400, 400, pytest.approx(1.0))
    assert align.describe(dates, grid)[1].endswith(
        "reprojected from UTM Zone 18, Northern Hemisphere onto the first date's grid"
    )
    vrt = Path(align.warp_to(dates[1], grid, tmp_path / "1.vrt"))
    with rasterio.open(vrt) as ds:
        assert (ds.width, ds.height, ds.transform) == (grid.width, grid.height, grid.transform)
        assert ds.read(1).any()
    written = vrt.stat().st_mtime_ns
    align.warp_to(dates[1], grid, vrt)  # the same again: the file (and the work folder's key) kept
    assert vrt.stat().st_mtime_ns == written
