"""The QGIS plugin's overhead: Segment scene through Processing against `geosam segment` on the same
scene and settings. Not part of the test run; needs QGIS's Python (Debian's python3-qgis).

    PYTHONPATH=$PWD python benchmarks/qgis.py                   # a 512 × 512 crop of pix4d, 2 repeats
    PYTHONPATH=$PWD python benchmarks/qgis.py --repeats 3 --points-per-side 16

Runs, alternately, the command line (a subprocess, as a user would) and ``processing.run`` of
geosam:segment in QGIS (tests/qgis_processing.py: the plugin loaded, geosam found through
$GEOSAM_EXECUTABLE), each with a fresh output and work folder, and prints the wall time of each:
the command line's whole run, and Processing's ``processing.run`` (QGIS's own start-up, the same for
any algorithm, apart). The overhead is the median Processing time over the median command-line time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rasterio
import rasterio.windows
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / ".." / "shared" / "data" / "pix4d_alpha_nodata.tif"
QGIS_PYTHON = "/usr/bin/python3"


def crop(out: Path, size: int) -> Path:
    with rasterio.open(SCENE) as src:
        window = rasterio.windows.Window(100, 100, size, size)
        moved = src.transform @ Affine.translation(100, 100)
        with rasterio.open(
            out, "w", **{**src.profile, "width": size, "height": size, "transform": moved}
        ) as dst:
            dst.write(src.read(window=window))
            dst.colorinterp = src.colorinterp
    return out


def executable(folder: Path) -> Path:
    """A geosam executable for this checkout, in this environment (as tests/test_qgis_plugin.py makes)."""
    path = folder / "geosam"
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom geosam.cli import main\n"
        'if __name__ == "__main__":\n    main(prog_name="geosam")\n'
    )
    path.chmod(0o755)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="crop size in pixels (one tile)")
    parser.add_argument("--points-per-side", type=int, default=8)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="geosam-qgis-bench-"))
    scene = crop(folder / "scene.tif", args.size)
    geosam = executable(folder)
    settings = ["--points-per-side", str(args.points_per_side), "--tile-size", str(args.size)]
    runtime = folder / "xdg"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime), "GEOSAM_EXECUTABLE": str(geosam)}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(sys.prefix))
    cli, qgis = [], []
    for i in range(args.repeats):
        started = time.monotonic()
        out = folder / f"cli{i}.gpkg"
        subprocess.run(
            [str(geosam), "-q", "segment", str(scene), "-o", str(out), *settings], env=env, check=True
        )
        cli.append(time.monotonic() - started)
        job = folder / f"job{i}.json"
        job.write_text(json.dumps({"plugins": str(ROOT / "qgis_plugin"), "algorithm": "geosam:segment",
            "parameters": {"INPUT": str(scene), "OUTPUT": str(folder / f"qgis{i}.gpkg"), "POINTS_PER_SIDE":
            args.points_per_side, "TILE_SIZE": args.size, "WORK_DIR": str(folder / f"work{i}")}}))  # fmt: skip
        done = subprocess.run([QGIS_PYTHON, str(ROOT / "tests" / "qgis_processing.py"), str(job)], env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["error"]:
            sys.exit(f"qgis.py: error: {result['error']}")
        qgis.append(result["seconds"])
    print(f"scene: {args.size} × {args.size} px of {SCENE.name}, {' '.join(settings)}")
    print(f"{'run':<28} {'median s':>9}  each")
    print(f"{'geosam segment (CLI)':<28} {statistics.median(cli):9.1f}  {' '.join(f'{s:.1f}' for s in cli)}")
    print(
        f"{'processing.run (QGIS)':<28} {statistics.median(qgis):9.1f}  {' '.join(f'{s:.1f}' for s in qgis)}"
    )
    print(f"overhead: {100 * (statistics.median(qgis) / statistics.median(cli) - 1):+.1f} %")


if __name__ == "__main__":
    main()
