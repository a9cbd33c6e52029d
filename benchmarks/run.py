"""geosam's performance harness: prints a table and writes JSON. Not part of the test run.

    python benchmarks/run.py                       # everything, default sizes
    python benchmarks/run.py --sizes 2048 4096 --points-per-side 8 --json bench.json

Sections:
  model   model-only time per real 1024² tile: encoder, automatic decoding (no I/O, stitching, writing)
  scene   end to end on generated scenes (real imagery, mirrored into N×N px): wall time, Mpx/s, km²/h,
          peak memory of the whole process tree (the CLI and its Dask workers, sampled every 50 ms),
          and model-only time for the same tiles, so pipeline / model-only is the pipeline's overhead
  workers the same scene with 1 and 2 workers
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

import numpy as np
import psutil
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
SOURCE = DATA / "m_4709963_se_14_1_20200831.tif"


def mosaic(path: Path, size: int, source: Path = SOURCE) -> Path:
    """A size×size RGB GeoTIFF of real imagery: the source mirrored so blocks join without edges."""
    with rasterio.open(source) as src:
        rgb = src.read([1, 2, 3])
        profile = dict(crs=src.crs, transform=src.transform)
    block = np.concatenate([rgb, rgb[:, ::-1]], axis=1)
    block = np.concatenate([block, block[:, :, ::-1]], axis=2)
    bh, bw = block.shape[1:]
    with rasterio.open(
        path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
        tiled=True, blockxsize=512, blockysize=512, **profile,
    ) as dst:  # fmt: skip
        for y in range(0, size, bh):
            for x in range(0, size, bw):
                part = block[:, : min(bh, size - y), : min(bw, size - x)]
                dst.write(part, window=Window(x, y, part.shape[2], part.shape[1]))
    return path


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

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_cli(scene: Path, out: Path, points: int, workers: int) -> dict:
    """geosam segment as a user runs it, timed, with the process tree's peak memory."""
    command = [
        sys.executable, "-m", "geosam", "-q", "segment", str(scene), "-o", str(out), "--overwrite",
        "--points-per-side", str(points), "-w", str(workers),
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    with PeakMemory(proc.pid) as memory:
        _, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"geosam failed: {err}")
    import geopandas as gpd

    return {"wall_s": wall, "peak_rss_mb": memory.peak / 2**20, "objects": len(gpd.read_file(out))}


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
        tile = mosaic(tmp / "tile.tif", 1024)
        report["model"] = {str(p): model_only(tile, p) for p in args.model_points}
        for p, r in report["model"].items():
            rows.append(f"model   1024² tile, {p}² points: encoder {r['encoder_s_per_tile']:.2f} s, "
                        f"automatic {r['automatic_s_per_tile']:.2f} s, {r['masks']} masks")  # fmt: skip
        report["scene"] = {}
        for size in args.sizes:
            scene = mosaic(tmp / f"scene_{size}.tif", size)
            e2e = run_cli(scene, tmp / f"out_{size}.gpkg", args.points_per_side, 1)
            alone = model_only(scene, args.points_per_side)
            e2e |= {"mpx_per_s": size * size / 1e6 / e2e["wall_s"], "km2_per_h": km2(scene) / e2e["wall_s"] * 3600,
                    "model_only_s": alone["model_only_s"], "overhead": e2e["wall_s"] / alone["model_only_s"]}  # fmt: skip
            report["scene"][str(size)] = e2e
            rows.append(f"scene   {size}² px, 1 worker: {e2e['wall_s']:.0f} s, {e2e['mpx_per_s']:.3f} Mpx/s, "
                        f"{e2e['km2_per_h']:.1f} km²/h, peak {e2e['peak_rss_mb']:.0f} MB, "
                        f"{e2e['objects']} objects, pipeline/model-only {e2e['overhead']:.2f}")  # fmt: skip
        size = args.sizes[min(1, len(args.sizes) - 1)]
        scene = tmp / f"scene_{size}.tif"
        two = run_cli(scene, tmp / "two.gpkg", args.points_per_side, 2)
        one = report["scene"][str(size)]
        report["workers"] = {"size": size, "1": one, "2": two, "speedup": one["wall_s"] / two["wall_s"]}
        rows.append(f"workers {size}² px: 1 worker {one['wall_s']:.0f} s, 2 workers {two['wall_s']:.0f} s "
                    f"(x{report['workers']['speedup']:.2f}), peak {one['peak_rss_mb']:.0f} / {two['peak_rss_mb']:.0f} MB")  # fmt: skip
    if len(args.sizes) > 1:
        small, big = report["scene"][str(min(args.sizes))], report["scene"][str(max(args.sizes))]
        report["memory_ratio"] = big["peak_rss_mb"] / small["peak_rss_mb"]
        rows.append(f"memory  peak {max(args.sizes)}² / {min(args.sizes)}²: x{report['memory_ratio']:.2f}")
    args.json.write_text(json.dumps(report, indent=2))
    print("\n".join(rows))
    print(f"(JSON: {args.json})")


if __name__ == "__main__":
    main()
