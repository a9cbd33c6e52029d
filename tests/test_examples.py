"""Classes from a few examples through the real command line, with the real MobileSAM weights: learnt on
one scene from hand-checked buildings (benchmarks/labels/pan1_buildings.gpkg), written beside the output,
applied to another scene; and every bad input refused in one line, with nothing left behind.

The scenes are 300 × 300 px crops of pan1.tif and pan3.tif (one tile each) so that a run takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from rasterio.windows import Window

from geosam.classes import BACKGROUND, ClassModel

from .rasters import ORIGIN, UTM, write

ROOT = Path(__file__).parents[1]
LABELS = ROOT / "benchmarks" / "labels" / "pan1_buildings.gpkg"
EXAMPLES = [4, 5, 6]  # label_id of three buildings in the south-east of pan1.tif, inside the crop
FAST = ["--points-per-side", "6", "-w", "0"]


def geosam(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="default")
    return subprocess.run(
        [sys.executable, "-m", "geosam", "segment", *args, *FAST],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def crop(source: Path, path: Path, col: int = 300, row: int = 300, size: int = 300) -> Path:
    """A size × size window of ``source`` as a GeoTIFF of its own (same CRS, its own transform)."""
    with rasterio.open(source) as src:
        window = Window(col, row, size, size)
        transform = src.transform @ Affine.translation(col, row)
        profile = dict(src.profile, width=size, height=size, transform=transform)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return path


def objects(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer="objects")


@pytest.fixture(scope="module")
def learnt(tmp_path_factory, data, model_installed) -> SimpleNamespace:
    """A run with --examples on a crop of pan1.tif: three of its labelled buildings."""
    folder = tmp_path_factory.mktemp("learnt")
    scene = crop(data / "pan1.tif", folder / "pan1_crop.tif")
    labels = gpd.read_file(LABELS, layer="labels")
    examples = labels[labels["label_id"].isin(EXAMPLES)][["class", "geometry"]]
    examples.to_file(folder / "buildings.gpkg")
    done = geosam(str(scene), "--examples", "buildings.gpkg", "-o", "out.gpkg", cwd=folder)
    assert done.returncode == 0, done.stderr
    return SimpleNamespace(folder=folder, scene=scene, done=done, out=folder / "out.gpkg",
                           model=folder / "out.classes.json", report=folder / "out.report.json")  # fmt: skip


def test_examples_give_every_object_a_class_and_its_source(learnt):
    frame = objects(learnt.out)
    assert {"class", "class_score", "source"} <= set(frame.columns)
    assert set(frame["class"]) == {"building", BACKGROUND}
    assert frame["class_score"].between(0.5, 1).all()  # the most probable of two classes
    assert set(frame["source"]) <= {"grid", "proposal", "prompt"} and "proposal" in set(frame["source"])
    # the examples themselves come out as buildings (all three today; two leave room for tuning)
    labels = gpd.read_file(LABELS, layer="labels")
    buildings = frame[frame["class"] == "building"]
    found = [
        (buildings.intersection(example).area / buildings.union(example).area).max() > 0.5
        for example in labels[labels["label_id"].isin(EXAMPLES)].geometry
    ]
    assert sum(found) >= 2, "the examples are found again, as buildings"


def test_the_report_counts_objects_per_class_and_per_source(learnt):
    frame = objects(learnt.out)
    report = json.loads(learnt.report.read_text())
    assert report["classes"] == frame["class"].value_counts().to_dict()
    assert report["sources"] == frame["source"].value_counts().to_dict()
    assert report["class_model"] == "out.classes.json" and report["objects"] == len(frame)  # as -o names it
    summary = [line for line in learnt.done.stderr.splitlines() if line.startswith("classes: ")]
    assert len(summary) == 1
    for name, n in report["classes"].items():
        assert f"{n} {name}" in summary[0]
    for source, n in report["sources"].items():
        assert f"{n} {source}" in summary[0].split("found by:")[1]


def test_the_class_model_is_written_beside_the_output(learnt):
    assert sorted(p.name for p in learnt.folder.iterdir()) == [
        "buildings.gpkg", "out.classes.json", "out.gpkg", "out.report.json", "pan1_crop.tif",
    ], "no work folder or temporary files left"  # fmt: skip
    assert learnt.done.stderr.strip().endswith(f"objects written to out.gpkg, {learnt.model.name}")
    model = ClassModel.load(learnt.model)
    assert model.classes == ("building", BACKGROUND) and model.found == ("building",)
    assert model.examples["building"] == len(EXAMPLES) and model.examples[BACKGROUND] >= 1
    assert model.encoder.startswith("mobile_sam sha256:6dbb90523a35")
    labels = gpd.read_file(LABELS, layer="labels")
    areas = labels[labels["label_id"].isin(EXAMPLES)].area  # m² (EPSG:32631)
    assert model.sizes is not None and np.allclose(model.sizes[0], [areas.min(), areas.max()], rtol=0.1)


def test_learning_shows_its_progress_before_the_tiles(learnt, tmp_path):
    """``--progress json``: a ``learning`` event as each example's tile is segmented, then the run's tiles."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["--examples", str(learnt.folder / "buildings.gpkg"), "--tile-size", "256", "--overlap", "32"]
    done = subprocess.run(
        [sys.executable, "-m", "geosam", "--progress", "json", "segment", str(learnt.scene), *args, *FAST,
         "-o", "progress.gpkg"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    seen = [(e["what"], e["done"], e["total"]) for e in events]
    learning = [e for e in seen if e[0] == "learning"]
    tiles = len(learning)  # the examples' tiles: the three buildings lie in more than one of the 4
    assert 2 <= tiles <= len(EXAMPLES)
    assert seen == [
        *(("learning", i, tiles) for i in range(1, tiles + 1)),
        *(("segment", i, 4) for i in range(1, 5)),
    ]


def test_keep_writes_only_the_kept_class_the_same_objects_as_learning(learnt, tmp_path):
    """The saved class model on its own scene gives what learning gave: the file loses nothing."""
    done = geosam(str(learnt.scene), "--class-model", str(learnt.model), "--keep", "building",
                  "-o", "kept.gpkg", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    kept, all_ = objects(tmp_path / "kept.gpkg"), objects(learnt.out)
    buildings = all_[all_["class"] == "building"].reset_index(drop=True)
    assert len(kept) == len(buildings) > 0 and set(kept["class"]) == {"building"}
    assert kept.geometry.geom_equals_exact(buildings.geometry, 1e-6).all()
    assert np.allclose(kept["class_score"], buildings["class_score"])
    report = json.loads((tmp_path / "kept.report.json").read_text())
    assert report["classes"] == {"building": len(kept)} and report["class_model"] == str(learnt.model)
    assert not (tmp_path / "kept.classes.json").exists(), "a class model given is not written again"


def test_a_min_class_score_of_zero_puts_every_object_in_the_class(learnt, tmp_path):
    done = geosam(str(learnt.scene), "--class-model", str(learnt.model), "--keep", "building",
                  "--min-class-score", "0", "-o", "all.gpkg", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    every, learnt_ = objects(tmp_path / "all.gpkg"), objects(learnt.out)
    assert (learnt_["class"] == BACKGROUND).any() and len(every) == len(learnt_)
    building = np.where(learnt_["class"] == "building", learnt_["class_score"], 1 - learnt_["class_score"])
    assert set(every["class"]) == {"building"} and np.allclose(every["class_score"], building)


def test_a_class_model_applies_to_another_scene(learnt, tmp_path, data):
    scene = crop(data / "pan3.tif", tmp_path / "pan3_crop.tif")
    done = geosam(str(scene), "--class-model", str(learnt.model), "-o", "pan3.gpkg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frame = objects(tmp_path / "pan3.gpkg")
    assert len(frame) > 0 and frame["class"].isin(ClassModel.load(learnt.model).classes).all()
    assert frame["class_score"].notna().all() and frame["source"].notna().all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pan3.gpkg", "pan3.report.json", "pan3_crop.tif"]


# bad inputs: (case, scene, arguments, message); files are made by `bad_files`
BAD = [
    ("examples without the class field", "pan1", ["--examples", "no_field.gpkg"],
     "no_field.gpkg have no field 'class' (fields: kind): give --class-field"),
    ("a class field that is not there", "pan1", ["--examples", "buildings.gpkg", "--class-field", "kind"],
     "have no field 'kind'"),
    ("examples outside the scene", "pan1", ["--examples", "far.gpkg"],
     "far.gpkg: 3 of 3 examples lie outside the scene"),
    ("examples of one class and nothing else", "flat", ["--examples", "one.gpkg"],
     "examples of one class (building) and nothing else to tell it from"),
    ("examples all background", "pan1", ["--examples", "background.gpkg"],
     "every example is of class 'background'"),
    ("a class model that is not JSON", "pan1", ["--class-model", "corrupt.json"],
     "corrupt.json is not a class model (not JSON)"),
    ("a class model that is another JSON", "pan1", ["--class-model", "other.json"],
     "other.json is not a geosam class model"),
    ("a class model of another encoder", "pan1", ["--class-model", "vit_h.json"],
     "the class model was learnt with the encoder sam_vit_h"),
    ("keep a class the model does not have", "pan1", ["--class-model", "model.json", "--keep", "tank"],
     "--keep tank: not a class of the class model (building, background)"),
    ("keep without classes", "pan1", ["--keep", "building"], "--keep building: classes come from --examples"),
    ("examples and a class model", "pan1", ["--examples", "buildings.gpkg", "--class-model", "model.json"],
     "give examples or a class model, not both"),
    ("a layer the examples' file lacks", "pan1", ["--examples", "buildings.gpkg|layername=roofs"],
     "buildings.gpkg has no layer 'roofs' with geometries: name one of buildings"),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, learnt) -> Path:
    """Every file the bad inputs name, in one folder."""
    folder = tmp_path_factory.mktemp("bad")
    crop(learnt.scene, folder / "pan1.tif", 0, 0, 300)
    # a featureless scene: nothing but the example to tell it from
    write(folder / "flat.tif", np.full((1, 256, 256), 120, "uint8"), nodata=0)
    box = shapely.affinity.affine_transform(shapely.box(100, 100, 140, 140), ORIGIN.to_shapely())
    gpd.GeoDataFrame({"class": ["building"]}, geometry=[box], crs=UTM).to_file(folder / "one.gpkg")
    buildings = gpd.read_file(learnt.folder / "buildings.gpkg")
    buildings.to_file(folder / "buildings.gpkg")
    buildings.rename(columns={"class": "kind"}).to_file(folder / "no_field.gpkg")
    buildings.assign(**{"class": BACKGROUND}).to_file(folder / "background.gpkg")
    buildings.translate(2000, 0).to_frame("geometry").assign(**{"class": "building"}).to_file(
        folder / "far.gpkg"
    )
    model = json.loads(learnt.model.read_text())
    (folder / "model.json").write_text(json.dumps(model))
    (folder / "vit_h.json").write_text(json.dumps(dict(model, encoder="sam_vit_h sha256:0123456789abcdef")))
    (folder / "corrupt.json").write_text(json.dumps(model)[:200])
    (folder / "other.json").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    return folder


@pytest.mark.parametrize(("case", "scene", "args", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_examples_and_class_models_fail_in_one_line(bad_files, tmp_path, case, scene, args, message):
    for path in bad_files.iterdir():
        (tmp_path / path.name).symlink_to(path)
    before = set(tmp_path.rglob("*"))
    done = geosam(f"{scene}.tif", *args, "-o", "out.gpkg", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = [line.rsplit("\r", 1)[-1].strip() for line in done.stderr.split("\n")]
    lines = [line for line in lines if line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert message in lines[0] and "Traceback" not in done.stderr
    assert set(tmp_path.rglob("*")) == before, "no output, class model, report or work folder left"


def test_point_examples_in_python_give_the_class_model_in_attrs(learnt):
    """A click on each building (GeoDataFrame of points, in another CRS) is enough; the class model is
    the frame's."""
    import geosam
    from geosam.models import AutomaticParams, ModelSpec

    labels = gpd.read_file(LABELS, layer="labels")
    picked = labels[labels["label_id"].isin(EXAMPLES)]
    clicks = gpd.GeoDataFrame(
        {"kind": ["house"] * len(picked)},
        geometry=picked.geometry.representative_point().values,
        crs=labels.crs,
    ).to_crs("EPSG:4326")
    model = ModelSpec("mobile_sam", params=AutomaticParams(points_per_side=6))
    frame = geosam.segment(learnt.scene, model=model, examples=clicks, class_field="kind", workers=0)
    classes = frame.attrs["class_model"]
    assert isinstance(classes, ClassModel) and classes.classes == ("house", BACKGROUND)
    assert classes.examples["house"] == len(EXAMPLES)
    assert set(frame["class"]) <= {"house", BACKGROUND} and "house" in set(frame["class"])
    assert frame.attrs["report"]["classes"] == frame["class"].value_counts().to_dict()


def test_a_pipeline_file_learns_from_examples_with_progress(learnt, tmp_path):
    """The classes section's examples, learnt on the scene, with a ``NAME: learning`` bar before its tiles."""
    (tmp_path / "job.yaml").write_text(
        f"version: 1\ninputs: [{learnt.scene}]\nmodel: {{points_per_side: 6}}\n"
        f"classes: {{examples: {learnt.folder / 'buildings.gpkg'}, keep: [building]}}\n"
        "output: {mode: per_scene, path: out}\ncluster: {workers: 0}\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="default")
    done = subprocess.run(
        [sys.executable, "-m", "geosam", "--progress", "json", "run", "job.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [(e.get("what"), e.get("done"), e.get("total")) for e in events if e["event"] == "tiles"] == [
        ("pan1_crop: learning", 1, 1), ("pan1_crop", 1, 1),
    ]  # fmt: skip
    assert len(objects(tmp_path / "out" / "pan1_crop.gpkg")) > 0


def test_a_pipeline_file_applies_its_class_model_to_every_scene(learnt, tmp_path, data):
    """The classes section, its class model relative to the file, over two scenes."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "buildings.classes.json").write_bytes(learnt.model.read_bytes())
    crop(data / "pan3.tif", tmp_path / "pan3_crop.tif")
    (tmp_path / "job.yaml").write_text(
        f"version: 1\ninputs: [{learnt.scene}, pan3_crop.tif]\n"
        "model: {points_per_side: 6}\n"
        "classes: {class_model: models/buildings.classes.json, keep: [building], find_all: true}\n"
        "output: {mode: per_scene, path: out}\ncluster: {workers: 0}\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="default")
    done = subprocess.run(
        [sys.executable, "-m", "geosam", "run", "job.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    buildings = objects(tmp_path / "out" / "pan1_crop.gpkg")
    assert len(buildings) > 0 and set(buildings["class"]) == {"building"}
    assert set(objects(tmp_path / "out" / "pan3_crop.gpkg")["class"]) <= {"building"}
    # the same class model and settings as the --keep run on the command line: the same buildings
    all_ = objects(learnt.out)
    assert len(buildings) == (all_["class"] == "building").sum()


def test_examples_are_read_in_the_scene_crs_and_checked(learnt, tmp_path):
    from geosam.errors import InputError
    from geosam.examples import read_examples
    from geosam.georef import open_scene

    scene = open_scene(learnt.scene)
    examples = gpd.read_file(learnt.folder / "buildings.gpkg")
    read = read_examples(examples.to_crs("EPSG:4326"), scene, "class")
    assert list(read["class"]) == ["building"] * len(EXAMPLES)
    two = tmp_path / "two.gpkg"  # the examples second, after a layer of another class
    examples.assign(**{"class": "tank"}).iloc[:1].to_file(two, layer="tanks")
    examples.to_file(two, layer="buildings")
    named = read_examples(f"{two}|layername=buildings", scene, "class")
    assert list(named["class"]) == ["building"] * len(EXAMPLES)
    assert list(read_examples(two, scene, "class")["class"]) == ["tank"], "without a name: the first layer"
    assert read.crs is None and shapely.box(0, 0, scene.width, scene.height).contains(read.union_all())
    bad = {
        "lines": (examples.assign(geometry=examples.boundary), "LineString geometries; give points or polygons"),
        "no class": (examples.assign(**{"class": [None, "building", "building"]}), "1 examples without a class"),
        "no CRS": (examples.set_crs(None, allow_override=True), "must both have a CRS, or neither"),
    }  # fmt: skip
    for name, (frame, message) in bad.items():
        with pytest.raises(InputError, match=message) as caught:
            read_examples(frame, scene, "class")
        assert "\n" not in str(caught.value), name
