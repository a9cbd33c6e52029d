"""The QGIS plugin (qgis_plugin/geosam_qgis): its subprocess runner here, its Processing provider in
real QGIS 3.22 (Debian's python3-qgis, headless, through tests/qgis_processing.py) and in
``qgis_process``, with the real model on crops of ../shared/data scenes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import rasterio.windows
from affine import Affine
from shapely.geometry import Point, box

from geosam import settings
from geosam._version import __version__
from geosam.cli import main
from geosam.cli.options_json import describe

ROOT = Path(__file__).parents[1]
PLUGINS = ROOT / "qgis_plugin"
sys.path.insert(0, str(PLUGINS))
from geosam_qgis import runner  # noqa: E402 - the plugin's folder is not a package of the repository

QGIS_PYTHON = "/usr/bin/python3"
ALGORITHMS = {"geosam:segment": "segment", "geosam:classes": "segment", "geosam:prompt": "prompt", "geosam:run": "run",
              "geosam:evaluate": "evaluate"}  # fmt: skip


def executable(folder: Path, double: bool = False) -> Path:
    """A `geosam` executable running this checkout's geosam in this environment (with ``double``: the
    reference segmenter of tests/double_cli.py as its model), as a user's environment would have."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "geosam"
    module = "tests.double_cli" if double else "geosam.cli"
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom {module} import main\n"
        'if __name__ == "__main__":\n    main(prog_name="geosam")\n'
    )
    path.chmod(0o755)
    return path


# --- the runner, without QGIS ---------------------------------------------------------------------


def fake(folder: Path, script: str) -> Path:
    """An executable standing in for geosam: a shell script."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "geosam"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_find_takes_the_setting_an_environment_folder_or_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("GEOSAM_EXECUTABLE", raising=False)
    made = fake(tmp_path / "env" / "bin", "")
    assert runner.find(str(made)) == made
    assert runner.find(str(tmp_path / "env")) == made  # a virtual environment's folder
    monkeypatch.setenv("GEOSAM_EXECUTABLE", str(made))
    assert runner.find("") == made
    with pytest.raises(runner.GeosamError) as missing:
        runner.find(str(tmp_path / "nowhere"))
    message = str(missing.value)
    assert "\n" not in message and message.startswith(
        f"geosam not found at {tmp_path / 'nowhere'}: install it"
    )
    assert "./geosam.sh demo" in message and "Settings > Options > Processing > Providers > geosam" in message


def test_a_geosam_without_options_is_told_to_update(tmp_path):
    old = fake(tmp_path, "echo \"Error: No such command 'options'.\" >&2\nexit 2\n")
    with pytest.raises(runner.GeosamError) as failed:
        runner.options(old)
    assert str(failed.value) == (
        f"{old} cannot describe its options (No such command 'options'.): this plugin needs a geosam with "
        "`geosam options`: update it (git pull; ./geosam.sh demo)"
    )


def test_run_passes_progress_and_messages_and_raises_the_one_line_error(tmp_path):
    geosam = fake(
        tmp_path,
        'echo \'{"event": "tiles", "what": "segment", "done": 1, "total": 2}\' >&2\n'
        "echo a warning >&2\necho table\n"
        'echo \'{"event": "tiles", "what": "segment", "done": 2, "total": 2}\' >&2\n'
        'echo "Error: scene.tif: no such file; check the path" >&2\nexit 1\n',
    )
    events, messages = [], []
    with pytest.raises(runner.GeosamError) as failed:
        runner.run(geosam, ["segment"], events.append, messages.append, lambda: False)
    assert str(failed.value) == "scene.tif: no such file; check the path"
    assert [e["done"] for e in events] == [1, 2]
    assert messages[0] == f"$ {geosam} --progress json segment" and "a warning" in messages


def test_cancel_interrupts_geosam_like_ctrl_c(tmp_path):
    stopped = tmp_path / "stopped"
    geosam = fake(
        tmp_path, f"trap 'touch {stopped}; exit 130' INT\necho started >&2\nwhile :; do sleep 0.05; done\n"
    )
    messages: list[str] = []
    with pytest.raises(runner.Cancelled, match="run it again with the same scene to resume"):
        runner.run(geosam, [], print, messages.append, lambda: "started" in messages)
    assert stopped.exists(), "geosam got SIGINT (Ctrl-C), to stop cleanly"


def test_build_makes_the_installable_zip(tmp_path):
    done = subprocess.run([sys.executable, str(PLUGINS / "build.py"), "-o", str(tmp_path / "p.zip")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Install from ZIP" in done.stdout
    with zipfile.ZipFile(tmp_path / "p.zip") as archive:
        names = set(archive.namelist())
        metadata = archive.read("geosam_qgis/metadata.txt").decode()
    assert {f"geosam_qgis/{n}" for n in ("__init__.py", "metadata.txt", "icon.svg", "LICENSE")} <= names
    assert not any("__pycache__" in n for n in names)
    assert f"version={__version__}\n" in metadata and "hasProcessingProvider=yes" in metadata


# --- in QGIS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qgis() -> None:
    probe = (
        Path(QGIS_PYTHON).exists()
        and subprocess.run(
            [QGIS_PYTHON, "-c", "import qgis.core"], check=False, capture_output=True
        ).returncode
        == 0
    )
    if not probe:
        pytest.skip(
            f"QGIS is not installed ({QGIS_PYTHON} cannot import qgis.core; apt-get install python3-qgis)"
        )


def qgis_env(tmp_path: Path, geosam: Path | str) -> dict[str, str]:
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime),
           "GEOSAM_EXECUTABLE": str(geosam)}  # fmt: skip
    env.pop("PYTHONPATH", None)
    # QGIS's embedded Python finds its home from the PATH's python3: not this virtual environment's
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(sys.prefix))
    return env


def processing(tmp_path: Path, geosam: Path | str, **job) -> dict:
    """tests/qgis_processing.py in QGIS's Python: the plugin loaded, a job run; its JSON."""
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"plugins": str(PLUGINS), **job}))
    done = subprocess.run(
        [QGIS_PYTHON, str(ROOT / "tests" / "qgis_processing.py"), str(spec)], capture_output=True, text=True,
        env=qgis_env(tmp_path, geosam), timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def crop(data: Path, tmp_path: Path, size: int = 512, name: str = "pix4d_alpha_nodata.tif") -> Path:
    """A size × size crop of a sample scene (its CRS, alpha band and all), as a small real scene."""
    out = tmp_path / f"crop{size}.tif"
    with rasterio.open(data / name) as src:
        window = rasterio.windows.Window(100, 100, size, size)
        moved = src.transform @ Affine.translation(window.col_off, window.row_off)
        profile = {**src.profile, "width": size, "height": size, "transform": moved}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.colorinterp = src.colorinterp
    return out


def assert_styled_objects(layer: dict, crs: str) -> None:
    assert layer == {
        **layer,
        "valid": True,
        "crs": crs,
        "renderer": "graduatedSymbol",
        "style_field": "score",
    }
    assert layer["count"] > 0


@pytest.mark.qgis
def test_provider_parameters_have_the_command_lines_defaults(tmp_path, qgis):
    """Every parameter made from an option has its default and limits, which come from settings."""
    described = processing(tmp_path, executable(tmp_path / "env"), describe=True)
    assert described["provider"] == "geosam" and set(described["algorithms"]) == set(ALGORITHMS)
    for algorithm, command in ALGORITHMS.items():
        parameters = described["algorithms"][algorithm]["parameters"]
        made = 0
        for option in main.commands[command].params:
            parameter = parameters.get(option.name.upper())
            if parameter is None or parameter["type"] not in ("number", "boolean", "enum", "string"):
                continue
            made += 1
            default = describe(option)["default"]  # click's, from the settings
            if parameter["type"] == "enum":
                default = option.type.choices.index(default) if default is not None else None  # type: ignore[attr-defined]
            assert parameter["default"] == default, (algorithm, option.name)
            low, high = getattr(option.type, "min", None), getattr(option.type, "max", None)
            if low is not None:
                assert parameter["min"] == low, (algorithm, option.name)
            if high is not None:
                assert parameter["max"] == high, (algorithm, option.name)
        assert made >= 2, algorithm
    segment = described["algorithms"]["geosam:segment"]["parameters"]
    assert segment["POINTS_PER_SIDE"]["default"] == settings.MODEL.points_per_side
    assert (segment["POINTS_PER_SIDE"]["min"], segment["POINTS_PER_SIDE"]["max"]) == (1, 256)
    assert segment["TILE_SIZE"]["default"] == settings.TILING.tile_size
    assert segment["MODEL"]["default"] == settings.MODEL.name and not segment["MODEL"]["advanced"]
    assert segment["RETRIES"]["advanced"] and "OUTPUT" in segment and "WORK_DIR" in segment
    assert "Tries more for a tile" in segment["RETRIES"]["help"]
    evaluate = described["algorithms"]["geosam:evaluate"]["parameters"]
    assert evaluate["IOU"]["default"] == settings.EVALUATION.iou


@pytest.mark.qgis
def test_missing_geosam_says_how_to_install_it_in_one_line(tmp_path, data, qgis):
    missing = tmp_path / "no-such-env" / "bin" / "geosam"
    described = processing(tmp_path, missing, describe=True)
    assert set(described["algorithms"]) == set(ALGORITHMS), "the algorithms are there, to say so when run"
    done = processing(tmp_path, missing, algorithm="geosam:segment",
                      parameters={"INPUT": str(data / "RGB.byte.tif"), "OUTPUT": str(tmp_path / "o.gpkg")})  # fmt: skip
    assert done["error"] == f"geosam not found at {missing}: {runner.INSTALL}"
    assert not (tmp_path / "o.gpkg").exists()


@pytest.mark.qgis
def test_a_failure_is_geosams_one_line(tmp_path, data, qgis):
    done = processing(tmp_path, executable(tmp_path / "env"), algorithm="geosam:segment", parameters={
        "INPUT": str(data / "RGB.byte.tif"), "OUTPUT": str(tmp_path / "o.gpkg"), "TILE_SIZE": 256, "OVERLAP": 255,
        "MODEL": "no_such_model", "WORK_DIR": str(tmp_path / "work"),
    })  # fmt: skip
    assert done["error"] and "\n" not in done["error"] and "Traceback" not in done["error"]
    assert "no_such_model" in done["error"], done


@pytest.mark.qgis
@pytest.mark.slow
def test_segment_scene_loads_styled_objects_in_the_scenes_crs(tmp_path, data, model_installed, qgis):
    scene = crop(data, tmp_path)
    done = processing(tmp_path, executable(tmp_path / "env"), algorithm="geosam:segment", parameters={
        "INPUT": str(scene), "OUTPUT": str(tmp_path / "out" / "objects.gpkg"), "POINTS_PER_SIDE": 8,
        "TILE_SIZE": 512, "WORK_DIR": str(tmp_path / "work"),
    })  # fmt: skip
    assert done["error"] is None, done["messages"]
    assert done["results"]["OUTPUT"] == f"{tmp_path / 'out' / 'objects.gpkg'}|layername=objects"
    assert done["progress"][-1] == 100.0
    assert "--points-per-side 8" in done["messages"][0] and "--tile-size 512" in done["messages"][0]
    [layer] = done["layers"]
    assert_styled_objects(layer, "EPSG:32750")
    assert layer["count"] == len(gpd.read_file(tmp_path / "out" / "objects.gpkg", layer="objects"))


@pytest.mark.qgis
@pytest.mark.slow
def test_segment_at_prompts_in_another_crs(tmp_path, data, model_installed, qgis):
    scene = crop(data, tmp_path)
    with rasterio.open(scene) as src:
        t, crs = src.transform, src.crs
    centre, corner = ((t.c + t.a * (p + 0.5), t.f + t.e * (p + 0.5)) for p in (256, 100))  # pixel centres
    prompts = gpd.GeoDataFrame(
        {"label": [1, 1]}, geometry=[Point(centre), Point(corner).buffer(10).envelope], crs=crs
    ).to_crs(4326)  # any CRS: geosam reprojects
    prompts.to_file(tmp_path / "prompts.geojson")
    done = processing(tmp_path, executable(tmp_path / "env"), algorithm="geosam:prompt", parameters={
        "INPUT": str(scene), "PROMPTS": str(tmp_path / "prompts.geojson"), "OUTPUT": str(tmp_path / "o.gpkg"),
    })  # fmt: skip
    assert done["error"] is None, done["messages"]
    [layer] = done["layers"]
    assert_styled_objects(layer, "EPSG:32750")
    assert layer["count"] == 2


@pytest.mark.qgis
@pytest.mark.slow
def test_classes_from_examples_keeps_the_class_and_writes_its_model(tmp_path, data, model_installed, qgis):
    """Four hand-drawn buildings of pan1.tif (in EPSG:4326, a layer of a GeoPackage) are the examples."""
    labels = gpd.read_file(ROOT / "benchmarks" / "labels" / "pan1_buildings.gpkg", layer="labels")
    labels.iloc[:4][["class", "geometry"]].to_crs(4326).to_file(tmp_path / "ex.gpkg", layer="examples")
    done = processing(tmp_path, executable(tmp_path / "env"), algorithm="geosam:classes", parameters={
        "INPUT": str(data / "pan1.tif"), "EXAMPLES": f"{tmp_path / 'ex.gpkg'}|layername=examples",
        "KEEP": "building", "OUTPUT": str(tmp_path / "b.gpkg"), "WORK_DIR": str(tmp_path / "work"),
    })  # fmt: skip
    assert done["error"] is None, done["messages"]
    assert "--examples" in done["messages"][0] and "--keep building" in done["messages"][0]
    assert done["results"]["CLASS_MODEL"] == str(tmp_path / "b.classes.json")
    assert json.loads((tmp_path / "b.classes.json").read_text())["classes"][0] == "building"
    [layer] = done["layers"]
    assert layer == {**layer, "valid": True, "crs": "EPSG:32631"} and layer["count"] > 0
    assert set(gpd.read_file(tmp_path / "b.gpkg", layer="objects")["class"]) == {"building"}


@pytest.mark.qgis
@pytest.mark.slow
def test_run_pipeline_loads_each_output(tmp_path, data, model_installed, qgis):
    scene = crop(data, tmp_path)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"version: 1\ninputs:\n  - {scene}\nmodel:\n  points_per_side: 8\ntiling:\n  tile_size: 512\n"
        "output:\n  mode: per_scene\n  path: out\n"
    )
    done = processing(tmp_path, executable(tmp_path / "env"), algorithm="geosam:run",
                      parameters={"PIPELINE": str(pipeline)})  # fmt: skip
    assert done["error"] is None, done["messages"]
    assert done["results"]["OUTPUTS"] == [f"{tmp_path / 'out' / 'crop512.gpkg'}|layername=objects"]
    [layer] = done["layers"]
    assert_styled_objects(layer, "EPSG:32750")


def reference_and_prediction(tmp_path: Path) -> tuple[Path, Path]:
    """Three reference squares (EPSG:32631, a class field) and predictions in EPSG:4326: two close
    to a reference, one a quarter over the third (a false positive and a miss)."""
    squares = [box(500000 + x, 5800000, 500020 + x, 5800020) for x in (0, 60, 120)]
    ref = gpd.GeoDataFrame({"kind": ["a", "a", "b"]}, geometry=squares, crs=32631)
    shifted = [*ref.geometry.translate(1, 1)[:2], box(500135, 5800000, 500155, 5800020)]
    pred = gpd.GeoDataFrame({"score": [0.9, 0.8, 0.7]}, geometry=shifted, crs=32631).to_crs(4326)
    area = gpd.GeoDataFrame({"kind": ["a"]}, geometry=[box(499000, 5799000, 501000, 5801000)], crs=32631)
    area.to_file(tmp_path / "ref.gpkg", layer="area")  # the first layer: geosam's default, not the one given
    ref.to_file(tmp_path / "ref.gpkg", layer="buildings")
    pred.to_file(tmp_path / "pred.geojson")
    return tmp_path / "pred.geojson", tmp_path / "ref.gpkg"


@pytest.mark.qgis
def test_evaluate_scores_and_loads_the_outcomes(tmp_path, qgis):
    pred, ref = reference_and_prediction(tmp_path)
    done = processing(tmp_path, executable(tmp_path / "env"), algorithm="geosam:evaluate", parameters={
        "PRED": str(pred), "REF": f"{ref}|layername=buildings", "CLASS_FIELD": "kind",
        "REPORT": str(tmp_path / "report.json"), "OUTCOMES": str(tmp_path / "outcomes.gpkg"),
    })  # fmt: skip
    assert done["error"] is None, done["messages"]
    results = done["results"]
    assert (results["PRECISION"], results["RECALL"]) == pytest.approx((2 / 3, 2 / 3))
    assert json.loads((tmp_path / "report.json").read_text())["class_field"] == "kind"
    [layer] = done["layers"]
    assert layer == {**layer, "valid": True, "crs": "EPSG:32631", "count": 4}
    assert layer["renderer"] != "singleSymbol", "geosam's stored style applied"


@pytest.mark.qgis
def test_evaluate_runs_as_a_step_of_a_model(tmp_path, qgis):
    """The graphical modeler's way: the algorithm a child of a model, its destinations model outputs."""
    pred, ref = reference_and_prediction(tmp_path)
    done = processing(tmp_path, executable(tmp_path / "env"), algorithm="geosam:evaluate", in_model=True,
                      parameters={"PRED": str(pred), "REF": f"{ref}|layername=buildings", "REPORT": str(tmp_path / "r.json"),
                                  "OUTCOMES": str(tmp_path / "outcomes.gpkg")})  # fmt: skip
    assert done["error"] is None
    assert done["results"]["step:OUTCOMES"] == f"{tmp_path / 'outcomes.gpkg'}|layername=outcomes"
    assert json.loads((tmp_path / "r.json").read_text())["overall"]["recall"] == pytest.approx(2 / 3)


@pytest.mark.qgis
@pytest.mark.slow
def test_cancel_keeps_finished_tiles_and_running_again_resumes(tmp_path, qgis, monkeypatch):
    from geosam.testing import make_scene

    scene = make_scene(tmp_path, seed=3, width=700, height=600, max_size=96, objects=80)  # 42 tiles of 128
    parameters = {
        "INPUT": str(scene.path), "OUTPUT": str(tmp_path / "o.gpkg"), "MODEL": str(scene.labels),
        "TILE_SIZE": 128, "OVERLAP": 16, "WORKERS": 1, "WORK_DIR": str(tmp_path / "work"),
    }  # fmt: skip
    geosam = executable(tmp_path / "env", double=True)
    monkeypatch.setenv("GEOSAM_TEST_DELAY", "0.1")  # the reference segmenter takes its time per tile
    cancelled = processing(tmp_path, geosam, algorithm="geosam:segment", parameters=parameters, cancel_at=30)
    kept = len(list((tmp_path / "work").glob("*/*.tile")))
    assert (
        cancelled["error"] == "cancelled: finished tiles are kept; run it again with the same scene to resume"
    )
    assert 5 <= kept < 42 and not (tmp_path / "o.gpkg").exists()
    done = processing(tmp_path, geosam, algorithm="geosam:segment", parameters=parameters)
    assert done["error"] is None, done["messages"]
    report = json.loads((tmp_path / "o.report.json").read_text())  # beside the output, as the CLI puts it
    assert report["tiles_skipped"] >= kept and report["tiles_skipped"] + report["tiles_done"] == 42
    assert done["layers"][0]["count"] > 0


@pytest.mark.qgis
@pytest.mark.slow
def test_qgis_process_runs_the_installed_zip(tmp_path, data, model_installed, qgis):
    """The zip, unpacked where QGIS installs plugins, enabled and run by qgis_process."""
    qgis_process = shutil.which("qgis_process.bin") or shutil.which("qgis_process")  # Debian's wrapper
    if qgis_process is None:  # passes an option qgis_process.bin rejects (--noversioncheck)
        pytest.skip("qgis_process is not installed (apt-get install qgis)")
    subprocess.run([sys.executable, str(PLUGINS / "build.py"), "-o", str(tmp_path / "p.zip")], check=True)
    with zipfile.ZipFile(tmp_path / "p.zip") as archive:
        archive.extractall(tmp_path / "plugins")
    env = {**qgis_env(tmp_path, executable(tmp_path / "env")), "QGIS_PLUGINPATH": str(tmp_path / "plugins"),
           "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile")}  # fmt: skip

    def qgis_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [qgis_process, *args], capture_output=True, text=True, env=env, timeout=600, check=False
        )

    enabled = qgis_run("plugins", "enable", "geosam_qgis")
    if enabled.returncode < 0:  # qgis_process 3.22 now and then dies of a signal while it exits: once more
        enabled = qgis_run("plugins", "enable", "geosam_qgis")
    assert enabled.returncode == 0, enabled.stderr
    scene = crop(data, tmp_path, size=256)
    done = qgis_run("--json", "run", "geosam:segment", "--", f"INPUT={scene}", f"OUTPUT={tmp_path / 'o.gpkg'}",
                    "POINTS_PER_SIDE=8", "KEEP_BACKGROUND=true", f"WORK_DIR={tmp_path / 'work'}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"]["OUTPUT"] == f"{tmp_path / 'o.gpkg'}|layername=objects"
    frame = gpd.read_file(tmp_path / "o.gpkg", layer="objects")
    assert len(frame) > 0 and frame.crs.to_epsg() == 32750
    pred, ref = reference_and_prediction(tmp_path)
    done = qgis_run("--json", "run", "geosam:evaluate", "--", f"PRED={pred}", f"REF={ref}|layername=buildings",
                    f"REPORT={tmp_path / 'r.json'}", f"OUTCOMES={tmp_path / 'outcomes.gpkg'}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"]["RECALL"] == pytest.approx(2 / 3)
