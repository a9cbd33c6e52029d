"""A scene run's summary: why a run gave no objects, and what to try."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from geosam.cli import main
from geosam.models.base import Funnel
from geosam.scene_run import segment_scene

from .doubles import Bright, Counting
from .rasters import DATA, squares, write


@pytest.mark.parametrize(
    ("funnel", "why"),
    [
        (Funnel(1, 0, 0, 0, 0, 0, 0), "no prompt point fell on valid pixels; try more --points-per-side"),
        (
            Funnel(1, 16, 48, 0, 0, 0, 0),
            "none of the 192 masks the model proposed for 64 prompts reached --pred-iou-thresh 0.88",
        ),
        (
            Funnel(1, 16, 48, 12, 0, 0, 0),
            "48 of the model's 192 masks reached --pred-iou-thresh 0.88, none --stability-thresh 0.92",
        ),
        (
            Funnel(1, 16, 48, 12, 9, 1, 0),
            "those that differ (4) each cover (nearly) all valid pixels of their tile: the image, not an object; "
            "the objects may be larger than a tile",
        ),
    ],
)
def test_no_objects_says_which_stage_let_none_through(tmp_path, funnel, why):
    path = write(tmp_path / "s.tif", squares(400, 400))
    frame, report = segment_scene(path, model=Counting(funnel), tile_size=256, overlap=32, workers=0)
    assert len(frame) == 0 and report.masks == {
        k: 4 * v
        for k, v in zip(
            ["tiles", "prompts", "masks", "confident", "stable", "distinct", "objects", "proposals"],
            vars(funnel).values(),
            strict=True,
        )
    }  # four tiles
    (line,) = report.advice
    assert line.startswith("no objects: ") and why in line
    assert line in report.summary().splitlines()


def test_a_featureless_scene_is_named_as_such(tmp_path):
    flat = np.full((1, 300, 300), 7, "uint8")
    path = write(tmp_path / "flat.tif", flat)
    _, report = segment_scene(path, model=Counting(Funnel(1, 4, 12, 12, 12, 1, 0)), tile_size=512, workers=0)
    assert report.advice[0].endswith(
        "every valid pixel of the scene reads as 7: check --bands and --nodata (geosam info)"
    )


def test_objects_all_under_min_area_are_named(tmp_path):
    path = write(tmp_path / "s.tif", squares(400, 400))
    _, report = segment_scene(path, model=Bright(), tile_size=256, overlap=32, workers=0)
    found = report.objects
    assert found > 0 and report.advice == []  # 2 m pixels suit the model: no advice either
    _, report = segment_scene(path, model=Bright(), tile_size=256, overlap=32, workers=0, min_area=1e9)
    assert report.advice == [f"no objects: {found} found, all smaller than --min-area 1e+09 m²; lower it"]


@pytest.mark.slow
def test_shade_gives_no_objects_and_the_summary_says_why(tmp_path, model_installed):
    """The sample hillshade, whose valid pixels are all 0, through the command line with the real model."""
    out = tmp_path / "shade.gpkg"
    result = CliRunner().invoke(
        main, ["segment", str(DATA / "shade.tif"), "-o", str(out), "-w", "0", "--points-per-side", "16"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "shade.report.json").read_text())
    # the model's one mask is all of the scene's valid pixels: the ground, left out
    assert report["objects"] == 0 and report["masks"]["masks"] > 0 and report["ground"] == 1
    (why,) = report["advice"]
    assert "make one region over most of the scene: its ground, left out (--keep-background keeps it)" in why
    assert why.endswith("every valid pixel of the scene reads as 0: check --bands and --nodata (geosam info)")
    assert why in result.stderr.splitlines()
