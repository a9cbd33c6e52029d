"""One settings model: the command line, the pipeline schema and the Python API take every default and
limit from geosam.settings, and agree."""

from __future__ import annotations

import dataclasses
import inspect

import click
import pytest

from geosam import scene_run, settings
from geosam.batch import config
from geosam.cli import main
from geosam.models import AutomaticParams, ModelSpec
from geosam.session import Session
from geosam.tiling import MIN_OVERLAP, TileGrid, check_tiling

# (command, option name as click calls it) -> the setting it stands for
CLI_SETTINGS = {
    ("segment", "model"): (settings.Model, "name"),
    ("segment", "tile_size"): (settings.Tiling, "tile_size"),
    ("segment", "overlap"): (settings.Tiling, "overlap"),
    ("segment", "prompt_rounds"): (settings.Tiling, "prompt_rounds"),
    ("segment", "points_per_side"): (settings.Model, "points_per_side"),
    ("segment", "points_per_batch"): (settings.Model, "points_per_batch"),
    ("segment", "pred_iou_thresh"): (settings.Model, "pred_iou_thresh"),
    ("segment", "stability_thresh"): (settings.Model, "stability_thresh"),
    ("segment", "min_area"): (settings.Filters, "min_area"),
    ("segment", "simplify"): (settings.Filters, "simplify"),
    ("segment", "workers"): (settings.Cluster, "workers"),
    ("segment", "retries"): (settings.Execution, "retries"),
    ("segment", "preview_size"): (settings.Execution, "preview_size"),
    ("segment", "tiles_per_task"): (settings.Execution, "tiles_per_task"),
    ("segment", "device"): (settings.Model, "device"),
    ("segment", "precision"): (settings.Model, "precision"),
    ("segment", "stretch_8bit"): (settings.Read, "stretch_8bit"),
    ("segment", "resolution"): (settings.Read, "resolution"),
    ("info", "tile_size"): (settings.Tiling, "tile_size"),
    ("info", "overlap"): (settings.Tiling, "overlap"),
    ("prompt", "model"): (settings.Model, "name"),
    ("prompt", "cache"): (settings.Prompts, "cache"),
    ("run", "workers"): (settings.Cluster, "workers"),
    ("evaluate", "iou"): (settings.Evaluation, "iou"),
    ("evaluate", "class_field"): (settings.Evaluation, "class_field"),
    ("change", "same_iou"): (settings.Change, "same_iou"),
    ("change", "part_share"): (settings.Change, "part_share"),
    ("track", "radiometry"): (settings.Change, "radiometry"),
    ("track", "min_overlap"): (settings.Change, "min_overlap"),
}


def cli_option(command: str, name: str) -> click.Option:
    return next(p for p in main.commands[command].params if p.name == name)


def schema_property(group: type, name: str) -> dict:
    defs = config.json_schema()["$defs"]
    prop = defs[group.__name__]["properties"][name]
    return next((a for a in prop.get("anyOf", []) if a.get("type") != "null"), prop) | {
        k: v for k, v in prop.items() if k != "anyOf"
    }


@pytest.mark.parametrize(("command", "name"), list(CLI_SETTINGS))
def test_cli_defaults_and_limits_are_the_settings(command, name):
    group, field = CLI_SETTINGS[(command, name)]
    f = settings.field(group, field)
    option = cli_option(command, name)
    assert option.default == f.default
    assert option.help == f.metadata["description"] or command == "run"
    limits = settings.limits(f)
    if isinstance(option.type, (click.IntRange, click.FloatRange)):
        assert option.type.min == limits.get("ge", limits.get("gt"))
        assert option.type.max == limits.get("le")
        assert option.type.min_open == ("gt" in limits)


def test_cli_size_bins_are_the_settings():
    option = cli_option("evaluate", "size_bins")
    assert option.default == ",".join(f"{v:g}" for v in settings.EVALUATION.size_bins)
    assert (
        option.process_value(click.Context(main.commands["evaluate"]), option.default)
        == settings.EVALUATION.size_bins
    )


def test_cli_percentiles_are_the_settings():
    option = cli_option("segment", "percentiles")
    assert option.default == ",".join(f"{v:g}" for v in settings.READ.percentiles)
    assert (
        option.process_value(click.Context(main.commands["segment"]), option.default)
        == settings.READ.percentiles
    )


@pytest.mark.parametrize("group", [settings.Read, settings.Model, settings.Tiling, settings.Prompts,
                                   settings.Filters, settings.Cluster])  # fmt: skip
def test_schema_defaults_and_limits_are_the_settings(group):
    for f in dataclasses.fields(group):
        prop = schema_property(group, f.name)
        expected = list(f.default) if isinstance(f.default, tuple) else f.default
        assert prop.get("default") == expected, f"{group.__name__}.{f.name}"
        assert prop.get("description") == f.metadata["description"]
        names = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "min_length": "minLength"}
        for limit, value in settings.limits(f).items():
            if limit in names and prop.get("type") != "array":
                assert prop[names[limit]] == value, f"{group.__name__}.{f.name}.{limit}"


def test_api_defaults_are_the_settings():
    run = inspect.signature(scene_run.segmented).parameters  # segment_scene passes its keywords on
    assert run["tile_size"].default == settings.TILING.tile_size
    assert run["overlap"].default == settings.TILING.overlap
    assert run["prompt_rounds"].default == settings.TILING.prompt_rounds
    assert run["model"].default == settings.MODEL.name
    assert run["percentiles"].default == settings.READ.percentiles
    assert run["retries"].default == settings.EXECUTION.retries
    grid = TileGrid(2000, 2000)
    assert (grid.size, grid.overlap) == (settings.TILING.tile_size, settings.TILING.overlap)
    params = AutomaticParams()
    assert (params.points_per_side, params.points_per_batch) == (
        settings.MODEL.points_per_side,
        settings.MODEL.points_per_batch,
    )
    assert (params.pred_iou_thresh, params.stability_score_thresh) == (
        settings.MODEL.pred_iou_thresh,
        settings.MODEL.stability_thresh,
    )
    assert (ModelSpec().name, ModelSpec().device, ModelSpec().precision) == ("mobile_sam", "cpu", "fp32")
    session = inspect.signature(Session).parameters
    assert session["model"].default == settings.MODEL.name
    assert session["percentiles"].default == settings.READ.percentiles


def test_tiling_limits_agree_with_the_settings():
    overlap = settings.field(settings.Tiling, "overlap")
    assert MIN_OVERLAP == overlap.metadata["ge"] == 1
    check_tiling(settings.TILING.tile_size, MIN_OVERLAP)
    with pytest.raises(Exception, match="overlap 0 px must be at least 1"):
        check_tiling(settings.TILING.tile_size, 0)


def test_a_pipeline_with_no_overlap_is_refused_at_validation_naming_file_and_key(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("inputs: [a.tif]\noutput: {path: out}\ntiling: {overlap: 0}\n")
    with pytest.raises(config.PipelineError) as info:
        config.load(path)
    assert str(info.value) == f"{path}: tiling.overlap: 0 is out of range: use at least 1"
