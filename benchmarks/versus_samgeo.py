"""geosam side by side with segment-geospatial (samgeo): one scene, the same weights, the same settings.

    python benchmarks/versus_samgeo.py --size 4096                  # table + versus_samgeo.json
    python benchmarks/versus_samgeo.py --size 4096 --tile-size 2048 # 9 tiles instead of 25
    python benchmarks/versus_samgeo.py --size 2048 --workers 2 1    # geosam with 2 workers, then 1

samgeo lives in a virtual environment of its own (never a geosam dependency). Its torchvision must
match its torch: PyPI's Linux torchvision wheels link the CUDA build of torch, so that environment
takes the matching pair from PyPI (CUDA builds; on a machine without a GPU they run on the CPU):

    python3.11 -m venv /tmp/samgeo-venv
    /tmp/samgeo-venv/bin/pip install torch==2.13.0 torchvision==0.28.0 segment-geospatial==1.4.2

(where a local CPU build of torch 2.13.0 is preferred by pip, add ``-c`` a constraints file with
``torch!=2.13.0+cpu``); ``--samgeo-python`` names another environment's interpreter.

What runs, each tool as its own subprocess, one after the other, peak memory sampled for its whole
process tree (``PeakMemory`` of benchmarks/run.py: the summed RSS of the process and its children):
  scene    a size × size px GeoTIFF of real imagery (``geosam.testing.mosaic`` of ../shared/data)
  weights  SAM ViT-B, randomly initialised (seeded) and saved once as a state dict; both tools
           load the same file, so both spend the same compute without a 375 MB download
  geosam   ``geosam.scene_run.segment_scene`` on a local Dask cluster (``--workers`` processes, default 1,
           sharing one torch thread per core), then ``geosam.write`` to a GeoPackage
  samgeo   its documented path for a large GeoTIFF: ``SamGeo(model_type="vit_b", checkpoint=...)``,
           ``generate(scene, mask_tif, batch=True)`` (tile by tile into a mask GeoTIFF), then
           ``tiff_to_vector(mask_tif, out.gpkg)``; one process, one torch thread per core
Both see the same tiles: samgeo's batch mode reads windows of ``batch_sample_size + 2 × bound`` px
at a stride of ``batch_sample_size``, so ``batch_sample_size = tile size - overlap`` and
``bound = overlap / 2`` give geosam's grid (1024 px windows overlapping by 128 px: 25 tiles on
4096² px), and both run the encoder once per tile and the decoder on the same ``points_per_side``²
prompts per tile, ``points_per_batch`` at a time, with the same thresholds. A randomly initialised
SAM has near-zero logits: its stability scores are 0 and its predicted IoUs scatter around 0.03,
so the defaults keep masks by predicted IoU only (``--pred-iou-thresh 0.02``,
``--stability-thresh 0``). Objects are what each writes: geosam's stitched objects; samgeo's
batch mode writes the union of its masks, so its polygons are connected foreground regions.
Ratios are measured in one run: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
SOURCES = [DATA / "m_4709963_se_14_1_20090818.tif", DATA / "m_4709963_se_14_1_20200831.tif"]
SAMGEO_PYTHON = Path("/tmp/samgeo-venv/bin/python")
WEIGHTS = Path.home() / ".cache" / "geosam" / "benchmarks" / "sam_vit_b_random_seed0.pt"
SEED = 0


@dataclass(frozen=True)
class Settings:
    """What both tools are run with."""

    tile_size: int = 1024
    overlap: int = 128
    points_per_side: int = 8
    points_per_batch: int = 16
    pred_iou_thresh: float = 0.02
    stability_score_thresh: float = 0.0
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    threads: int = os.cpu_count() or 1  # torch threads of each tool (geosam: cores / workers per worker)
    workers: int = 1  # geosam's Dask workers (its default on the CPU: one, with a torch thread per core)


def random_vit_b(path: Path) -> Path:
    """SAM ViT-B with seeded random weights, saved once as a state dict at ``path``."""
    if path.exists():
        return path
    import torch

    from geosam.models._mobile_sam import import_mobile_sam

    build_sam, _ = import_mobile_sam()
    torch.manual_seed(SEED)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(build_sam.build_sam_vit_b().state_dict(), tmp)
    tmp.replace(path)
    return path


def run_geosam(scene: str, out: str, weights: str, settings: Settings) -> dict:
    """geosam on the scene (in a subprocess of the comparison)."""
    # imported by module name, so that Dask workers load the class instead of a pickled copy
    import geosam
    from geosam.models import AutomaticParams, ModelSpec
    from geosam.scene_run import segment_scene

    params = AutomaticParams(
        points_per_side=settings.points_per_side, points_per_batch=settings.points_per_batch,
        pred_iou_thresh=settings.pred_iou_thresh, stability_score_thresh=settings.stability_score_thresh,
        stability_score_offset=settings.stability_score_offset, box_nms_thresh=settings.box_nms_thresh,
    )  # fmt: skip
    # what `geosam segment --checkpoint PATH --architecture vit_b --backend torch` runs
    source = ModelSpec("sam_vit_b_random", params=params, checkpoint=Path(weights), architecture="vit_b",
                       backend="torch")  # fmt: skip
    frame, report = segment_scene(
        scene, model=source, tile_size=settings.tile_size, overlap=settings.overlap,
        workers=settings.workers, prompt_rounds=0,  # samgeo asks no neighbour again
    )  # fmt: skip
    geosam.write(frame, Path(out))
    from geosam.report import peak_rss

    return {"tiles": report.tiles_planned, "objects": len(frame), "client_peak_mib": peak_rss() / 2**20,
            "worker_peak_mib": max(report.peak_rss_bytes.values(), default=0) / 2**20}  # fmt: skip


def run_samgeo(scene: str, out: str, weights: str, settings: Settings) -> dict:
    """samgeo on the scene, as its documentation does for a large GeoTIFF (in samgeo's environment)."""
    import pyogrio
    import rasterio
    import torch
    from samgeo import SamGeo
    from samgeo.common import calculate_sample_grid

    torch.set_num_threads(settings.threads)
    s = settings
    sam = SamGeo(
        model_type="vit_b", checkpoint=weights, device="cpu",
        sam_kwargs={
            "points_per_side": s.points_per_side, "points_per_batch": s.points_per_batch,
            "pred_iou_thresh": s.pred_iou_thresh, "stability_score_thresh": s.stability_score_thresh,
            "stability_score_offset": s.stability_score_offset, "box_nms_thresh": s.box_nms_thresh,
        },
    )  # fmt: skip
    mask = str(Path(out).with_suffix(".mask.tif"))
    sample = s.tile_size - s.overlap
    sam.generate(scene, mask, batch=True, batch_sample_size=(sample, sample), bound=s.overlap // 2)
    sam.tiff_to_vector(mask, out)
    with rasterio.open(scene) as ds:
        tiles = len(calculate_sample_grid(ds.height, ds.width, sample, sample, s.overlap // 2))
    return {"tiles": tiles, "objects": pyogrio.read_info(out)["features"]}


def versions(python: Path, packages: list[str]) -> dict:
    """Versions of ``packages`` in the environment of ``python``, and its Python's."""
    code = (
        "import json, platform, importlib.metadata as m, torch\n"
        f"v = {{p: m.version(p) for p in {packages!r}}}\n"
        "v['torch'], v['python'] = torch.__version__, platform.python_version()\n"
        "print(json.dumps(v))"
    )
    return json.loads(
        subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    )


def import_rss_mb(python: Path) -> float:
    """Peak resident memory of a fresh interpreter of ``python`` after ``import torch`` (MiB).

    Read from /proc (VmHWM starts afresh with the new program), not from ``ru_maxrss``, which
    keeps the peak of the forked parent across ``exec``.
    """
    code = "import re, torch; print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out) / 1024


def measure(tool: str, python: Path, scene: Path, out: Path, weights: Path, settings: Settings) -> dict:
    """One tool on the scene in its own process tree: wall time, peak summed RSS, what it wrote."""
    from run import PeakMemory

    result = out.with_suffix(".result.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = str(
        settings.threads if tool == "samgeo" else settings.threads // settings.workers
    )
    if tool == "geosam":
        env["PYTHONPATH"] = str(ROOT)
    command = [str(python), __file__, tool, str(scene), str(out), str(weights), str(result),
               json.dumps(asdict(settings))]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakMemory(proc.pid) as memory:
        log, _ = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{tool} failed (exit {proc.returncode}):\n{log[-3000:]}")
    return {"wall_s": wall, "peak_rss_gb": memory.peak / 2**30} | json.loads(result.read_text())


def compare(args: argparse.Namespace) -> None:
    import tempfile

    import psutil
    import torch

    import geosam
    from geosam.testing import mosaic

    settings = Settings(
        tile_size=args.tile_size, overlap=args.overlap, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_thresh,
        workers=args.workers[0],
    )  # fmt: skip
    weights = random_vit_b(args.weights)
    report: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "memory_gb": psutil.virtual_memory().total / 2**30},
        "versions": {
            "geosam": {"geosam": geosam.__version__, "torch": torch.__version__, "python": platform.python_version()},
            "samgeo": versions(args.samgeo_python, ["segment-geospatial", "segment-anything", "torch", "torchvision"]),
        },
        "parameters": {"size": args.size, "weights": str(weights), "seed": SEED, "architecture": "vit_b",
                       "samgeo_python": str(args.samgeo_python), "geosam_workers": args.workers}
                      | asdict(settings),
        "torch_import_rss_mb": {"geosam": import_rss_mb(Path(sys.executable)),
                                "samgeo": import_rss_mb(args.samgeo_python)},
    }  # fmt: skip
    runs = report["runs"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scene = mosaic(Path(tmp) / f"scene_{args.size}.tif", args.size, SOURCES)
        plan = [
            (f"geosam -w {w}", "geosam", Path(sys.executable), replace(settings, workers=w))
            for w in args.workers
        ]
        for name, tool, python, run in [*plan, ("samgeo", "samgeo", args.samgeo_python, settings)]:
            out = Path(tmp) / f"{name.replace(' ', '')}.gpkg"
            runs[name] = measure(tool, python, scene, out, weights, run)
            args.json.write_text(json.dumps(report, indent=2))  # what is done so far, should a later run fail
            print(f"{name}: {runs[name]}", file=sys.stderr, flush=True)
    samgeo = runs["samgeo"]
    report["ratios"] = {
        name: {"wall": r["wall_s"] / samgeo["wall_s"], "peak_memory": r["peak_rss_gb"] / samgeo["peak_rss_gb"]}
        for name, r in runs.items() if name != "samgeo"
    }  # fmt: skip
    args.json.write_text(json.dumps(report, indent=2))
    print(f"{args.size}² px scene, SAM ViT-B (random weights), {settings.points_per_side}² points per tile, "
          f"{settings.threads} torch threads per tool")  # fmt: skip
    print(
        f"{'':12} {'wall s':>8} {'peak GiB':>8} {'tiles':>6} {'objects':>8} {'wall ratio':>11} {'memory ratio':>13}"
    )
    for name, r in runs.items():
        ratio = report["ratios"].get(name)
        shown = f"{ratio['wall']:11.2f} {ratio['peak_memory']:13.2f}" if ratio else f"{'':11} {'':13}"
        print(
            f"{name:12} {r['wall_s']:8.0f} {r['peak_rss_gb']:8.2f} {r['tiles']:6d} {r['objects']:8d} {shown}"
        )
    print(f"(ratios: geosam / samgeo; JSON: {args.json})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("geosam", "samgeo"):  # one tool's run, started by compare
        tool, scene, out, weights, result, settings = sys.argv[1:]
        run_tool = run_geosam if tool == "geosam" else run_samgeo
        outcome = run_tool(scene, out, weights, Settings(**json.loads(settings)))
        Path(result).write_text(json.dumps(outcome))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096, help="scene size in pixels (square)")
    parser.add_argument(
        "--tile-size", type=int, default=Settings.tile_size, help="tile (window) size in pixels"
    )
    parser.add_argument("--overlap", type=int, default=Settings.overlap, help="overlap in pixels (even)")
    parser.add_argument("--points-per-side", type=int, default=Settings.points_per_side)
    parser.add_argument("--points-per-batch", type=int, default=Settings.points_per_batch)
    parser.add_argument("--pred-iou-thresh", type=float, default=Settings.pred_iou_thresh)
    parser.add_argument("--stability-thresh", type=float, default=Settings.stability_score_thresh)
    parser.add_argument("--workers", type=int, nargs="+", default=[Settings.workers],
                        help="geosam's Dask workers (several: one geosam run each)")  # fmt: skip
    parser.add_argument(
        "--weights", type=Path, default=WEIGHTS, help="the random ViT-B state dict (made once)"
    )
    parser.add_argument("--samgeo-python", type=Path, default=SAMGEO_PYTHON)
    parser.add_argument("--json", type=Path, default=Path("versus_samgeo.json"))
    compare(parser.parse_args())


if __name__ == "__main__":
    main()
