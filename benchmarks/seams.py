"""Seam benchmark: does the tiling show in the output?

1. The reference segmenter (geosam.testing) on synthetic scenes with known objects up to three tiles
   across, for several tile/overlap settings: split, duplicate and merge-error rates, mean IoU.
2. Objects larger than a tile: the reference segmenter answering the ground too, objects 2-10 tiles
   across; and the real model on flat shapes up to 3.5 tiles across (``geosam.testing.flat_shapes``).
3. The real model on a mosaic of ../shared/data imagery: seam-line fraction and duplicates.

Run from the repository root:

    GEOSAM_MODELS_DIR=... python benchmarks/seams.py [--size 4096] [--points-per-side 8] [--skip-model]

With ``--cache DIR`` the mosaic and every tile's model result are kept in DIR (a resumable run's
work folder, see geosam.resume), so a second run only stitches: seconds instead of minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import shapely

from geosam.metrics import duplicates, seam_line_fraction, truth_scores
from geosam.models import AutomaticParams, ModelSpec
from geosam.reprompt import ROUNDS
from geosam.scene_run import segment, segment_scene
from geosam.testing import ReferenceModel, flat_shapes, make_scene, mosaic
from geosam.tiling import TileGrid
from geosam.vectorize import to_pixels

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MOSAIC_SOURCES = ["m_4709963_se_14_1_20090818.tif", "m_4709963_se_14_1_20200831.tif"]
SETTINGS = [(256, 32), (192, 64), (128, 16), (160, 2)]  # tile size, overlap (px)
LARGE_SETTINGS = [(64, 8), (96, 24), (128, 2)]  # the same for objects up to 10 tiles across


def reference_table(folder: Path, seeds: int) -> None:
    """Rows for the reference segmenter, then for one that misses objects cut by its tile in every
    other tile (misses_cut), without prompts to neighbours and with them."""
    print("reference segmenter, synthetic scenes 1024×768 px, objects up to 3 tiles across")
    print(f"{'tile':>5} {'overlap':>7} {'seed':>4} {'misses':>6} {'rounds':>6} {'objects':>7} {'split':>6} "
          f"{'dup':>6} {'merge':>6} {'mean IoU':>8} {'seconds':>7}")  # fmt: skip
    runs = [(False, ROUNDS), (True, 0), (True, ROUNDS)]
    for misses, rounds in runs:
        for size, overlap in SETTINGS:
            for seed in range(seeds):
                scene = make_scene(
                    folder, seed, 1024, 768, max_size=3 * size, objects=150, name=f"s{size}-{seed}"
                )
                model = ReferenceModel(str(scene.labels), misses_cut=misses)
                start = time.perf_counter()
                frame = segment(
                    scene.path, model=model, tile_size=size, overlap=overlap, workers=0, prompt_rounds=rounds
                )
                seconds = time.perf_counter() - start
                scores = truth_scores(
                    to_pixels(frame.geometry.values, scene.transform), list(scene.truth.values())
                )
                print(f"{size:>5} {overlap:>7} {seed:>4} {'yes' if misses else 'no':>6} {rounds:>6} "
                      f"{scores.objects:>7} {scores.split_rate:>6.3f} {scores.duplicate_rate:>6.3f} "
                      f"{scores.merge_error_rate:>6.3f} {scores.mean_iou:>8.4f} {seconds:>7.1f}")  # fmt: skip


def large_table(folder: Path, seeds: int, points: int, real_model: bool) -> None:
    """Objects larger than a tile: every object one polygon, its IoU, holes the truth does not have,
    and the ground left out; with ``real_model``, the real model on flat shapes too."""
    print("\nobjects 2-10 tiles across, reference segmenter answering the ground too, scenes 20×16 tiles")
    print(f"{'tile':>5} {'overlap':>7} {'seed':>4} {'objects':>7} {'found':>5} {'split':>6} {'min IoU':>8} "
          f"{'holes':>5} {'ground':>6}")  # fmt: skip
    for size, overlap in LARGE_SETTINGS:
        for seed in range(seeds):
            scene = make_scene(folder, seed, 20 * size, 16 * size, max_size=10 * size, objects=12, name=f"l{size}-{seed}",
                               min_size=2 * size, rings=False)  # fmt: skip
            model = ReferenceModel(str(scene.labels), ground=True)
            frame = segment(scene.path, model=model, tile_size=size, overlap=overlap, workers=0)
            found = to_pixels(frame.geometry.values, scene.transform)
            truth = list(scene.truth.values())
            scores = truth_scores(found, truth)
            ious = [_best(found, t) for t in truth]
            print(f"{size:>5} {overlap:>7} {seed:>4} {len(truth):>7} {len(found):>5} {scores.split_rate:>6.3f} "
                  f"{min(i for i, _ in ious):>8.4f} {sum(h for _, h in ious):>5} "
                  f"{frame.attrs['report']['ground']:>6}")  # fmt: skip
    if not real_model:
        return
    scene = flat_shapes(folder)
    spec = ModelSpec("mobile_sam", params=AutomaticParams(points_per_side=points))
    start = time.perf_counter()
    frame = segment(scene.path, model=spec, tile_size=512, overlap=64, workers=0)
    found = to_pixels(frame.geometry.values, scene.transform)
    print(f"\nmobile_sam, flat shapes on textured ground, {scene.width}² px, 512 px tiles, overlap 64, "
          f"{points}² points: {time.perf_counter() - start:.0f} s, {len(found)} objects, "
          f"{frame.attrs['report']['ground']} left out as ground")  # fmt: skip
    for name, truth in zip(("disc", "bar", "L", "rectangle"), scene.truth.values(), strict=False):
        overlap, holes = _best(found, truth)
        print(f"  {name:<10} {truth.bounds[2] - truth.bounds[0]:>5.0f} px across: IoU {overlap:.4f}, "
              f"holes {holes}")  # fmt: skip


def _best(found: np.ndarray, truth: shapely.Geometry) -> tuple[float, int]:
    """The IoU of the found polygon most like ``truth``, and how many more holes it has."""
    if not len(found):
        return 0.0, 0
    overlap = shapely.area(shapely.intersection(found, truth)) / shapely.area(shapely.union(found, truth))
    best = found[int(np.argmax(overlap))]
    holes = sum(len(p.interiors) for p in getattr(best, "geoms", [best]))
    return float(overlap.max()), holes - len(getattr(truth, "interiors", []))


def model_table(
    folder: Path, size: int, spec: ModelSpec, workers: int, cache: Path | None = None, rounds: int = ROUNDS
) -> None:
    path = (cache or folder) / f"mosaic-{size}.tif"
    if cache is None or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        mosaic(path, size, [DATA / name for name in MOSAIC_SOURCES])
    tile, overlap, points = 1024, 128, spec.params.points_per_side
    work_dir = cache / f"work-{size}-{points}-{spec.device}-{spec.precision}" if cache else None
    start = time.perf_counter()
    frame, report = segment_scene(
        path,
        model=spec,
        tile_size=tile,
        overlap=overlap,
        workers=workers,
        work_dir=work_dir,
        prompt_rounds=rounds,
    )
    seconds = time.perf_counter() - start
    with rasterio.open(path) as ds:
        transform = ds.transform
    pixels = to_pixels(frame.geometry.values, transform)
    grid = TileGrid(size, size, tile, overlap)
    nested = _nested(pixels)
    print(f"\n{spec.name} ({spec.device}, {spec.precision}) on a {size}×{size} px NAIP mosaic, {len(grid)} tiles of {tile} px, overlap {overlap}, "
          f"{points}² points per tile, {rounds} prompt rounds, {workers} workers: {seconds:.0f} s "
          f"({report.tiles_skipped} tiles from the cache); {report.prompts} prompts to neighbours found "
          f"{report.prompt_pieces} pieces")  # fmt: skip
    print(f"  objects:                              {len(frame)}")
    area, workers_mb = report.area_km2 or 0.0, sorted(v / 2**20 for v in report.peak_rss_bytes.values())
    print(f"  throughput:                           {area:.1f} km² in {seconds:.0f} s: "
          f"{area / seconds * 3600:.0f} km²/h, {size**2 / seconds / 1e6:.3f} Mpx/s")  # fmt: skip
    print(f"  peak memory:                          client {report.client_peak_rss_bytes / 2**20:.0f} MiB, "
          f"workers {', '.join(f'{mb:.0f}' for mb in workers_mb)} MiB")  # fmt: skip
    print(f"  covered area (union of objects):      {shapely.union_all(pixels).area / size**2:.2%}")
    print(f"  seam-line fraction (tile-core edges): {seam_line_fraction(pixels, grid, 'core'):.4%}")
    print(f"  seam-line fraction (read-window edges): {seam_line_fraction(pixels, grid, 'read'):.4%}")
    small = pixels[shapely.area(pixels) <= tile**2]
    print(f"  objects larger than a tile:           {len(pixels) - len(small)}; without them, on core edges: "
          f"{seam_line_fraction(small, grid, 'core'):.4%}")  # fmt: skip
    print(f"  duplicates (IoU > 0.5 with another):  {duplicates(pixels)}")
    print(f"  nested (> 50% of the smaller inside another, not a duplicate): {nested}")
    print(f"  objects from more than one tile:      {int((frame['tiles'] > 1).sum())}")


def _nested(geoms: np.ndarray) -> int:
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    inter = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    smaller = np.minimum(shapely.area(geoms[left]), shapely.area(geoms[right]))
    union = shapely.area(geoms[left]) + shapely.area(geoms[right]) - inter
    return int(((inter > 0.5 * smaller) & (inter <= 0.5 * union)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=2, help="synthetic scenes per setting")
    parser.add_argument("--size", type=int, default=4096, help="mosaic side in pixels")
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="the real model's torch device (cuda: a GPU)")
    parser.add_argument("--precision", default="fp32", help="its image encoder's: fp32, fp16, bf16")
    parser.add_argument("--prompt-rounds", type=int, default=ROUNDS, help="rounds of prompts to neighbours")
    parser.add_argument("--skip-model", action="store_true", help="only the reference segmenter")
    parser.add_argument("--skip-reference", action="store_true", help="only the real model")
    parser.add_argument("--skip-large", action="store_true", help="leave out objects larger than a tile")
    parser.add_argument(
        "--cache", type=Path, help="keep the mosaic and the model's tile results here and reuse them"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_reference:
            reference_table(Path(folder), args.seeds)
        if not args.skip_large:
            large_table(Path(folder), args.seeds, 16, not args.skip_model)
        if not args.skip_model:
            params = AutomaticParams(points_per_side=args.points_per_side)
            spec = ModelSpec("mobile_sam", device=args.device, params=params, precision=args.precision)
            model_table(Path(folder), args.size, spec, args.workers, args.cache, args.prompt_rounds)


if __name__ == "__main__":
    main()
