"""The model on a CUDA GPU: time a tile and km²/h of one GPU process. Not part of the test run.

    python benchmarks/gpu.py [--tiles 16] [--points-per-side 32] [--json gpu.json]

Tiles: 1024² crops of a NAIP mosaic (geosam.testing.mosaic of ../shared/data, as benchmarks/run.py).
Rows, in this process: MobileSAM (the default model) in fp32, fp16 and bf16; SAM ViT-B in fp16 and
fp32 with benchmarks/versus_samgeo.py's seeded random weights (none can be fetched here): its masks
mean nothing, so its decoding time is MobileSAM's (the same mask decoder) and only its encoder is its
own. Columns: the encoder's
seconds a tile alone and in calls of four tiles (``embed_many``, as GPU tasks run), automatic mode's
decoding a tile (``points-per-side``² prompts), the GPU's peak memory, and km²/h at 1 m of one
process that encodes in fours and decodes one tile after another. The whole pipeline on a GPU
(workers, stitching, writing) is ``python benchmarks/seams.py --device cuda``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from versus_samgeo import SOURCES, WEIGHTS, random_vit_b

from geosam.georef import open_scene
from geosam.models import AutomaticParams, ModelSpec, load_model
from geosam.models.automatic import generate
from geosam.testing import mosaic
from geosam.tiling import TileGrid, read_tile

CORE_MPX = 896**2 / 1e6  # new pixels a 1024² tile adds at 128 px overlap


def _timed(call) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def row(spec: ModelSpec, tiles: list, decode: bool) -> dict:
    """Encoder seconds a tile (alone, in fours), decoding seconds a tile, the GPU's peak memory."""
    torch.cuda.reset_peak_memory_stats()
    model = load_model(spec)
    images = [tile.image for tile in tiles]
    model.embed_many(images[:4])  # warm-up: kernels chosen, memory pooled
    alone = _timed(lambda: [model.embed(image) for image in images]) / len(images)
    fours = _timed(lambda: [model.embed_many(images[i : i + 4]) for i in range(0, len(images), 4)])
    result = {"encoder_s": alone, "encoder_4_s": fours / len(images)}
    if decode:
        embeddings = [model.embed(image) for image in images]
        generate(model, images[0], tiles[0].valid, spec.params, embeddings[0])  # warm-up
        masks = []
        seconds = _timed(
            lambda: masks.extend(
                generate(model, t.image, t.valid, spec.params, e)
                for t, e in zip(tiles, embeddings, strict=True)
            )
        )
        result |= {"decode_s": seconds / len(tiles), "masks": sum(len(m) for m in masks) / len(tiles)}
    return result | {"gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", type=int, default=16, help="1024² tiles (a multiple of 4)")
    parser.add_argument("--points-per-side", type=int, default=AutomaticParams().points_per_side)
    parser.add_argument("--json", type=Path, default=Path("gpu.json"))
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    params = AutomaticParams(points_per_side=args.points_per_side)
    with tempfile.TemporaryDirectory() as folder:
        side = 896 * (int(args.tiles**0.5) + 1) + 128
        scene = open_scene(mosaic(Path(folder) / "mosaic.tif", side, SOURCES))
        grid = TileGrid(scene.width, scene.height, 1024, 128)
        tiles = [read_tile(scene, tile, grid.size) for tile in list(grid)[: args.tiles]]
        vit_b = random_vit_b(WEIGHTS)  # benchmarks/versus_samgeo.py's, made once
        runs = [("mobile_sam", precision, ModelSpec(device="cuda", params=params, precision=precision))
                for precision in ("fp32", "fp16", "bf16")]  # fmt: skip
        runs += [("vit_b (random)", precision, ModelSpec(device="cuda", params=params, precision=precision,
                  checkpoint=vit_b, backend="torch")) for precision in ("fp16", "fp32")]  # fmt: skip
        rows = []
        for name, precision, spec in runs:
            rows.append({"model": name, "precision": precision, **row(spec, tiles, name == "mobile_sam")})
            print(rows[-1], flush=True)
            torch.cuda.empty_cache()  # the model is gone: the next row's peak is its own
    decode = {r["precision"]: r["decode_s"] for r in rows if "decode_s" in r}
    print(f"\n{len(tiles)} tiles of 1024², {args.points_per_side}² points")
    print(f"{'model':<15} {'precision':<9} {'encoder s':>9} {'in fours':>9} {'decode s':>9} {'GPU MiB':>8} "
          f"{'km²/h':>7}")  # fmt: skip
    for r in rows:
        seconds = r["encoder_4_s"] + r.get("decode_s", decode.get(r["precision"], decode["fp32"]))
        r["km2_per_h"] = CORE_MPX / seconds * 3600
        print(f"{r['model']:<15} {r['precision']:<9} {r['encoder_s']:>9.4f} {r['encoder_4_s']:>9.4f} "
              f"{r.get('decode_s', float('nan')):>9.3f} {r['gpu_peak_mb']:>8.0f} {r['km2_per_h']:>7.0f}")  # fmt: skip
    args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
