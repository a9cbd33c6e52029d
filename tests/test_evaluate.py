"""geosam.evaluate and `geosam evaluate`: hand-made polygons with known answers, and agreement with an
independent SpaceNet-style computation (brute-force IoU matrix, predictions matched in file order)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from scipy.optimize import linear_sum_assignment

import geosam
from geosam import settings, style
from geosam.cli import main
from geosam.errors import InputError

ROOT = Path(__file__).parents[1]
UTM = "EPSG:32633"
X0, Y0 = 500_000.0, 5_000_000.0  # a place in UTM zone 33N (15°E, 45°N)


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def frame(geometries, crs=UTM, **columns) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=list(geometries), crs=crs)


# Known answers. References: R1, R2 (100 m²), R3 (30 m²), R4 (2000 m²). Predictions: P1 is R1 moved
# 1 m (IoU 90/110), P2 half of R2 (IoU exactly 0.5), P3 overlaps R3 by a third (IoU 15/45), P4 is R4,
# P5 is a small false positive inside R4. Both files span the same box, so nothing is clipped.
REFS = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 46, 5), box(0, 20, 50, 60)]
PREDS = [box(0, 1, 10, 11), box(20, 0, 30, 5), box(43, 0, 49, 5), box(0, 20, 50, 60), box(30, 40, 35, 45)]
IOU_P1 = 90 / 110


def scores(s: geosam.evaluation.Scores) -> tuple:
    return (s.references, s.predictions, s.true_positives, s.false_positives, s.false_negatives)


def test_known_answer_overall_and_by_size():
    result = geosam.evaluate(frame(PREDS), frame(REFS))
    assert scores(result.overall) == (4, 5, 3, 2, 1)
    assert result.overall.precision == pytest.approx(3 / 5)
    assert result.overall.recall == pytest.approx(3 / 4)
    assert result.overall.f1 == pytest.approx(2 * 3 / (5 + 4))
    assert result.overall.mean_iou == pytest.approx((IOU_P1 + 0.5 + 1) / 3)
    assert list(result.by_size) == ["<100", "100-1000", ">=1000"]
    small, medium, large = result.by_size.values()
    assert scores(small) == (1, 2, 0, 2, 1) and (small.precision, small.recall, small.f1) == (0, 0, 0)
    assert scores(medium) == (2, 2, 2, 0, 0) and medium.mean_iou == pytest.approx((IOU_P1 + 0.5) / 2)
    assert scores(large) == (1, 1, 1, 0, 0) and large.f1 == 1
    assert result.crs == UTM and result.by_class == {}
    assert result.region == pytest.approx((X0, Y0, X0 + 50, Y0 + 60))


def test_outcomes_name_every_object_with_its_iou():
    out = geosam.evaluate(frame(PREDS), frame(REFS)).outcomes
    assert out.crs == UTM
    ids = [
        tuple(None if pd.isna(v) else int(v) for v in pair)
        for pair in zip(out["pred_id"], out["ref_id"], strict=True)
    ]
    assert list(zip(out["outcome"], ids, strict=True)) == [
        ("true_positive", (0, 0)), ("true_positive", (1, 1)), ("true_positive", (3, 3)),
        ("false_positive", (2, None)), ("false_positive", (4, None)), ("miss", (None, 2)),
    ]  # fmt: skip
    assert list(out["iou"]) == pytest.approx([IOU_P1, 0.5, 1, 15 / 45, 25 / 2000, 15 / 45])
    assert list(out["area_m2"]) == pytest.approx([100, 50, 2000, 30, 25, 30])
    assert list(out["size_bin"]) == ["100-1000", "100-1000", ">=1000", "<100", "<100", "<100"]
    assert out.geometry.iloc[0].equals(PREDS[0]), "a true positive is drawn as the prediction"
    assert out.geometry.iloc[-1].equals(REFS[2]), "a miss as the reference"


def test_threshold_is_inclusive():
    assert geosam.evaluate(frame(PREDS), frame(REFS), iou=0.5).overall.true_positives == 3
    assert geosam.evaluate(frame(PREDS), frame(REFS), iou=0.51).overall.true_positives == 2
    assert geosam.evaluate(frame(PREDS), frame(REFS), iou=0.3).overall.true_positives == 4


def spacenet(preds, refs, threshold: float) -> tuple[int, int, int]:
    """SpaceNet's scorer: each prediction in file order to the unmatched reference of highest IoU."""
    iou = np.array([[p.intersection(r).area / p.union(r).area for r in refs] for p in preds]).reshape(
        len(preds), len(refs)
    )
    free = np.ones(len(refs), bool)
    tp = 0
    for row in iou:
        if free.any() and row[free].max() >= threshold:
            free[np.flatnonzero(free)[row[free].argmax()]] = False
            tp += 1
    return tp, len(preds) - tp, len(refs) - tp


def test_ambiguous_pair_is_matched_by_descending_iou_whatever_the_order():
    # P1 overlaps A (IoU 60/170) and B (70/160); P2 is nearly B (90/100). At 0.3 P1 has two candidates.
    refs = [box(0, 0, 10, 10), box(10, 0, 20, 10)]
    preds = [box(4, 0, 17, 10), box(10, 0, 19, 10)]
    everywhere = frame([box(-1, -1, 21, 11)])  # an AOI: the references reach beyond the predictions' box
    for order in ([0, 1], [1, 0]):
        result = geosam.evaluate(frame([preds[i] for i in order]), frame(refs), iou=0.3, aoi=everywhere)
        out = result.outcomes
        pairs = {(order[p], r) for p, r in zip(out["pred_id"], out["ref_id"], strict=True)}
        assert pairs == {(0, 0), (1, 1)} and scores(result.overall) == (2, 2, 2, 0, 0)
        assert result.overall.mean_iou == pytest.approx((60 / 170 + 0.9) / 2)
    alone = geosam.evaluate(frame(preds[:1]), frame(refs), iou=0.3, aoi=everywhere).outcomes
    assert alone.set_index("outcome").loc["true_positive", "ref_id"] == 1, "P1 alone: its closer match, B"
    # SpaceNet's file-order greedy gives P1 to B when P1 comes first, and then misses A
    assert spacenet(preds, refs, 0.3) == (1, 1, 1)
    assert spacenet(preds[::-1], refs, 0.3) == (2, 0, 0)


def random_scene(seed: int) -> tuple[list, list]:
    """References on a grid (disjoint), predictions: moved copies (some twice), and stray boxes; no IoU
    within 0.02 of 0.5, so that no rounding decides a match."""
    rng = np.random.default_rng(seed)
    refs, preds = [], []
    for i in range(8):
        for j in range(8):
            w, h = rng.uniform(3, 25, 2)
            ref = box(40 + i * 40, 40 + j * 40, 40 + i * 40 + w, 40 + j * 40 + h)
            refs.append(ref)
            for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, or found twice (a duplicate)
                while True:
                    dx, dy = rng.normal(0, 0.25, 2) * (w, h)
                    pred = shapely.affinity.scale(
                        shapely.affinity.translate(ref, dx, dy), *rng.uniform(0.7, 1.3, 2)
                    )
                    if abs(pred.intersection(ref).area / pred.union(ref).area - 0.5) > 0.02:
                        break
                preds.append(pred)
    for x, y, w in rng.uniform((40, 40, 2), (340, 340, 20), (20, 3)):
        preds.append(box(x, y, x + w, y + w / 2))
    refs += [box(0, 0, 1, 1), box(400, 400, 401, 401)]  # corners found exactly: both files span one box,
    preds += [box(0, 0, 1, 1), box(400, 400, 401, 401)]  # and every other object lies well inside it
    order = rng.permutation(len(preds))
    return [preds[k] for k in order], refs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cli_equals_an_independent_spacenet_computation_on_the_same_files(tmp_path, seed):
    preds, refs = random_scene(seed)
    frame(preds).to_crs("EPSG:4326").to_file(tmp_path / "pred.geojson", engine="pyogrio")  # another CRS
    frame(refs).to_file(tmp_path / "ref.gpkg", engine="pyogrio")
    done = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pred.geojson"), str(tmp_path / "ref.gpkg"),
                                     "-o", str(tmp_path / "report.json")])  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "report.json").read_text())["overall"]

    # the oracle reads the same files, reprojects the predictions and scores them its own way
    ref = gpd.read_file(tmp_path / "ref.gpkg")
    pred = gpd.read_file(tmp_path / "pred.geojson").to_crs(ref.crs)
    tp, fp, fn = spacenet(list(pred.geometry), list(ref.geometry), 0.5)
    assert (report["true_positives"], report["false_positives"], report["false_negatives"]) == (tp, fp, fn)
    assert report["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert (report["precision"], report["recall"]) == pytest.approx((tp / (tp + fp), tp / (tp + fn)))
    assert fp > 20 and fn > 5 and tp > 20, "the scene has every kind of outcome"
    # mean IoU: the matching of highest total IoU (Hungarian) pairs the same objects here
    iou = np.array([[p.intersection(r).area / p.union(r).area for r in ref.geometry] for p in pred.geometry])
    weight = np.where(iou >= 0.5, iou, 0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    matched = weight[rows, cols][weight[rows, cols] > 0]
    assert len(matched) == tp and report["mean_iou"] == pytest.approx(matched.mean())


def test_prediction_in_another_crs_scores_the_same():
    # 0.45: P2's IoU of exactly 0.5 comes back from a reprojection a hair above or below
    same = geosam.evaluate(frame(PREDS), frame(REFS), iou=0.45)
    other = geosam.evaluate(frame(PREDS).to_crs("EPSG:3035"), frame(REFS), iou=0.45)
    assert scores(other.overall) == scores(same.overall)
    # PROJ moves these points 0.5 mm there and back
    assert other.overall.mean_iou == pytest.approx(same.overall.mean_iou, rel=1e-4)


def test_geographic_reference_is_measured_in_its_utm_zone():
    preds, refs = frame(PREDS).to_crs("EPSG:4326"), frame(REFS).to_crs("EPSG:4326")
    # bins away from 100 m², as 0.45 is away from 0.5
    result = geosam.evaluate(preds, refs, iou=0.45, size_bins=(50, 1000))
    assert result.crs == "EPSG:32633" and result.outcomes.crs == "EPSG:4326"
    assert [scores(s) for s in result.by_size.values()] == [(1, 2, 0, 2, 1), (2, 2, 2, 0, 0), (1, 1, 1, 0, 0)]
    assert sorted(result.outcomes["area_m2"]) == pytest.approx([25, 30, 30, 50, 100, 2000], rel=1e-6)


def test_aoi_restricts_and_clips(tmp_path):
    # the west half, x < 25 m: R1 (found by P1), R2 cut to 20..25 (found by P2, cut alike), R4 and P4 cut
    # to 0..25; R3, P3 and P5 lie outside
    aoi = frame([box(-5, -5, 25, 70)]).to_crs("EPSG:4326")
    aoi.to_file(tmp_path / "aoi.gpkg", engine="pyogrio")
    result = geosam.evaluate(frame(PREDS), frame(REFS), aoi=tmp_path / "aoi.gpkg")
    assert scores(result.overall) == (3, 3, 3, 0, 0)
    assert result.overall.mean_iou == pytest.approx((IOU_P1 + 25 / 50 + 1) / 3)
    assert result.aoi == str(tmp_path / "aoi.gpkg")
    assert shapely.box(*result.outcomes.total_bounds).bounds[2] == pytest.approx(X0 + 25)


def test_common_extent_clips_what_only_one_file_covers():
    # a prediction beyond the references' extent is not a false positive: nobody mapped there
    result = geosam.evaluate(frame([*PREDS, box(200, 200, 210, 210)]), frame(REFS))
    assert scores(result.overall) == (4, 5, 3, 2, 1)


def test_class_field_in_both_files_matches_within_classes():
    refs = frame(REFS, kind=["house", "house", "shed", "hall"])
    preds = frame(PREDS, kind=["house", "shed", "shed", "hall", "hall"])  # P2 found R2 as the wrong class
    result = geosam.evaluate(preds, refs, class_field="kind")
    assert scores(result.overall) == (4, 5, 2, 3, 2)
    assert {k: scores(v) for k, v in result.by_class.items()} == {
        "hall": (1, 2, 1, 1, 0), "house": (2, 1, 1, 0, 1), "shed": (1, 2, 0, 2, 1)
    }  # fmt: skip
    out = result.outcomes.set_index("pred_id")
    assert out.loc[1, "outcome"] == "false_positive" and out.loc[1, "iou"] == pytest.approx(0.5)
    assert out.loc[1, "class"] == "shed"


def test_class_field_in_the_reference_only_gives_recall_per_class():
    refs = frame(REFS, kind=["house", "house", "shed", None])
    result = geosam.evaluate(frame(PREDS), refs, class_field="kind")
    assert scores(result.overall) == (4, 5, 3, 2, 1), "matching ignores the classes"
    house, none, shed = (result.by_class[k] for k in ("house", "(none)", "shed"))
    assert (house.recall, none.recall, shed.recall) == (1, 1, 0)
    assert (house.predictions, house.precision, house.f1) == (None, None, None)
    assert "  -" in result.summary().splitlines()[-1]


def test_empty_prediction_scores_zero_recall_and_no_precision(tmp_path):
    result = geosam.evaluate(frame([]), frame(REFS))
    s = result.overall
    assert scores(s) == (4, 0, 0, 0, 4) and (s.precision, s.recall, s.f1, s.mean_iou) == (None, 0, 0, None)
    assert set(result.outcomes["outcome"]) == {"miss"}
    result.write_report(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["overall"]["precision"] is None
    nothing = geosam.evaluate(frame([]), frame([]))
    assert scores(nothing.overall) == (0, 0, 0, 0, 0) and nothing.overall.f1 is None
    nothing.write_outcomes(tmp_path / "o.gpkg")
    assert len(gpd.read_file(tmp_path / "o.gpkg", layer="outcomes")) == 0


def test_invalid_and_missing_geometries(tmp_path):
    bowtie = shapely.Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)])  # self-crossing
    spiked = shapely.Polygon(
        [
            (X0, Y0 + 20),
            (X0 + 50, Y0 + 20),
            (X0 + 50, Y0 + 60),
            (X0 + 25, Y0 + 60),
            (X0 + 25, Y0 + 70),
            (X0 + 25, Y0 + 60),
            (X0, Y0 + 60),
        ]
    )  # R4 with a spike: a line
    preds = frame([bowtie, None, PREDS[1], PREDS[2], spiked, PREDS[4]])
    result = geosam.evaluate(preds, frame(REFS), aoi=frame([box(-1, -1, 51, 71)]))  # the spike is not clipped
    assert result.overall.predictions == 5, "the feature without a geometry is left out"
    assert result.outcomes.is_valid.all()
    tp = result.outcomes.set_index("pred_id").loc[0]
    assert tp["outcome"] == "true_positive" and tp["iou"] == pytest.approx(0.5), "the bow-tie's two triangles"
    assert result.outcomes.set_index("pred_id").loc[4, "iou"] == pytest.approx(1), "the spike is dropped"
    assert result.outcomes.geom_type.isin(["Polygon", "MultiPolygon"]).all()


def test_api_checks_its_arguments():
    with pytest.raises(InputError, match="IoU threshold 0 is out of range"):
        geosam.evaluate(frame(PREDS), frame(REFS), iou=0)
    with pytest.raises(InputError, match="size bins 100,10: give ascending areas"):
        geosam.evaluate(frame(PREDS), frame(REFS), size_bins=(100, 10))
    with pytest.raises(InputError, match="references has no field 'kind'"):
        geosam.evaluate(frame(PREDS), frame(REFS), class_field="kind")
    with pytest.raises(InputError, match="predictions: LineString geometries cannot be scored"):
        geosam.evaluate(frame([shapely.LineString([(0, 0), (1, 1)])]), frame(REFS))
    with pytest.raises(InputError, match="predictions has no CRS"):
        geosam.evaluate(frame(PREDS, crs=None), frame(REFS))
    with pytest.raises(InputError, match="no object lies where predictions and references overlap"):
        geosam.evaluate(frame([box(500, 500, 510, 510)]), frame(REFS))


def write_pair(folder: Path) -> tuple[str, str]:
    frame(PREDS).to_file(folder / "pred.gpkg", engine="pyogrio")
    frame(REFS).to_file(folder / "ref.shp", engine="pyogrio")
    return str(folder / "pred.gpkg"), str(folder / "ref.shp")


def test_geosam_outputs_and_geoparquet_are_inputs(tmp_path):
    geosam.write(frame(PREDS).assign(score=0.9), tmp_path / "objects.gpkg")  # with QGIS's layer_styles table
    frame(REFS).to_parquet(tmp_path / "ref.parquet")
    result = geosam.evaluate(tmp_path / "objects.gpkg", tmp_path / "ref.parquet")
    assert scores(result.overall) == (4, 5, 3, 2, 1)
    assert result.prediction == str(tmp_path / "objects.gpkg")
    assert set(result.outcomes["pred_id"].dropna()) == {1, 2, 3, 4, 5}, "GeoPackage FIDs"


def test_a_file_of_several_layers_is_read_by_its_first_and_says_so(tmp_path, caplog):
    """A reference with an AOI layer after its labels (as benchmarks/labels/ has): the labels are read,
    and a warning names the layers, so that an AOI put first is not taken for the references unseen."""
    path = tmp_path / "labels.gpkg"
    frame(REFS).to_file(path, layer="labels")
    frame([box(-5, -5, 60, 70)]).to_file(path, layer="aoi")
    with caplog.at_level("WARNING", logger="geosam.evaluation"):
        result = geosam.evaluate(frame(PREDS), path)
    assert scores(result.overall) == (4, 5, 3, 2, 1)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} has 2 layers with geometries (labels, aoi): reading the first, labels; to read another, "
        "give 'FILE|layername=LAYER'"
    ]


def test_a_layer_of_a_file_is_named_as_qgis_names_a_layer(tmp_path, caplog):
    """``FILE|layername=NAME`` reads that layer, here the second of the file, and warns of nothing."""
    path = tmp_path / "labels.gpkg"
    frame([box(-5, -5, 60, 70)]).to_file(path, layer="aoi")
    frame(REFS).to_file(path, layer="labels")
    with caplog.at_level("WARNING", logger="geosam.evaluation"):
        result = geosam.evaluate(frame(PREDS), f"{path}|layername=labels")
    assert scores(result.overall) == (4, 5, 3, 2, 1) and caplog.records == []
    assert len(geosam.evaluate(frame(PREDS), path).outcomes) < len(result.outcomes), "the first: the AOI"


def test_cli_writes_the_report_and_a_styled_geopackage(tmp_path):
    pred, ref = write_pair(tmp_path)
    done = CliRunner().invoke(main, ["evaluate", pred, ref, "-o", str(tmp_path / "eval.json")])
    assert done.exit_code == 0, done.output
    table = done.stdout.splitlines()
    assert table[0].split() == ["refs", "preds", "TP", "FP", "FN", "precision", "recall", "F1", "mean", "IoU"]
    assert table[1].split()[:6] == ["all", "4", "5", "3", "2", "1"] and "size <100 m²" in table[2]
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["overall"]["f1"] == pytest.approx(2 / 3) and report["iou_threshold"] == 0.5
    assert report["prediction"] == pred and report["size_bins_m2"] == [100, 1000]

    gpkg = tmp_path / "eval.gpkg"
    out = gpd.read_file(gpkg, layer="outcomes")
    assert list(out.columns) == ["outcome", "pred_id", "ref_id", "iou", "area_m2", "size_bin", "geometry"]
    assert sorted(out["outcome"]) == ["false_positive"] * 2 + ["miss"] + ["true_positive"] * 3
    assert (out.geom_type == "MultiPolygon").all() and out.crs == UTM
    with sqlite3.connect(gpkg) as db:
        [(table_name, qml, default)] = db.execute(
            "SELECT f_table_name, styleQML, useAsDefault FROM layer_styles"
        ).fetchall()
    renderer = ET.fromstring(qml).find("renderer-v2")
    assert (table_name, default, renderer.get("type"), renderer.get("attr")) == (
        "outcomes", 1, "categorizedSymbol", "outcome"
    )  # fmt: skip
    assert [c.get("value") for c in renderer.iter("category")] == [v for v, _, _ in style.OUTCOMES]
    if shutil.which("ogrinfo"):  # GDAL 3.6, as QGIS 3.22 LTR reads it
        info = subprocess.run(
            ["ogrinfo", "-so", str(gpkg), "outcomes"], capture_output=True, text=True, check=False
        )
        assert info.returncode == 0 and "Warning" not in info.stdout + info.stderr, info.stderr
        assert "Feature Count: 6" in info.stdout and "GEOSAM_EVALUATION=" in info.stdout


def test_cli_refuses_to_overwrite_and_writes_nothing_then(tmp_path):
    pred, ref = write_pair(tmp_path)
    (tmp_path / "eval.gpkg").write_bytes(b"keep")
    args = ["evaluate", pred, ref, "-o", str(tmp_path / "eval.json")]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 1 and "eval.gpkg exists: pass --overwrite" in done.output
    assert not (tmp_path / "eval.json").exists() and (tmp_path / "eval.gpkg").read_bytes() == b"keep"
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
    assert len(gpd.read_file(tmp_path / "eval.gpkg", layer="outcomes")) == 6


def geosam_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "geosam", "evaluate", *args], env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


def test_cli_bad_input_is_one_line_with_its_exit_code(tmp_path):
    pred, ref = write_pair(tmp_path)
    frame([shapely.Point(X0, Y0)]).to_file(tmp_path / "points.geojson", engine="pyogrio")
    (tmp_path / "notes.gpkg").write_text("not a GeoPackage\n")
    frame(REFS).to_parquet(tmp_path / "ref.parquet")
    cases = [
        ([str(tmp_path / "nope.gpkg"), ref], 1, f"{tmp_path / 'nope.gpkg'}: no such file; check the path"),
        ([str(tmp_path / "points.geojson"), ref], 1, "Point geometries cannot be scored; give polygons"),
        ([str(tmp_path / "notes.gpkg"), ref], 1, "not a readable vector file"),
        ([pred, ref, "--class-field", "kind"], 1, "has no field 'kind' (--class-field)"),
        ([pred, ref, "-o", str(tmp_path / "r.txt")], 1, "unsupported output format; use one of .json"),
        ([pred, ref, "--iou", "0"], 2, "0<x<=1"),
        ([pred, ref, "--size-bins", "1000,100"], 2, "size bins 1000,100: give ascending areas"),
        ([pred, ref, "--size-bins", "small"], 2, "give areas in m² separated by commas"),
        ([pred, ref, "-o", str(tmp_path / "pred.json"), "--overwrite"], 2, "pred.gpkg is the input PRED"),
        ([pred, ref, "-o", str(tmp_path / "pred.json")], 2, "pred.gpkg is the input PRED"),
        (
            [f"{pred}|layername=pred", ref, "-o", str(tmp_path / "pred.json"), "--overwrite"],
            2,
            "pred.gpkg is the input PRED",
        ),
        (
            [f"{pred}|layername=roofs", ref],
            1,
            "pred.gpkg has no layer 'roofs' with geometries: name one of pred",
        ),
        ([f"{pred}|layername=", ref], 1, "give one layer as FILE|layername=NAME"),
        ([pred, f"{tmp_path / 'ref.parquet'}|layername=x"], 1, "a GeoParquet file has no layers"),
    ]
    for args, code, message in cases:
        done = geosam_cli(*args)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == code and "Traceback" not in done.stderr, done.stderr
        assert message in lines[-1] and len(lines) <= 3, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".json", ".txt")) == []
    assert len(gpd.read_file(pred)) == 5, "the input is left alone"


def test_api_defaults_are_the_settings():
    import inspect

    params = inspect.signature(geosam.evaluate).parameters
    assert params["iou"].default == settings.EVALUATION.iou
    assert tuple(params["size_bins"].default) == settings.EVALUATION.size_bins
