"""Classes from a few examples, on the hand-checked labels of benchmarks/labels/: automatic mode alone,
its objects classified, and find-them-all, with k examples drawn from the labels.

    python benchmarks/examples.py                          # every labelled class, k = 3, 5, 10
    python benchmarks/examples.py --only pan1_building --ks 5 --seeds 3 --json examples.json

For each class with more labels than k + 1, k labels (seeded draws) are the examples; the others are
the reference, scored by `geosam.evaluate` (IoU >= 0.5, one to one) inside the file's AOI less the
examples; a prediction at least half on an example (buffered by 1 m) is left out: an example found
again is neither a find nor a false positive. Modes, on the same scene and settings:
  automatic   every object of automatic mode, unclassified (what the analyst gets today)
  classified  automatic mode's objects that the class model puts in the class (--no-find-all)
  find-all    the same with find-them-all's proposals answered beside the grid
Per row: precision, recall, F1, objects predicted, model seconds per tile (the workers' time in the
model) and the whole call's seconds (learning the examples included). Rows marked held-out were never
looked at while choosing the method's settings. Not part of the test run; times compare within one
run only (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data"
LABELS = ROOT / "benchmarks" / "labels"
SETS = {  # name: (scene, labels file, class, read options, role)
    "pan1_building": ("pan1.tif", "pan1_buildings.gpkg", "building", {}, "development"),
    "pix4d_field": ("pix4d_alpha_nodata.tif", "pix4d_fields.gpkg", "field", {}, "development"),
    "pan3_tank": ("pan3.tif", "pan3_industry.gpkg", "tank", {"nodata": 0}, "held-out"),
    "pix4d_tarp": ("pix4d_alpha_nodata.tif", "pix4d_tarps.gpkg", "tarp", {}, "held-out"),
}
MODES = ("automatic", "classified", "find-all")
ON_EXAMPLE = 0.5  # a prediction with this share of its area on an example is that example found again


def run(scene: str, read: dict, **classes) -> tuple[gpd.GeoDataFrame, dict]:
    from geosam.scene_run import segment_scene

    started = time.perf_counter()
    frame, report = segment_scene(str(DATA / scene), workers=0, **read, **classes)
    tiles = max(report.tiles_done, 1)
    return frame, {"model_s_per_tile": report.model_s / tiles, "call_s": time.perf_counter() - started,
                   "proposals": report.masks.get("proposals", 0), "sources": report.sources}  # fmt: skip


def score(
    pred: gpd.GeoDataFrame, ref: gpd.GeoDataFrame, aoi: gpd.GeoDataFrame, examples: shapely.Geometry
) -> dict:
    from geosam.evaluation import evaluate

    again = pred.geometry.intersection(examples).area >= ON_EXAMPLE * pred.geometry.area
    s = evaluate(pred[~again][["geometry"]], ref[["geometry"]], aoi=aoi).overall
    return {"precision": s.precision or 0.0, "recall": s.recall or 0.0, "f1": s.f1 or 0.0,  # None: 0 of 0
            "predicted": s.predictions, "references": s.references}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", nargs="*", choices=list(SETS), help="labelled classes to run [default: all]"
    )
    parser.add_argument("--ks", type=int, nargs="*", default=[3, 5, 10], help="examples per draw")
    parser.add_argument("--seeds", type=int, default=2, help="draws of examples per k")
    parser.add_argument("--json", type=Path, help="also write every row as JSON")
    args = parser.parse_args()
    rows = []
    automatic: dict[str, tuple[gpd.GeoDataFrame, dict]] = {}
    for name in args.only or SETS:
        scene, file, cls, read, role = SETS[name]
        labels = gpd.read_file(LABELS / file, layer="labels")
        labels = labels[labels["class"] == cls].reset_index(drop=True)
        aoi = gpd.read_file(LABELS / file, layer="aoi")
        if scene not in automatic:
            if not automatic:
                run(scene, read)  # the process's first call pays the model's start-up: time the second
            automatic[scene] = run(scene, read)
        for k in [k for k in args.ks if k + 2 <= len(labels)]:
            for seed in range(args.seeds):
                pick = np.random.default_rng(seed).choice(len(labels), k, replace=False)
                examples, ref = labels.iloc[pick], labels.drop(index=pick)
                taken = examples.geometry.buffer(1.0).union_all()
                where = aoi.copy()
                where["geometry"] = aoi.geometry.difference(taken)
                for mode in MODES:
                    if mode == "automatic":
                        frame, cost = automatic[scene]
                    else:
                        given = examples[["class", "geometry"]]
                        frame, cost = run(
                            scene, read, examples=given, keep=(cls,), find_all=mode == "find-all"
                        )
                    row = {"set": name, "role": role, "k": k, "seed": seed, "mode": mode,
                           **score(frame, ref, where, taken), **cost}  # fmt: skip
                    rows.append(row)
                    print(_line(row), flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


def _line(r: dict) -> str:
    return (
        f"{r['set']} k={r['k']} seed={r['seed']} {r['mode']}: P {r['precision']:.2f} R {r['recall']:.2f} "
        f"F1 {r['f1']:.2f} ({r['predicted']} predicted, {r['references']} refs), "
        f"model {r['model_s_per_tile']:.1f} s/tile, call {r['call_s']:.1f} s"
    )


def table(rows: list[dict]) -> str:
    """Mean over draws per set, k and mode, as a Markdown table."""
    lines = ["| set | role | k | mode | precision | recall | F1 | predicted | model s/tile | call s |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    keys = sorted(
        {(r["set"], r["role"], r["k"], r["mode"]) for r in rows},
        key=lambda t: (t[0], t[2], MODES.index(t[3])),
    )
    for name, role, k, mode in keys:
        group = [r for r in rows if (r["set"], r["role"], r["k"], r["mode"]) == (name, role, k, mode)]
        mean = {f: float(np.mean([r[f] for r in group])) for f in ("precision", "recall", "f1", "predicted",
                                                                    "model_s_per_tile", "call_s")}  # fmt: skip
        lines.append(
            f"| {name} | {role} | {k} | {mode} | {mean['precision']:.2f} | {mean['recall']:.2f} | "
            f"{mean['f1']:.2f} | {mean['predicted']:.0f} | {mean['model_s_per_tile']:.1f} | {mean['call_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
