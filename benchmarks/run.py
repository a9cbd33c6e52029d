"""geosam's performance harness: prints a table and writes JSON. Not part of the test run.

    python benchmarks/run.py                       # everything, default sizes
    python benchmarks/run.py --sizes 2048 4096 --points-per-side 8 --json bench.json

Sections:
  model   model-only time per real 1024² tile: encoder, automatic decoding (no I/O, stitching, writing)
  scene   end to end on generated scenes (real imagery, mirrored into N×N px): wall time, Mpx/s, km²/h,
          peak memory of the whole process tree (the CLI and its Dask workers, sampled every 50 ms),
          and in the JSON each process's own peak (the biggest worker's and the client's, from the report)
  overhead the smallest scene with 1 worker, no prompt rounds and the default 32² points
          (``--overhead-points``) against model-only time for the same tiles in one process with the
          same threads: pipeline / model-only is the pipeline's overhead; also against the seconds
          the run's own worker spent in the model (its report's model_s), which the machine's load
          cannot skew between two runs
  rounds  the same run with the default prompt rounds (seams, ``--prompt-rounds``): their extra cost
  workers the smallest scene with 1 and --workers workers (``--points-per-side``)
Ratios are measured in one run: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import psutil
import rasterio

from geosam.testing import mosaic

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
SOURCES = [DATA / "m_4709963_se_14_1_20090818.tif", DATA / "m_4709963_se_14_1_20200831.tif"]


class PeakMemory:
    """Peak summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.root, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_cli(scene: Path, out: Path, points: int, workers: int, *options: str) -> dict:
    """geosam segment as a user runs it, timed, with the process tree's peak memory."""
    command = [
        sys.executable, "-m", "geosam", "-q", "segment", str(scene), "-o", str(out), "--overwrite",
        "--points-per-side", str(points), "-w", str(workers), *options,
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    with PeakMemory(proc.pid) as memory:
        _, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"geosam failed: {err}")
    import geopandas as gpd

    report = json.loads(out.with_name(f"{out.stem}.report.json").read_text())
    return {
        "wall_s": wall,
        "model_s": report["model_s"],
        "peak_rss_mb": memory.peak / 2**20,
        # each process's own peak, at any time; no worker reports where a run reused every tile
        "worker_peak_mb": max(report["peak_rss_bytes"].values(), default=0) / 2**20,
        "client_peak_mb": report["client_peak_rss_bytes"] / 2**20,
        "objects": len(gpd.read_file(out, layer="objects")),
    }


def model_only(scene: Path, points: int, tile_size: int = 1024, overlap: int = 128) -> dict:
    """Encoder and decoding time for every tile of a scene, in this process, no I/O in the timing."""
    import torch

    from geosam.georef import open_scene
    from geosam.models import AutomaticParams, ModelSpec, load_model
    from geosam.models.automatic import generate
    from geosam.tiling import TileGrid, read_tile

    torch.set_num_threads(os.cpu_count() or 1)
    model = load_model(ModelSpec(params=AutomaticParams(points_per_side=points)))
    scene_ = open_scene(scene)
    grid = TileGrid(scene_.width, scene_.height, tile_size, overlap)
    images = [read_tile(scene_, tile, grid.size) for tile in grid]
    encoder = automatic = 0.0
    objects = 0
    for image in images:
        start = time.perf_counter()
        model.embed(image.image)
        encoder += time.perf_counter() - start
        start = time.perf_counter()
        objects += len(generate(model, image.image, image.valid, model.params))
        automatic += time.perf_counter() - start
    n = len(images)
    return {"tiles": n, "encoder_s_per_tile": encoder / n, "automatic_s_per_tile": automatic / n,
            "model_only_s": automatic, "masks": objects}  # fmt: skip


def km2(scene: Path) -> float:
    with rasterio.open(scene) as ds:
        return ds.width * ds.height * abs(ds.transform.a * ds.transform.e) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--model-points", type=int, nargs="+", default=[8, 16, 32],
                        help="points per side for the model-only tile timings")  # fmt: skip
    parser.add_argument("--overhead-points", type=int, default=32,
                        help="points per side for the overhead and prompt-round rows")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="Dask workers for the scene runs")
    parser.add_argument("--json", type=Path, default=Path("benchmark.json"))
    args = parser.parse_args()
    import torch

    import geosam

    report: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "memory_gb": psutil.virtual_memory().total / 2**30},
        "versions": {"geosam": geosam.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "parameters": vars(args) | {"json": str(args.json)},
    }  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tile = mosaic(tmp / "tile.tif", 1024, SOURCES)
        report["model"] = {str(p): model_only(tile, p) for p in args.model_points}
        for p, r in report["model"].items():
            rows.append(
                f"model   1024² tile, {p}² points: encoder {r['encoder_s_per_tile']:.2f} s, "
                f"automatic (encoder + decoding) {r['automatic_s_per_tile']:.2f} s, {r['masks']} masks"
            )
        report["scene"] = {}
        for size in args.sizes:
            scene = mosaic(tmp / f"scene_{size}.tif", size, SOURCES)
            e2e = run_cli(scene, tmp / f"out_{size}.gpkg", args.points_per_side, args.workers)
            e2e |= {
                "mpx_per_s": size * size / 1e6 / e2e["wall_s"],
                "km2_per_h": km2(scene) / e2e["wall_s"] * 3600,
            }
            report["scene"][str(size)] = e2e
            rows.append(
                f"scene   {size}² px, {args.workers} workers: {e2e['wall_s']:.0f} s, {e2e['mpx_per_s']:.3f} Mpx/s, "
                f"{e2e['km2_per_h']:.1f} km²/h, peak {e2e['peak_rss_mb']:.0f} MB, {e2e['objects']} objects"
            )
        size = min(args.sizes)
        scene = tmp / f"scene_{size}.tif"
        one = run_cli(scene, tmp / "one.gpkg", args.points_per_side, 1)
        points = args.overhead_points
        plain = run_cli(scene, tmp / "plain.gpkg", points, 1, "--prompt-rounds", "0")
        alone = model_only(scene, points)
        rounds = run_cli(scene, tmp / "rounds.gpkg", points, 1)
        report["overhead"] = {"size": size, "points_per_side": points, "pipeline_1_worker_s": plain["wall_s"],
                              "model_only_s": alone["model_only_s"],
                              "ratio": plain["wall_s"] / alone["model_only_s"], "in_run_model_s": plain["model_s"],
                              "in_run_ratio": plain["wall_s"] / plain["model_s"]}  # fmt: skip
        rows.append(
            f"overhead {size}² px, {points}² points: pipeline (1 worker, no prompt rounds) {plain['wall_s']:.0f} s / "
            f"model-only {alone['model_only_s']:.0f} s = {report['overhead']['ratio']:.2f}; "
            f"/ its worker's time in the model {plain['model_s']:.0f} s = {report['overhead']['in_run_ratio']:.2f}"
        )
        report["rounds"] = {"size": size, "points_per_side": points, "with_s": rounds["wall_s"],
                            "without_s": plain["wall_s"], "ratio": rounds["wall_s"] / plain["wall_s"]}  # fmt: skip
        rows.append(
            f"rounds  {size}² px, {points}² points, 1 worker: default prompt rounds {rounds['wall_s']:.0f} s / none "
            f"{plain['wall_s']:.0f} s = {report['rounds']['ratio']:.2f}"
        )
        many = report["scene"][str(size)]
        report["workers"] = {
            "size": size,
            "1": one,
            str(args.workers): many,
            "speedup": one["wall_s"] / many["wall_s"],
        }
        rows.append(
            f"workers {size}² px: 1 worker {one['wall_s']:.0f} s, {args.workers} workers {many['wall_s']:.0f} s "
            f"(x{report['workers']['speedup']:.2f}); peak {one['peak_rss_mb']:.0f} / {many['peak_rss_mb']:.0f} MB"
        )
    if len(args.sizes) > 1:
        small, big = report["scene"][str(min(args.sizes))], report["scene"][str(max(args.sizes))]
        report["memory_ratio"] = big["peak_rss_mb"] / small["peak_rss_mb"]
        rows.append(f"memory  peak {max(args.sizes)}² / {min(args.sizes)}²: x{report['memory_ratio']:.2f}")
    args.json.write_text(json.dumps(report, indent=2))
    print("\n".join(rows))
    print(f"(JSON: {args.json})")


if __name__ == "__main__":
    main()
