"""Pipeline files and `geosam run`: validation, the plan, resume, merged outputs, the examples."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from click.testing import CliRunner
from shapely.geometry import Point

from geosam.batch import config as batch_config
from geosam.batch import estimate
from geosam.batch import plan as batch_plan
from geosam.batch import run as batch_run
from geosam.batch.config import PipelineError
from geosam.batch.records import scene_key
from geosam.cli import main
from geosam.errors import InputError

from .doubles import Double
from .rasters import squares, write

EXAMPLES = Path(__file__).parents[1] / "pipelines"


@pytest.fixture
def scenes(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    write(folder / "a.tif", np.repeat(squares(300, 300, seed=1), 3, axis=0))
    write(folder / "b.tif", np.repeat(squares(300, 300, seed=2), 3, axis=0))
    return folder


def pipeline_file(folder: Path, text: str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def problems(raw, base=".") -> str:
    with pytest.raises(PipelineError) as info:
        batch_plan.plan(batch_config.parse(raw, base=base, source="job.yaml"))
    return str(info.value)


# ---- validation ----------------------------------------------------------------------------------


def test_unknown_keys_are_named_with_a_suggestion():
    raw = {"inputs": ["a.tif"], "output": {"path": "out"}, "model": {"point_per_side": 8}, "colour": 1}
    assert problems(raw) == (
        "job.yaml: model.point_per_side: unknown key; did you mean 'points_per_side'?; colour: unknown key; "
        "known keys: inputs, output, version, description, read, model, tiling, prompts, filters, classes, outlines, cluster, change"
    )


def test_wrong_types_and_ranges_are_named():
    raw = {
        "inputs": ["a.tif", 3],
        "output": {"path": "out", "mode": "one"},
        "tiling": {"tile_size": "big", "overlap": -1},
        "read": {"percentiles": [2, "x"], "stretch_8bit": "yes"},
        "filters": {"min_score": 2},
    }
    assert problems(raw) == (
        "job.yaml: inputs[1]: expected a mapping or a string, got an integer (3); "
        "output.mode: a string ('one') is not one of per_scene, merged, change, track; "
        "read.percentiles[1]: expected a number, got a string ('x'); "
        "read.stretch_8bit: expected a boolean (true/false), got a string ('yes'); "
        "tiling.tile_size: expected an integer, got a string ('big'); "
        "tiling.overlap: -1 is out of range: use at least 1; "
        "filters.min_score: 2 is out of range: use 0 to 1"
    )


def test_missing_keys_and_rules_across_keys():
    assert (
        problems({"inputs": []})
        == "job.yaml: inputs: give at least 1 item, not 0; output: required key missing"
    )
    raw = {
        "inputs": [{"path": "a.tif", "glob": "*.tif"}, {"glob": "*.tif", "name": "x"}],
        "output": {"path": "out.gpkg"},
        "tiling": {"tile_size": 256, "overlap": 256},
    }
    assert problems(raw) == (
        "job.yaml: inputs[0]: give exactly one of path, glob, list, stac (got path, glob); "
        "inputs[1].name: a glob gives several scenes, named after their files; name path or stac inputs only; "
        "tiling.overlap: 256 px must be smaller than tiling.tile_size 256 px; "
        "output.path: out.gpkg: per_scene output is a folder of SCENE.gpkg files; give a folder, or set output.mode: merged"
    )


def test_missing_inputs_are_all_listed_before_any_work(tmp_path, scenes):
    (tmp_path / "list.txt").write_text("# scenes\nscenes/a.tif\nscenes/nope.tif\n")
    raw = {
        "inputs": [
            "scenes/a.tif",
            "scenes/missing.tif",
            "other/*.tif",
            {"list": "list.txt"},
            {"stac": "item.json"},
        ],
        "output": {"path": "out"},
        "prompts": {"file": "prompts/{scene}.gpkg"},
    }
    message = problems(raw, base=tmp_path)
    assert message == (
        f"job.yaml: inputs[1]: {tmp_path}/scenes/missing.tif: no such file; "
        f"inputs[2]: '{tmp_path}/other/*.tif' matches no file; "
        f"inputs[3].list: {tmp_path}/list.txt line 3: {tmp_path}/scenes/nope.tif: no such file; "
        f"inputs[4].stac: {tmp_path}/item.json: no such file; "
        f"prompts.file: {tmp_path}/prompts/a.gpkg (scene a): no such prompt file; "
        f"inputs[3].list: scene name 'a' ({tmp_path}/scenes/a.tif) is also the name of {tmp_path}/scenes/a.tif; "
        "scene names (file stems) must be unique: give the inputs a name, or split the pipeline"
    )
    assert not (tmp_path / "out").exists()


def test_file_formats_and_cli_errors(tmp_path, scenes):
    toml = pipeline_file(tmp_path, 'inputs = ["scenes/*.tif"]\n[output]\npath = "out"\n', "job.toml")
    assert [j.name for j in batch_plan.plan(batch_config.load(toml)).jobs] == ["a", "b"]
    bad = pipeline_file(tmp_path, "inputs: [scenes/a.tif]\noutput: {path: out}\nmodel: {points_per_sid: 4}\n")
    result = CliRunner().invoke(main, ["run", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {bad}: model.points_per_sid: unknown key; did you mean 'points_per_side'?"
    ]
    broken = pipeline_file(tmp_path, "inputs: [a\n", "broken.yaml")
    result = CliRunner().invoke(main, ["run", str(broken)])
    assert result.exit_code == 1 and "not valid YAML (line 2, column 1" in result.output
    assert CliRunner().invoke(main, ["run"]).exit_code == 2


def test_stac_items_and_list_files(tmp_path, scenes):
    item = {
        "type": "Feature",
        "id": "item-7",
        "assets": {"visual": {"href": "scenes/b.tif", "type": "image/tiff"}},
    }
    (tmp_path / "item.json").write_text(json.dumps(item))
    (tmp_path / "list.txt").write_text("scenes/a.tif  # the first\n\n")
    raw = {"inputs": [{"list": "list.txt"}, {"stac": "item.json"}], "output": {"path": "out"}}
    jobs = batch_plan.plan(batch_config.parse(raw, base=tmp_path)).jobs
    assert [(j.name, Path(j.path).name) for j in jobs] == [("a", "a.tif"), ("item-7", "b.tif")]


# ---- schema --------------------------------------------------------------------------------------


def test_committed_schema_is_the_generated_one():
    committed = json.loads((EXAMPLES / "schema.json").read_text())
    assert committed == batch_config.json_schema(), "regenerate: geosam run --schema > pipelines/schema.json"
    result = CliRunner().invoke(main, ["run", "--schema"])
    assert json.loads(result.output) == committed


def test_examples_validate_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (the test extra)")
    import tomllib

    import yaml

    schema = batch_config.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("*.toml")):
        raw = yaml.safe_load(path.read_text()) if path.suffix == ".yaml" else tomllib.loads(path.read_text())
        assert not list(validator.iter_errors(raw)), path
    assert list(validator.iter_errors({"inputs": ["a.tif"], "output": {"path": "x"}, "modle": {}}))


# ---- dry run -------------------------------------------------------------------------------------


def test_dry_run_shows_scenes_tiles_and_estimate(tmp_path, scenes):
    job = pipeline_file(
        tmp_path,
        "inputs: [scenes/*.tif]\nmodel: {points_per_side: 4}\ntiling: {tile_size: 256, overlap: 32}\n"
        "cluster: {workers: 1}\noutput: {path: out}\n",
    )
    result = CliRunner().invoke(main, ["run", str(job), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    per_tile = estimate.ENCODE_S + estimate.DECODE_S * 16
    scene_s = math.ceil(4 / (os.cpu_count() or 1)) * per_tile  # 4 tiles on all cores
    assert lines[:6] == [
        f"pipeline: {job}",
        "model:    mobile_sam on cpu; automatic mode: 4×4 points per 256-px tile, overlap 32 px",
        "cluster:  a local Dask cluster of 1 worker",
        f"output:   {tmp_path}/out/SCENE.gpkg (one GeoPackage per scene)",
        "",
        "scene  size       crs         mode       work     estimate  status",
    ]
    assert (
        lines[6]
        == f"a      300 × 300  EPSG:32631  automatic  4 tiles  {estimate.duration(scene_s):>8}  to run"
    )
    assert lines[9] == "2 scenes: 2 to run, 0 finished earlier"
    assert (
        lines[10]
        == f"estimated time: {estimate.duration(2 * scene_s)} (all scenes: {estimate.duration(2 * scene_s)})"
    )
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"


# ---- running -------------------------------------------------------------------------------------


def test_second_run_skips_finished_scenes(tmp_path, scenes):
    config = batch_config.load(
        pipeline_file(
            tmp_path,
            "inputs: [scenes/*.tif]\ntiling: {tile_size: 256, overlap: 64}\noutput: {path: out}\n"
            "cluster: {workers: 0}\nfilters: {min_score: 0.9}\n",
        )
    )
    seen: list[tuple[str, str, int | None]] = []
    first = batch_run.run(
        config, model=Double(), on_start=lambda job, total: seen.append(("start", job.name, total)),
        on_tile=lambda job: seen.append(("tile", job.name, None)),
    )  # fmt: skip
    assert [(o.job.name, o.status) for o in first.outcomes] == [("a", "done"), ("b", "done")]
    for name in ("a", "b"):  # each scene's tile count first, then one call per tile
        calls = [(kind, total) for kind, job, total in seen if job == name]
        assert calls[0][0] == "start" and calls[1:] == [("tile", None)] * calls[0][1] and calls[0][1] > 1
    frame = gpd.read_file(tmp_path / "out" / "a.gpkg", layer="objects")
    assert len(frame) == first.outcomes[0].objects > 0
    assert (frame["score"] >= 0.9).all() and list(frame["id"]) == list(range(1, len(frame) + 1))
    modified = (tmp_path / "out" / "a.gpkg").stat().st_mtime_ns
    second = batch_run.run(config, model=Double())
    assert [o.status for o in second.outcomes] == ["skipped", "skipped"]
    assert second.outcomes[0].objects == first.outcomes[0].objects
    assert (tmp_path / "out" / "a.gpkg").stat().st_mtime_ns == modified
    assert "2 scenes: 0 done, 2 skipped (finished earlier), 0 failed" in second.table()

    (tmp_path / "out" / "b.gpkg").unlink()  # an interrupted run: b is redone, a is not
    third = batch_run.run(config, model=Double())
    assert [o.status for o in third.outcomes] == ["skipped", "done"]

    changed = dataclasses.replace(config, filters=batch_config.Filters(min_score=0.5))
    with pytest.raises(
        PipelineError, match=r"a.gpkg, b.gpkg exist from another run or other settings: pass --overwrite"
    ):
        batch_run.run(changed, model=Double())
    fourth = batch_run.run(changed, model=Double(), overwrite=True)
    assert [o.status for o in fourth.outcomes] == ["done", "done"]
    assert fourth.outcomes[0].objects > first.outcomes[0].objects


def test_merged_output_has_a_scene_field_and_a_layer_per_group(tmp_path, scenes):
    config = batch_config.load(
        pipeline_file(
            tmp_path,
            "inputs:\n  - {path: scenes/a.tif, layer: early}\n  - {path: scenes/b.tif, layer: late}\n"
            "  - {path: scenes/b.tif, name: b_again}\n"
            "tiling: {tile_size: 256, overlap: 64}\ncluster: {workers: 0}\n"
            "output: {mode: merged, path: out/change.gpkg}\n",
        )
    )
    summary = batch_run.run(config, model=Double())
    assert summary.merged_written and not summary.failed
    merged = tmp_path / "out" / "change.gpkg"
    assert sorted(pyogrio.list_layers(merged)[:, 0]) == [
        "early",
        "late",
        "layer_styles",
        "objects",
    ]  # + QGIS styles
    early = gpd.read_file(merged, layer="early")
    objects = gpd.read_file(merged, layer="objects")
    assert list(early.columns[:2]) == ["scene", "id"] and set(early["scene"]) == {"a"}
    assert set(objects["scene"]) == {"b_again"} and len(objects) == summary.outcomes[2].objects
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "change.gpkg",
        "change.parts",
        "change.run.json",
    ]
    again = batch_run.run(config, model=Double())
    assert [o.status for o in again.outcomes] == ["skipped"] * 3 and not again.merged_written


def test_a_merged_layer_is_written_a_batch_at_a_time(tmp_path, scenes, monkeypatch):
    from geosam import objectstore, style

    monkeypatch.setattr(objectstore, "CHUNK", 2)  # parts read 2 objects at a time
    config = batch_config.load(
        pipeline_file(
            tmp_path,
            "inputs:\n  - {path: scenes/a.tif, layer: all}\n  - {path: scenes/b.tif, layer: all}\n"
            "tiling: {tile_size: 256, overlap: 64}\ncluster: {workers: 0}\n"
            "output: {mode: merged, path: out/all.gpkg}\n",
        )
    )
    summary = batch_run.run(config, model=Double())
    merged = gpd.read_file(tmp_path / "out" / "all.gpkg", layer="all")
    parts = [gpd.read_file(o.job.output, layer="objects") for o in summary.outcomes]
    assert len(merged) == sum(len(p) for p in parts) > 4  # more than two batches
    assert list(merged["scene"]) == ["a"] * len(parts[0]) + ["b"] * len(parts[1])
    whole = pd.concat(parts, ignore_index=True)
    assert merged.drop(columns=["scene", "geometry"]).equals(whole.drop(columns="geometry"))
    qml = pyogrio.read_dataframe(tmp_path / "out" / "all.gpkg", layer="layer_styles")["styleQML"][0]
    assert qml == style.qml(whole["score"].to_numpy())  # the style's classes span every scene's scores


def test_prompt_mode_scenes(tmp_path, scenes):
    points = gpd.GeoDataFrame(
        {"field_id": [1, 2, 3]},
        geometry=gpd.points_from_xy([500_000 + 2 * 64, 500_000 + 2 * 192, 400_000], [5_000_000 - 2 * 64] * 3),
        crs="EPSG:32631",
    )
    points.to_file(tmp_path / "points.gpkg")
    config = batch_config.load(
        pipeline_file(
            tmp_path,
            "inputs: [scenes/a.tif]\nprompts: {file: points.gpkg, id_field: field_id, cache: false}\n"
            "filters: {min_area: 1000}\noutput: {path: out}\n",
        )
    )
    summary = batch_run.run(config, model=Double())
    (outcome,) = summary.outcomes
    assert outcome.status == "done" and outcome.objects == 2 and outcome.skipped_prompts == 1
    frame = gpd.read_file(tmp_path / "out" / "a.gpkg", layer="objects")
    assert sorted(frame["id"]) == [1, 2] and np.allclose(frame["area_m2"], 40 * 40 * 4)


def test_prompt_mode_names_a_layer_as_qgis_does(tmp_path, scenes):
    path = tmp_path / "points.gpkg"
    gpd.GeoDataFrame(geometry=[Point(400_000, 5_000_000)], crs="EPSG:32631").to_file(path, layer="elsewhere")
    points = gpd.GeoDataFrame(
        {"field_id": [1, 2, 3]},
        geometry=gpd.points_from_xy([500_000 + 2 * 64, 500_000 + 2 * 192, 400_000], [5_000_000 - 2 * 64] * 3),
        crs="EPSG:32631",
    )
    points.to_file(path, layer="fields")
    text = (
        "inputs: [scenes/a.tif]\nprompts: {file: 'points.gpkg|layername=fields', id_field: field_id, cache: false}\n"
        "filters: {min_area: 1000}\noutput: {path: out}\n"
    )
    config = batch_config.load(pipeline_file(tmp_path, text))
    (outcome,) = batch_run.run(config, model=Double()).outcomes
    assert outcome.status == "done" and outcome.objects == 2 and outcome.skipped_prompts == 1
    (job,) = batch_plan.plan(config).jobs
    key = scene_key(config, job.path, job.prompts, {})
    assert key != scene_key(config, job.path, str(path), {})  # another layer: another result
    points.iloc[:1].to_file(path, layer="fields", mode="a")
    assert scene_key(config, job.path, job.prompts, {}) != key  # the file changed: its result is stale
    message = problems(
        {
            "inputs": ["scenes/a.tif"],
            "output": {"path": "out"},
            "prompts": {"file": "nope.gpkg|layername=fields"},
        },
        tmp_path,
    )
    assert message == f"job.yaml: prompts.file: {tmp_path}/nope.gpkg (scene a): no such prompt file"


def test_failed_scene_is_reported_and_others_go_on(tmp_path, scenes):
    write(scenes / "c.tif", np.full((3, 300, 300), 20, np.uint8))  # no bright pixels: the double fails
    config = batch_config.load(
        pipeline_file(
            tmp_path,
            "inputs: [scenes/*.tif]\ntiling: {tile_size: 256, overlap: 64}\n"
            "cluster: {workers: 0}\noutput: {path: out}\n",
        )
    )

    @dataclasses.dataclass(frozen=True)
    class FailsOnDark(Double):
        def automatic(self, tile):
            if tile.image.max() < 128:
                raise InputError("cannot read pixels")
            return super().automatic(tile)

    summary = batch_run.run(config, model=FailsOnDark())
    assert [o.status for o in summary.outcomes] == ["done", "done", "failed"]
    assert "tiles failed" in summary.failed[0].message and "cannot read pixels" in summary.failed[0].message
    assert sorted(p.name for p in (tmp_path / "out").glob("*.gpkg")) == ["a.gpkg", "b.gpkg"]
    again = batch_run.run(config, model=FailsOnDark())
    assert [o.status for o in again.outcomes] == ["skipped", "skipped", "failed"]


def test_a_scene_without_objects_says_why_in_the_summary(tmp_path, scenes):
    from geosam.models.base import Funnel

    from .doubles import Counting

    config = batch_config.load(
        pipeline_file(
            tmp_path, "inputs: [scenes/a.tif]\ntiling: {tile_size: 256, overlap: 64}\noutput: {path: out}\n"
        )
    )
    summary = batch_run.run(config, workers=0, model=Counting(Funnel(1, 16, 48, 0, 0, 0, 0)))
    (outcome,) = summary.outcomes
    assert outcome.status == "done" and outcome.objects == 0
    assert outcome.message.startswith("no objects: none of the 192 masks the model proposed for 64 prompts")
    assert outcome.message in summary.table()


# ---- the examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["drone_fields.yaml", "naip_change.yaml", "drone_prompts.toml"])
def test_examples_load_validate_and_dry_run(name, data):
    config = batch_config.load(EXAMPLES / name)
    plan = batch_plan.plan(config)
    assert plan.jobs and all(Path(job.path).is_file() for job in plan.jobs)
    text = estimate.dry_run(config)
    assert f"pipeline: {EXAMPLES / name}" in text and "estimated time:" in text


def test_naip_change_example_writes_two_layers_of_one_geopackage(data):
    plan = batch_plan.plan(batch_config.load(EXAMPLES / "naip_change.yaml"))
    assert [(j.name, j.layer) for j in plan.jobs] == [("naip_2009", "naip_2009"), ("naip_2020", "naip_2020")]
    assert plan.merged.name == "naip_change.gpkg"


def test_drone_fields_example_runs_with_the_real_model(tmp_path, data, model_installed):
    """The one real-model run: the example as written, but 4×4 points per tile and one worker."""
    config = batch_config.load(EXAMPLES / "drone_fields.yaml")
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, points_per_side=4),
        output=dataclasses.replace(config.output, path=str(tmp_path / "out")),
    )
    summary = batch_run.run(config, workers=1)
    (outcome,) = summary.outcomes
    assert outcome.status == "done", outcome.message
    frame = gpd.read_file(tmp_path / "out" / "pix4d_alpha_nodata.gpkg", layer="objects")
    assert len(frame) == outcome.objects > 0
    assert frame.crs.to_epsg() == 32750
    assert (frame["area_m2"] >= 20).all() and (frame["score"] >= 0.9).all()
    record = json.loads((tmp_path / "out" / "pix4d_alpha_nodata.run.json").read_text())
    assert record["objects"] == len(frame)
    assert [o.status for o in batch_run.run(config, workers=1).outcomes] == ["skipped"]


def test_model_section_takes_a_checkpoint_backend_and_precision(tmp_path, model_installed):
    raw = {
        "inputs": ["a.tif"],
        "output": {"path": "out"},
        "model": {"checkpoint": "weights/mine.pt", "architecture": "vit_t", "backend": "onnx"},
    }
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "mine.pt").symlink_to(model_installed)
    spec = batch_plan.model_spec(batch_config.parse(raw, base=tmp_path, source="job.yaml"))
    assert spec.checkpoint == tmp_path / "weights" / "mine.pt"  # relative to the pipeline file
    assert (spec.name, spec.architecture, spec.backend, spec.precision) == ("mine", "vit_t", "onnx", "fp32")
    raw["model"] = {"backend": "tensorrt", "precision": "fp8"}
    message = problems(raw)
    assert "model.backend" in message and "model.precision" in message


def test_offline_in_the_pipeline_or_on_the_command_line_never_downloads(tmp_path, scenes, monkeypatch):
    from geosam.errors import ModelError
    from geosam.models import weights

    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "no-models"))
    monkeypatch.delenv(weights.OFFLINE_ENV)  # the pipeline's key or the argument alone turns downloads off
    monkeypatch.setitem(
        weights.KNOWN, "mobile_sam", dataclasses.replace(weights.known("mobile_sam"), sources=())
    )
    raw = {"inputs": [str(scenes / "a.tif")], "output": {"path": str(tmp_path / "out")}}
    assert not batch_plan.model_spec(batch_config.parse(raw, base=tmp_path)).offline
    offline = {**raw, "model": {"offline": True}}
    assert batch_plan.model_spec(batch_config.parse(offline, base=tmp_path)).offline
    for pipeline, flag in ((offline, False), (raw, True)):
        with pytest.raises(ModelError, match=r"downloads are off.*geosam models import FILE"):
            batch_run.run(batch_config.parse(pipeline, base=tmp_path), workers=0, offline=flag)
    assert not (tmp_path / "no-models").exists()


def test_score_filter_numbers_objects_across_batches():
    """geosam run writes a scene a batch at a time: ids stay 1..n over batches the filter empties."""
    batches = [
        gpd.GeoDataFrame({"id": [1, 2], "score": [0.95, 0.5]}, geometry=[Point(0, 0), Point(1, 1)]),
        gpd.GeoDataFrame({"id": [3], "score": [0.6]}, geometry=[Point(2, 2)]),
        gpd.GeoDataFrame({"id": [4, 5], "score": [0.7, 0.99]}, geometry=[Point(3, 3), Point(4, 4)]),
    ]
    kept = list(batch_run._scored(iter(batches), 0.9))
    assert [list(b["id"]) for b in kept] == [[1], [2]]
    assert [list(b["score"]) for b in kept] == [[0.95], [0.99]]
    none = list(batch_run._scored(iter(batches), 1.0))
    assert len(none) == 1 and none[0].empty  # the first batch makes the layer, empty or not
