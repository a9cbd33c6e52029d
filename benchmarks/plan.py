"""Planning and scheduling cost of huge scenes, and peak memory per worker against scene size.

    python benchmarks/plan.py plan                    # a 200,000 × 200,000 px scene: plan + submission
    python benchmarks/plan.py scheduler               # a real scheduler: 5,041 and 50,176 tiles
    python benchmarks/plan.py workers                 # reference model, scenes 2048² and 4096² px
    python benchmarks/plan.py workers --model mobile_sam --points-per-side 4

Sections (each measured in a fresh process, so peak memory is its own; peak RSS from the OS):
  plan     open the scene (a sparse 200,000² px GeoTIFF: 120 GB of pixels, a few KB on disk), plan
           the TileGrid, hash the run key, list the work folder and walk every tile through the
           submission loop's filter: time and peak RSS. Then the real submission loop (Dask, 2
           workers, a model that finds nothing) over scenes of N and 4N tiles: the client's peak
           RSS must not grow with the number of tiles, and at most 2 tasks per worker are in flight.
  scheduler the same submission loop on a real `dask scheduler` and two `dask worker` processes on
           127.0.0.1: tiles a second at 5,041 and 50,176 tiles with a model that costs nothing, and the
           workers' overhead a tile against a model that spends 1 s a tile (225 tiles)
  workers  the whole pipeline on two generated scenes, the second 4× the area of the first: peak
           RSS per worker process (the peak each task reports) must not grow with the scene.
  scale    the whole pipeline with a stand-in model (one object every 22 px: ~104 a 256 px tile) on scenes
           of N and 10N tiles (default 5,041 and 50,176 tiles: 0.5 and 5.2 million objects), on 2 local
           workers, to a GeoPackage: the client's peak RSS must not grow with the scene (issue: <= 1.2x).
  objects  the client's side of N and 4N objects as the stitcher releases them (100 a tile: 64-vertex
           outlines, SAM's 256-d descriptors, classified) through the object store on disk (de-duplicated,
           grounded, staged a chunk at a time) to a GeoPackage written a batch at a time: the client's
           peak RSS must not grow with the objects.
Not part of the test run; ratios only mean something within one run (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sparse_scene(path: Path, size: int) -> Path:
    """A size × size RGB uint8 GeoTIFF with no block written (GDAL reads them as zeros)."""
    import rasterio
    from affine import Affine

    with rasterio.open(
        path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
        transform=Affine(0.2, 0, 400_000, 0, -0.2, 5_000_000), tiled=True, blockxsize=512, blockysize=512,
        sparse_ok=True, compress="deflate", BIGTIFF="YES",
    ):  # fmt: skip
        pass
    return path


@dataclass(frozen=True)
class Nothing:
    """A model source whose model finds nothing: the pipeline's own cost, without a model's."""

    name: str = "nothing"
    seconds: float = 0.0  # spent per tile, as a model would

    def check(self) -> None:
        pass

    def load(self) -> Nothing:
        return self

    def automatic(self, tile):
        from geosam.models import Masks

        time.sleep(self.seconds)
        h, w = tile.valid.shape
        return Masks(np.zeros((0, h, w), bool), np.zeros(0, np.float32), np.zeros(0, np.float32))


@dataclass(frozen=True)
class Lattice:
    """A stand-in model: an object every ``pitch`` px of the scene (squares and discs of 6-16 px), found by
    every tile whose window holds its centre, so neighbours agree in their overlap as a model's do."""

    name: str = "lattice"
    pitch: int = 22

    def check(self) -> None:
        pass

    def load(self) -> Lattice:
        return self

    def automatic(self, tile):
        from geosam.models import Masks

        box, (h, w) = tile.tile.read, tile.valid.shape
        first = lambda start: -(-(start - self.pitch // 2) // self.pitch)  # noqa: E731  (first centre >= start)
        found = []
        for j in range(first(box.y0), first(box.y1)):
            for i in range(first(box.x0), first(box.x1)):
                y, x = j * self.pitch + self.pitch // 2 - box.y0, i * self.pitch + self.pitch // 2 - box.x0
                r = 3 + (7 * i + 13 * j) % 6
                yy, xx = np.ogrid[-y : h - y, -x : w - x]
                found.append(np.maximum(abs(yy), abs(xx)) <= r if (i + j) % 2 else yy**2 + xx**2 <= r * r)
        masks = np.array(found, bool).reshape(-1, h, w)
        n = len(masks)
        return Masks(masks & tile.valid, np.full(n, 0.95, np.float32), np.full(n, 0.97, np.float32))


def scene_of_tiles(path: Path, n: int, size: int = 256, overlap: int = 32) -> Path:
    """A single-band 0.5 m GeoTIFF of n × n tiles of ``size`` px (a ramp: the stand-in model ignores it)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    side = n * (size - overlap) + overlap
    with rasterio.open(
        path, "w", driver="GTiff", width=side, height=side, count=1, dtype="uint8", crs="EPSG:32633",
        transform=Affine(0.5, 0, 400_000, 0, -0.5, 5_000_000), tiled=True, blockxsize=512, blockysize=512,
        compress="deflate", BIGTIFF="YES",
    ) as ds:  # fmt: skip
        block = (np.add.outer(np.arange(512), np.arange(512)) % 200 + 20).astype(
            np.uint8
        )  # not one value: no nodata
        for y in range(0, side, 512):
            for x in range(0, side, 512):
                window = Window(x, y, min(512, side - x), min(512, side - y))
                ds.write(block[: window.height, : window.width], 1, window=window)
    return path


def scale(n: int, folder: str) -> dict:
    """The client's peak RSS over a whole run of n × n tiles of the stand-in model, written to a GeoPackage."""
    from geosam import output, scene_run
    from geosam.report import peak_rss

    folder = Path(folder)
    path = folder / f"lattice-{n}.tif"
    if not path.exists():  # kept with the work folder: a stopped run resumes
        scene_of_tiles(path, n)
    out = folder / f"lattice-{n}.gpkg"
    start = time.perf_counter()
    with scene_run.segmented(
        path, model=Lattice(), tile_size=256, overlap=32, workers=2, work_dir=folder / f"work-{n}"
    ) as result:
        output.write(result.layer(), out)
        report = result.report
    used = resource.getrusage(resource.RUSAGE_SELF)  # the client's CPU: what one client can stitch and write
    return {"tiles": report.tiles_planned, "objects": result.store.staged, "wall_s": round(time.perf_counter() - start),
            "client_cpu_ms_a_tile": round(1000 * (used.ru_utime + used.ru_stime) / report.tiles_planned, 1),
            "gpkg_mb": round(out.stat().st_size / 2**20), "client_peak_rss_mb": round(peak_rss() / 2**20),
            "worker_peak_rss_mb": [round(p / 2**20) for p in sorted(report.peak_rss_bytes.values())]}  # fmt: skip


def plan(size: int, folder: str) -> dict:
    """Everything before the first task, for a size² scene."""
    from geosam.fingerprint import run_key
    from geosam.georef import open_scene
    from geosam.report import peak_rss
    from geosam.resume import WorkDir
    from geosam.tiling import TileGrid

    folder = Path(folder)
    scene_path = sparse_scene(folder / f"sparse-{size}.tif", size)
    before = peak_rss()
    start = time.perf_counter()
    scene = open_scene(scene_path)
    opened = time.perf_counter() - start
    grid = TileGrid(scene.width, scene.height, 1024, 128)
    key = run_key(scene, grid, Nothing())
    work = WorkDir(folder / "work", key)
    done = work.finished(grid)
    walked = sum(1 for tile in grid if not done[tile.row, tile.col])  # the submission loop's source
    total = time.perf_counter() - start
    return {"px": f"{size} × {size}", "tiles": len(grid), "walked": walked, "open_scene_s": round(opened, 3),
            "plan_s": round(total, 3), "peak_rss_mb": round(peak_rss() / 2**20, 1),
            "rss_growth_mb": round((peak_rss() - before) / 2**20, 1)}  # fmt: skip


def submit(size: int, folder: str, scheduler: str | None = None, seconds: float = 0.0) -> dict:
    """The real submission loop over every tile of a size² sparse scene on 2 workers (local, or those of
    ``scheduler``), the stand-in model spending ``seconds`` a tile; the workers' overhead a tile is the
    worker time beyond the model's: 2 workers × wall / tiles - ``seconds``."""
    from geosam.cluster import dask_client, run_tiles
    from geosam.georef import open_scene
    from geosam.report import peak_rss
    from geosam.tiling import TileGrid

    folder = Path(folder)
    scene = open_scene(sparse_scene(folder / f"sparse-{size}.tif", size))
    grid = TileGrid(scene.width, scene.height, 1024, 128)
    with dask_client(2, scheduler) as client:
        client.wait_for_workers(2)  # workers up
        most = 0
        start = time.perf_counter()
        for i, _ in enumerate(run_tiles(client, scene, grid, Nothing(seconds=seconds), threads=1)):
            if i % 50 == 0:
                most = max(most, sum(len(v) for v in client.processing().values()))
        wall = time.perf_counter() - start
    overhead = 2 * wall / len(grid) - seconds
    return {"px": f"{size} × {size}", "tiles": len(grid), "model_s": seconds, "wall_s": round(wall, 1),
            "tiles_per_s": round(len(grid) / wall, 1), "overhead_ms": round(1000 * overhead, 1),
            "overhead_share": round(overhead / seconds, 4) if seconds else None,
            "most_tasks_on_workers": most, "client_peak_rss_mb": round(peak_rss() / 2**20, 1)}  # fmt: skip


def workers(size: int, folder: str, model: str, points: int, tile_size: int) -> dict:
    """The whole pipeline on a generated size² scene; peak RSS of each worker process."""
    from geosam import scene_run

    folder = Path(folder)
    if model == "reference":
        from geosam.testing import make_scene

        scene = make_scene(folder, seed=size, width=size, height=size, max_size=256, objects=size // 4)
        path, source, n = scene.path, scene.model, 2
    else:
        from run import mosaic

        from geosam.models import AutomaticParams, ModelSpec

        path = mosaic(folder / f"mosaic-{size}.tif", size)
        source, n = ModelSpec(model, params=AutomaticParams(points_per_side=points)), 1
    frame, report = scene_run.segment_scene(path, model=source, tile_size=tile_size, overlap=128, workers=n)
    peaks = sorted(report.peak_rss_bytes.values())
    return {"px": f"{size} × {size}", "tiles": report.tiles_planned, "objects": len(frame),
            "wall_s": round(report.wall_s, 1), "km2": round(report.area_km2 or 0, 3),
            "worker_peak_rss_mb": [round(p / 2**20) for p in peaks],
            "client_peak_rss_mb": round(report.client_peak_rss_bytes / 2**20)}  # fmt: skip


def released(n: int, per_tile: int = 100):
    """``n`` stitched objects in batches of ``per_tile``: 64-vertex blobs of 6-40 px on a 60 px grid (a
    tenth of them again, shifted: duplicates), with unit 256-d descriptors."""
    import shapely

    from geosam.stitch import StitchedObject

    rng = np.random.default_rng(0)
    angle = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    side = int(np.ceil(np.sqrt(n)))
    for first in range(0, n, per_tile):
        batch = []
        for i in range(first, min(n, first + per_tile)):
            r = rng.uniform(3, 20) * rng.uniform(0.8, 1.2, 64)
            x, y = 60 * (i % side) + 30 + r * np.cos(angle), 60 * (i // side) + 30 + r * np.sin(angle)
            shape = shapely.Polygon(np.c_[np.round(x), np.round(y)]).buffer(0)
            descriptor = rng.normal(size=256).astype(np.float32)
            batch.append(
                StitchedObject(shape, rng.uniform(0.88, 1), 0.95, 1, descriptor / np.linalg.norm(descriptor))
            )
            if i % 10 == 0:
                batch.append(
                    StitchedObject(shapely.affinity.translate(shape, 1, 0), 0.87, 0.95, 1, descriptor)
                )
        yield batch


def objects(n: int, folder: str) -> dict:
    """The client's peak RSS from ``n`` released objects to the written GeoPackage: through the object
    store, written a batch at a time."""
    from affine import Affine
    from rasterio.crs import CRS

    from geosam import classes, output, scene_run
    from geosam.georef import Scene
    from geosam.objectstore import ObjectStore
    from geosam.report import peak_rss

    rng = np.random.default_rng(1)
    model = classes.fit(
        rng.normal(size=(20, 256)), np.array(["a"] * 10 + ["background"] * 10), "test", {"a": 0.5}
    )
    side = 60 * int(np.ceil(np.sqrt(n)))
    crs = CRS.from_epsg(32631)  # 0.5 m pixels, as pan1.tif
    scene = Scene(str(Path(folder) / "none.tif"), side, side, crs, Affine(0.5, 0, 0, 0, -0.5, 0), (1,), None)
    start = time.perf_counter()
    store = ObjectStore(Path(folder) / "objects.sqlite", model)
    for batch in released(n):
        store.add(batch)
    store.finish(side * side, None, keep_background=False)
    chunks = store.chunks(scene_run._chunk(store, scene_run.OUTLINES, None))
    scene_run._stage(scene, chunks, store, (0.0, 0.0), model, None, scene_run.OUTLINES, None)
    out = Path(folder) / f"objects-{n}.gpkg"
    output.write(output.Batches(store.ordered(), store.scores()[1]), out)
    store.close()
    return {"objects": n, "written": store.staged, "s": round(time.perf_counter() - start, 1),
            "gpkg_mb": round(out.stat().st_size / 2**20), "client_peak_rss_mb": round(peak_rss() / 2**20)}  # fmt: skip


def fresh(function: str, *args) -> dict:
    """Run one measurement in a new Python process (its own peak memory)."""
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import plan; " \
           f"print(json.dumps(plan.{function}(*{args!r})))"  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False, env=env
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> None:
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("section", choices=["plan", "scheduler", "workers", "objects", "scale"])
    parser.add_argument("--tiles", type=int, nargs="+", default=[71, 224], help="scale: tiles a side")
    parser.add_argument(
        "--folder", help="scale: a folder kept between runs (resumes a stopped run; default: temporary)"
    )
    parser.add_argument("--objects", type=int, nargs=2, default=[50_000, 200_000], help="objects: N and 4N")
    parser.add_argument("--size", type=int, default=200_000, help="plan: scene side in px")
    parser.add_argument("--submit-sizes", type=int, nargs=2, default=[20_000, 40_000])
    parser.add_argument(
        "--scheduler-sizes",
        type=int,
        nargs="+",
        default=[63_700, 200_000],
        help="scheduler: scene sides for the model that costs nothing (5,041 and 50,176 tiles)",
    )
    parser.add_argument(
        "--timed",
        type=float,
        nargs=2,
        default=[12_700, 1],
        metavar=("SIDE", "SECONDS"),
        help="scheduler: a scene side (225 tiles) for the model that spends SECONDS a tile",
    )
    parser.add_argument("--sizes", type=int, nargs=2, default=[2048, 4096], help="workers: scene sides")
    parser.add_argument("--model", default="reference", help="workers: reference or an installed model")
    parser.add_argument("--points-per-side", type=int, default=4)
    parser.add_argument("--tile-size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.section == "plan":
            table([fresh("plan", args.size, str(folder))])
            print()
            table([fresh("submit", size, str(folder)) for size in args.submit_sizes])
        elif args.section == "scheduler":
            from geosam.testing import dask_cluster

            runs = [(size, 0.0) for size in args.scheduler_sizes] + [(int(args.timed[0]), args.timed[1])]
            here = Path(__file__).parent  # the workers unpickle Nothing from plan.py
            with dask_cluster(folder, pythonpath=[here]) as cluster:
                file = str(cluster.file)
                table([fresh("submit", size, str(folder), file, seconds) for size, seconds in runs])
        elif args.section == "scale":
            table([fresh("scale", n, args.folder or str(folder)) for n in args.tiles])
        elif args.section == "objects":
            table([fresh("objects", n, str(folder)) for n in args.objects])
        else:
            rows = []
            for size in args.sizes:
                sub = folder / str(size)
                sub.mkdir()
                rows.append(
                    fresh("workers", size, str(sub), args.model, args.points_per_side, args.tile_size)
                )
            table(rows)


if __name__ == "__main__":
    main()
