"""What a small run pays around the model: `geosam segment` on scenes of 1, 4 and 25 tiles, its default
(a scene of up to settings.IN_PROCESS_TILES tiles in this process) against a local Dask cluster (-w 1).

    python benchmarks/startup.py                       # 1, 4 and 25 tiles of 512 px, 16 points a side
    python benchmarks/startup.py --tiles 1 --json startup.json
    python benchmarks/startup.py --cluster-starts 3    # the local cluster alone, against Dask's LocalCluster

The scenes are windows of the NAIP 2020 scene (../shared/data) sized to the tile count. Per scene and
mode: the whole command's seconds (a fresh process: imports, model load, cluster, writing), the run
report's model seconds (the tiles' time in the model) and the difference, the fixed cost a user feels.
--cluster-starts N times geosam's local cluster of 2 workers (the scheduler in a process of its own)
from its start to the answer of a first task, and to its close, against Dask's LocalCluster (the
scheduler in this process), N times each in turn. Not part of the test run; times only compare
within one run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
SCENE = "m_4709963_se_14_1_20200831.tif"
TILE, OVERLAP = 512, 64
MODES = {"default": [], "cluster": ["-w", "1"]}


def crop(tiles: int, folder: Path) -> Path:
    """A window of the scene that ``TileGrid`` cuts into ``tiles`` tiles (a square count: 1, 4, 25...)."""
    side = round(tiles**0.5)
    size = side * (TILE - OVERLAP) + OVERLAP
    out = folder / f"scene{tiles}.tif"
    with rasterio.open(DATA / SCENE) as src:
        window = Window(0, 0, size, size)
        profile = {**src.profile, "width": size, "height": size, "transform": src.window_transform(window)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return out


def timed(arguments: list[str], out: Path) -> tuple[float, dict]:
    """``geosam ARGUMENTS`` in a fresh process: the whole command's seconds and the run report of ``out``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geosam", *arguments], check=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    return seconds, json.loads(out.with_name(f"{out.stem}.report.json").read_text())


def run(scene: Path, mode: list[str], points: int) -> dict:
    out = scene.with_name(f"{scene.stem}-{len(mode)}.gpkg")
    seconds, report = timed(["-q", "segment", str(scene), "-o", str(out), "--overwrite", "--tile-size", str(TILE),
                             "--overlap", str(OVERLAP), "--points-per-side", str(points), *mode], out)  # fmt: skip
    return {"command_s": seconds, "model_s": report["model_s"], "tiles": report["tiles_done"],
            "workers": report["workers"], "objects": report["objects"]}  # fmt: skip


def cluster_starts(rounds: int) -> list[dict]:
    """Seconds to start a 2-worker local cluster, answer one task and close it: geosam's, Dask's LocalCluster."""
    import logging
    from contextlib import contextmanager

    from dask.distributed import Client, LocalCluster

    from geosam.cluster import dask_client

    @contextmanager
    def dasks():
        with LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.CRITICAL
        ) as cluster, Client(cluster) as client:  # fmt: skip
            yield client

    rows = []
    for _ in range(rounds):
        for name, make in (("geosam (scheduler apart)", lambda: dask_client(2)), ("LocalCluster", dasks)):
            started = time.perf_counter()
            with make() as client:
                client.submit(abs, -1).result()
                up = time.perf_counter() - started
            rows.append({"cluster": name, "up_s": up, "closed_s": time.perf_counter() - started})
            print(f"{name:>24}: first answer {up:.2f} s, closed {rows[-1]['closed_s']:.2f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", type=int, nargs="+", default=[1, 4, 25])
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--cluster-starts", type=int, metavar="N", help="time the local cluster alone, N rounds"
    )
    args = parser.parse_args()
    if args.cluster_starts:
        rows = cluster_starts(args.cluster_starts)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    rows = []
    print(f"{'tiles':>5} {'mode':>8} {'command s':>10} {'model s':>8} {'around s':>9} {'objects':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for tiles in args.tiles:
            scene = crop(tiles, Path(tmp))
            for name, mode in MODES.items():
                row = {"mode": name, **run(scene, mode, args.points_per_side)}
                row["around_s"] = row["command_s"] - row["model_s"]
                rows.append(row)
                print(f"{row['tiles']:>5} {name:>8} {row['command_s']:>10.1f} {row['model_s']:>8.1f} "
                      f"{row['around_s']:>9.1f} {row['objects']:>8}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"points_per_side": args.points_per_side, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
