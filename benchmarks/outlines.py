"""Outline benchmark (issue 24): are the outlines ones an analyst can hand over, and what do they cost?

1. Labelled objects (benchmarks/labels: pan1 buildings, pan3 halls and tanks): the raw SAM outlines of
   the labels' own prompts (``geosam prompt`` with the ``prompts`` layer, MobileSAM), then each outline
   kind: mean IoU with the reference footprints, vertices, and the share of building corners within 10°
   of 90°. With ``--versus-buildingregulariser`` the same for buildingregulariser (pip install
   buildingregulariser; it needs geopandas >= 1.0 and numpy >= 2).
   The same against the footprints drawn by hand (benchmarks/labels/footprints.gpkg: most references
   are SAM outlines, which favour the pixel outline), and on generated buildings whose true footprints
   are known: rotated rectangles and L shapes, 10-60 px across, rasterized (their pixel outlines are
   what a perfect mask gives).
2. Neighbours: generated fields that tile the ground (a Voronoi partition of pixels) and terraced houses
   (touching rotated rectangles): gap + overlap area along shared edges, as a share of their area.
3. Cost: a generated label raster of >= 10,000 objects (rectangles, discs, blobs, some touching): seconds
   per object for each kind; against the model: one 1024² tile of a sample scene with MobileSAM at the
   default settings (its objects and seconds), the outlines' share of a run's time at that rate.

Run from the repository root (``--skip-model`` leaves out sections 1 and 3's model tile):

    GEOSAM_MODELS_DIR=... python benchmarks/outlines.py [--objects 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio.features
import shapely
from shapely import affinity

from geosam import metrics, outlines
from geosam.vectorize import to_map, to_pixels

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
LABELS = {"pan1_buildings": "pan1.tif", "pan3_industry": "pan3.tif"}
KINDS = ("pixel", "simplify", "smooth", "orthogonal", "orthogonal45", "circle", "auto")
BUILDINGS = ("building", "hall")


def right_share(geometries) -> float:
    """The share of corners within 10° of 90° (270° turns count as right angles too)."""
    angles = np.concatenate([outlines.corner_angles(g) for g in geometries] or [np.zeros(0)])
    return float((np.abs(angles - 90) <= 10).mean()) if len(angles) else float("nan")


def labelled(versus: bool) -> list[dict]:
    """Section 1: each kind against the reference footprints, and against those drawn by hand."""
    from geosam.georef import open_scene
    from geosam.models import ModelSpec
    from geosam.session import Session

    rows = []
    model = ModelSpec("mobile_sam").load()
    drawn = pyogrio.read_dataframe(ROOT / "benchmarks" / "labels" / "footprints.gpkg")
    kinds = (*KINDS, "buildingregulariser") if versus else KINDS
    by_hand: dict[str, list[np.ndarray]] = {}  # kind: the outlines of the objects drawn by hand
    truth_by_hand = []
    for name, scene_file in LABELS.items():
        path = ROOT / "benchmarks" / "labels" / f"{name}.gpkg"
        labels = pyogrio.read_dataframe(path, layer="labels")
        prompts = pyogrio.read_dataframe(path, layer="prompts")
        scene = open_scene(str(DATA / scene_file))
        raw = Session(scene, model, cache=False).predict(
            prompts=prompts, id_field="label_id", label_field="label"
        )
        ref = labels.set_index("label_id").loc[raw["id"]]
        pixels = to_pixels(np.asarray(raw.geometry.values, dtype=object), scene.transform)
        truth = np.asarray(ref.geometry.values, dtype=object)
        hand = drawn[drawn["labels"] == name].set_index("label_id")
        in_hand = np.isin(raw["id"].to_numpy(), hand.index)
        truth_by_hand.append(np.asarray(hand.loc[raw["id"][in_hand]].geometry.values, dtype=object))
        for kind in kinds:
            by_hand.setdefault(kind, []).append(
                _outlines(kind, pixels[in_hand], raw[in_hand], scene.transform)
            )
        for group, classes in (("building/hall", BUILDINGS), ("tank", ("tank",))):
            chosen = np.isin(ref["class"].to_numpy(), classes)
            if not chosen.any():
                continue
            for kind in kinds:
                geometry = _outlines(kind, pixels[chosen], raw[chosen], scene.transform)
                rows.append(_row(name, group, kind, geometry, truth[chosen]))
    truth = np.concatenate(truth_by_hand)
    for kind, parts in by_hand.items():
        rows.append(_row("drawn by hand", "building/hall", kind, np.concatenate(parts), truth))
    return rows


def _outlines(kind: str, pixels: np.ndarray, raw, transform) -> np.ndarray:
    """The outlines of kind ``kind`` (map coordinates) of the raw pixel outlines ``pixels``."""
    if kind == "buildingregulariser":
        return _buildingregulariser(raw)
    return to_map(outlines.outline(pixels, kind).geometry, transform)


def _row(labels: str, group: str, kind: str, geometry: np.ndarray, truth: np.ndarray) -> dict:
    return {
        "labels": labels, "class": group, "objects": len(geometry), "kind": kind,
        "mean_iou": float(metrics.iou(geometry, truth).mean()),
        "vertices": float(outlines.vertex_count(geometry).mean()),
        "right_corners": right_share(geometry),
    }  # fmt: skip


def footprints(count: int = 300, seed: int = 0) -> np.ndarray:
    """Rotated rectangles and L shapes, 10-60 px across, one per 80-px cell."""
    rng = np.random.default_rng(seed)
    shapes = []
    for k in range(count):
        cx, cy = (k % 20) * 80 + 40, (k // 20) * 80 + 40
        w, h = rng.uniform(10, 60, 2)
        shape = shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if k % 2:  # an L: a corner cut out
            shape = shape.difference(shapely.box(cx, cy, cx + w, cy + h))
        shapes.append(affinity.rotate(shape, rng.uniform(0, 90), origin=(cx, cy)))
    return np.array(shapes, dtype=object)


def generated_buildings(versus: bool) -> list[dict]:
    """Section 1, generated: each kind against the true footprints."""
    truth = footprints()
    labels = rasterio.features.rasterize(
        [(g, k) for k, g in enumerate(truth, start=1)], out_shape=(1200, 1600), dtype="int32"
    )
    raw = pixel_outlines(labels)
    rows = []
    results = {
        k: outlines.outline(raw, k).geometry for k in ("pixel", "simplify", "orthogonal", "orthogonal45")
    }
    if versus:
        import geopandas as gpd

        results["buildingregulariser"] = _buildingregulariser(gpd.GeoDataFrame(geometry=list(raw)))
    for kind, geometry in results.items():
        rows.append({
            "labels": "generated", "class": "building", "objects": len(raw), "kind": kind,
            "mean_iou": float(metrics.iou(geometry, truth).mean()),
            "vertices": float(outlines.vertex_count(geometry).mean()), "right_corners": right_share(geometry),
        })  # fmt: skip
    return rows


def _buildingregulariser(frame) -> np.ndarray:
    from buildingregulariser import regularize_geodataframe

    frame = frame[["geometry"]].reset_index(drop=True).assign(k=np.arange(len(frame)))
    done = regularize_geodataframe(frame, num_cores=1)  # one row per part: whole again by k
    return np.asarray(done.dissolve("k").sort_index().geometry.values, dtype=object)


def voronoi_fields(size: int = 600, cells: int = 150, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, size, (cells, 2))
    yy, xx = np.mgrid[:size, :size] + 0.5
    best = np.full((size, size), np.inf)
    labels = np.zeros((size, size), np.int32)
    for k, (y, x) in enumerate(seeds, start=1):
        d = (yy - y) ** 2 + (xx - x) ** 2
        labels[d < best] = k
        best = np.minimum(best, d)
    return labels


def terraced_houses(size: int = 600, rows: int = 7, seed: int = 0) -> np.ndarray:
    """Rows of 8 touching houses 15-40 px wide, each row turned by up to 10° about its middle (rows apart)."""
    rng = np.random.default_rng(seed)
    shapes = []
    for r in range(rows):
        y, x, angle = 30 + r * 80, 150.0, rng.uniform(-10, 10)
        row = []
        for _ in range(8):
            w = rng.uniform(15, 40)
            row.append(shapely.box(x, y, x + w, y + 30))
            x += w
        middle = ((150 + x) / 2, y + 15)
        shapes += [affinity.rotate(g, angle, origin=middle) for g in row]
    return rasterio.features.rasterize(
        [(g, k) for k, g in enumerate(shapes, start=1)], out_shape=(size, size), dtype="int32"
    )


def pixel_outlines(labels: np.ndarray) -> np.ndarray:
    """One pixel outline per label (its largest part where a rasterized shape fell apart)."""
    parts: dict[int, list] = {}
    for geometry, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=4):
        parts.setdefault(int(value), []).append(shapely.geometry.shape(geometry))
    return np.array([max(p, key=lambda g: g.area) for _, p in sorted(parts.items())], dtype=object)


def gap_and_overlap(result: outlines.Outlines) -> tuple[float, float, float]:
    """Gap and overlap area between touching objects along their shared edges, and their area (px²)."""
    raw, final = result.raw, result.geometry
    left, right = shapely.STRtree(raw).query(raw, predicate="touches")
    pair = left < right
    left, right = left[pair], right[pair]
    shared = shapely.union_all(shapely.intersection(raw[left], raw[right]))
    near = shapely.buffer(shared, 3)
    touching = np.unique(np.r_[left, right])
    gap = shapely.intersection(
        shapely.difference(shapely.union_all(raw[touching]), shapely.union_all(final[touching])), near
    ).area
    overlap = float(shapely.area(shapely.intersection(final[left], final[right])).sum())
    return gap, overlap, float(shapely.area(raw[touching]).sum())


def neighbours() -> list[dict]:
    """Section 2."""
    rows = []
    for scene, labels in (("fields", voronoi_fields()), ("terraced houses", terraced_houses())):
        raw = pixel_outlines(labels)
        for kind in KINDS[1:]:
            result = outlines.outline(raw, kind)
            gap, overlap, area = gap_and_overlap(result)
            rows.append({
                "scene": scene, "objects": len(raw), "kind": kind, "gap_px2": gap, "overlap_px2": overlap,
                "share": (gap + overlap) / area, "valid": bool(shapely.is_valid(result.geometry).all()),
                "mean_iou": float(result.iou.mean()), "vertices": float(result.vertices.mean()),
                "vertices_raw": float(result.vertices_raw.mean()), "right_corners": right_share(result.geometry),
            })  # fmt: skip
    return rows


def many_objects(count: int, seed: int = 0) -> np.ndarray:
    """A label raster of ``count`` objects on a grid of 24-px cells: rotated rectangles, discs, blobs;
    every fifth cell's rectangle fills it and touches the next cell's."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(count)))
    cell = 24
    shapes = []
    for k in range(count):
        y, x = divmod(k, side)
        cx, cy = x * cell + cell / 2, y * cell + cell / 2
        kind = k % 5
        if kind == 0:
            shapes.append(shapely.box(x * cell, y * cell + 4, (x + 1) * cell, y * cell + 20))
        elif kind in (1, 2):
            w, h = rng.uniform(8, 20, 2)
            box = shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            shapes.append(affinity.rotate(box, rng.uniform(0, 90), origin=(cx, cy)))
        elif kind == 3:
            shapes.append(shapely.Point(cx, cy).buffer(rng.uniform(4, 10)))
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
            radius = rng.uniform(4, 10, 9)
            shapes.append(shapely.Polygon(np.c_[cx + radius * np.cos(angles), cy + radius * np.sin(angles)]))
    return rasterio.features.rasterize(
        [(g, k) for k, g in enumerate(shapes, start=1)], out_shape=(side * cell, side * cell), dtype="int32"
    )


def model_tile() -> dict:
    """One 1024² tile of a sample scene with MobileSAM, default settings: objects and seconds."""
    import tempfile

    import rasterio
    from rasterio.windows import Window

    from geosam.scene_run import segment_scene

    source = DATA / "m_4709963_se_14_1_20200831.tif"
    with tempfile.TemporaryDirectory() as folder, rasterio.open(source) as ds:
        profile = ds.profile | {
            "width": 1024,
            "height": 1024,
            "transform": ds.window_transform(Window(0, 0, 1024, 1024)),
        }
        tile = Path(folder) / "tile.tif"
        with rasterio.open(tile, "w", **profile) as out:
            out.write(ds.read(window=Window(0, 0, 1024, 1024)))
        start = time.perf_counter()
        frame, report = segment_scene(str(tile), workers=0, tile_size=1024, bands=(1, 2, 3))
        seconds = time.perf_counter() - start
    return {"objects": len(frame), "seconds": seconds, "outlines_s": report.outlines_s}


def cost(count: int, skip_model: bool) -> dict:
    """Section 3."""
    start = time.perf_counter()
    raw = pixel_outlines(many_objects(count))
    made = time.perf_counter() - start
    rows = []
    for kind in KINDS:
        start = time.perf_counter()
        outlines.outline(raw, kind)
        seconds = time.perf_counter() - start
        rows.append({"kind": kind, "seconds": seconds, "ms_per_object": 1000 * seconds / len(raw)})
    tile = None if skip_model else model_tile()
    return {"objects": len(raw), "vectorize_s": made, "kinds": rows, "model_tile": tile}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--versus-buildingregulariser", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result: dict = {}
    result["labels"] = [] if args.skip_model else labelled(args.versus_buildingregulariser)
    result["labels"] += generated_buildings(args.versus_buildingregulariser)
    print("1. labelled objects: raw SAM outlines of the labels' prompts (generated: rasterized footprints),")
    print("   each kind against the labels; right: share of corners within 10° of 90°")
    print(f"{'labels':15} {'class':13} {'n':>3} {'kind':20} {'mean IoU':>8} {'vertices':>8} {'right':>6}")
    for r in result["labels"]:
        print(f"{r['labels']:15} {r['class']:13} {r['objects']:3d} {r['kind']:20} {r['mean_iou']:8.3f} "
              f"{r['vertices']:8.1f} {r['right_corners']:6.2f}")  # fmt: skip
    result["neighbours"] = neighbours()
    print("\n2. neighbours: gap + overlap along shared edges, share of the touching objects' area")
    print(f"{'scene':16} {'n':>4} {'kind':13} {'gap px²':>9} {'overlap px²':>11} {'share':>7} valid "
          f"{'IoU raw':>7} {'vertices':>13} {'right':>5}")  # fmt: skip
    for r in result["neighbours"]:
        print(f"{r['scene']:16} {r['objects']:4d} {r['kind']:13} {r['gap_px2']:9.1f} {r['overlap_px2']:11.1f} "
              f"{100 * r['share']:6.3f}% {r['valid']!s:5} {r['mean_iou']:7.3f} {r['vertices_raw']:6.1f}->{r['vertices']:5.1f} "
              f"{r['right_corners']:5.2f}")  # fmt: skip
    result["cost"] = c = cost(args.objects, args.skip_model)
    print(f"\n3. cost: {c['objects']} generated objects (pixel outlines in {c['vectorize_s']:.1f} s)")
    tile = c["model_tile"]
    for r in c["kinds"]:
        share = ""
        if tile:
            per_tile = r["ms_per_object"] / 1000 * tile["objects"]
            share = f"  {100 * per_tile / tile['seconds']:.2f}% of a model tile's {tile['seconds']:.1f} s ({tile['objects']} objects)"
        print(f"{r['kind']:13} {r['seconds']:7.2f} s  {r['ms_per_object']:6.3f} ms/object{share}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
