"""Prompt-mode latency: one prompt answered once its window's embedding exists. Not part of the test run.

    PYTHONPATH=$PWD python benchmarks/prompts.py                 # pix4d drone scene, 20 repeats
    PYTHONPATH=$PWD python benchmarks/prompts.py --repeats 50 --scene PATH

Prints, per prompt kind, the wall time and the CPU time of this process for one ``Session.predict``
call (decoder, mask upscaling, polygon, georeferencing, frame), with the embedding in memory; the
time to embed the window (encoder) and to load it from the disk cache; and, for box prompts, the
IoU of each polygon with the raw model's mask on the same window. The row 'model.prompt only' is
the model's share (decoder and mask upscaling); the rest of a call is geosam's. CPU time is what the call costs
on an otherwise idle core; wall time includes waiting for a core on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.features import rasterize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geosam.cache import EmbeddingCache  # noqa: E402 - after ROOT is on the path
from geosam.session import Session  # noqa: E402

SCENE = ROOT / ".." / "shared" / "data" / "pix4d_alpha_nodata.tif"
BOXES = [(413, 275, 443, 300), (232, 420, 300, 490), (335, 268, 370, 302)]  # pixel boxes on pix4d
POINTS = [(428.5, 287.5), (265.5, 455.5), (352.5, 285.5)]


def timed(call) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def row(name: str, samples: list[tuple[float, float]]) -> str:
    walls = sorted(1000 * s[0] for s in samples)
    cpus = sorted(1000 * s[1] for s in samples)
    p90 = walls[min(len(walls) - 1, int(0.9 * len(walls)))]
    return (
        f"| {name:<24} | {len(samples):>3} | {statistics.median(walls):>8.1f} | {p90:>8.1f} | "
        f"{statistics.median(cpus):>8.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cache = EmbeddingCache(folder)
        session = Session(args.scene, cache=cache)
        t = session.scene.transform

        def box(b):
            (x0, y0), (x1, y1) = t @ b[:2], t @ b[2:]
            return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

        encode = timed(lambda: session.predict(points=[t @ POINTS[0]]))
        session._embeddings.clear()  # the next call finds the embedding on disk only
        from_disk = timed(lambda: session.predict(points=[t @ POINTS[0]]))
        results = {"point (1 positive)": [], "points (2 pos + 1 neg)": [], "box": [], "box + point": []}
        for i in range(args.repeats):
            k = i % 3
            results["point (1 positive)"].append(timed(lambda k=k: session.predict(points=[t @ POINTS[k]])))
            results["points (2 pos + 1 neg)"].append(
                timed(
                    lambda k=k: session.predict(
                        points=[t @ POINTS[k], t @ POINTS[k], t @ POINTS[k - 1]], labels=[1, 1, 0]
                    )
                )
            )
            results["box"].append(timed(lambda k=k: session.predict(boxes=[box(BOXES[k])])))
            results["box + point"].append(
                timed(lambda k=k: session.predict(points=[t @ POINTS[k]], boxes=[box(BOXES[k])]))
            )
        embedding, _ = next(iter(session._embeddings.values()))
        point = np.array([[POINTS[0][0] - 0.5, POINTS[0][1] - 0.5]], np.float32)
        results["model.prompt only (point)"] = [
            timed(lambda: session.model.prompt(embedding, point, np.array([1]))) for _ in range(args.repeats)
        ]
        frame = session.predict(boxes=[box(b) for b in BOXES])
        with rasterio.open(args.scene) as ds:
            valid = ds.dataset_mask() > 0
            image = np.where(valid[..., None], ds.read([1, 2, 3]).transpose(1, 2, 0), 0).astype(np.uint8)
        model = session.model
        embedding = model.embed(image)
        ious = []
        for b, geometry in zip(BOXES, frame.geometry, strict=True):
            low, _ = model.decode(
                embedding, boxes=np.array([[b[0], b[1], b[2] - 1, b[3] - 1]], np.float32), multimask=False
            )
            raw = (model.upscale(embedding, low[0]) > 0)[0].numpy() & valid
            ours = rasterize([geometry], out_shape=valid.shape, transform=t).astype(bool)
            ious.append((raw & ours).sum() / (raw | ours).sum())
    print(
        f"scene {args.scene.name}: {session.scene.width}×{session.scene.height} px; torch threads "
        f"{torch.get_num_threads()} (encoder and decoder); cores {os.cpu_count()}; load {os.getloadavg()[0]:.1f}"
    )
    print("| prompt                   |   n | wall ms  | p90 ms   | CPU ms   |")
    print("|---|---|---|---|---|")
    print(row("embed window (encoder)", [encode]))
    print(row("embedding from disk cache", [from_disk]))
    for name, samples in results.items():
        print(row(name, samples))
    print("box IoU vs raw model: " + ", ".join(f"{v:.4f}" for v in ious))


if __name__ == "__main__":
    main()
