"""On a CUDA GPU: the same model and pipeline as on CPU, in half precision and with batched tiles.

Skipped where torch sees no CUDA device; run whenever one is there (``pytest -m gpu``).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from geosam.georef import open_scene
from geosam.models import AutomaticParams, ModelSpec, load_model
from geosam.scene_run import segment_scene
from geosam.tiling import TileGrid, read_tile

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch"),
]

SPEC = ModelSpec("mobile_sam", device="cuda", params=AutomaticParams(points_per_side=16), backend="torch")


def _tiles(data, n: int) -> list[np.ndarray]:
    scene = open_scene(data / "m_4709963_se_14_1_20200831.tif")
    grid = TileGrid(scene.width, scene.height, 1024, 128)
    return [read_tile(scene, tile, grid.size).image for tile in list(grid)[:n]]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_embeddings_match_cpu(model_installed, data, precision):
    (image,) = _tiles(data, 1)
    cpu = load_model(dataclasses.replace(SPEC, device="cpu")).embed(image).features
    gpu = load_model(dataclasses.replace(SPEC, precision=precision)).embed(image).features.cpu()
    if precision == "fp32":
        assert (gpu - cpu).abs().max() < 1e-2
    cosine = (gpu * cpu).sum() / (gpu.norm() * cpu.norm())
    assert cosine > 0.99


def test_cuda_encoder_batches_tiles(model_installed, data):
    """Four tiles in one encoder call equal four calls; the timings are printed (``-s``) for the notes."""
    images = _tiles(data, 4)
    model = load_model(dataclasses.replace(SPEC, precision="fp16"))
    model.embed_many(images)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    together = model.embed_many(images)
    torch.cuda.synchronize()
    batched = time.perf_counter() - start
    start = time.perf_counter()
    alone = [model.embed(image) for image in images]
    torch.cuda.synchronize()
    single = time.perf_counter() - start
    print(f"\nencoder fp16, 4 tiles: one call {batched:.3f} s, four calls {single:.3f} s")
    for a, b in zip(together, alone, strict=True):
        assert (a.features - b.features).abs().max() < 5e-2


def test_cuda_pipeline_equals_cpu(model_installed, data):
    path = data / "pix4d_alpha_nodata.tif"
    options = {"tile_size": 512, "overlap": 32, "workers": 1}
    cpu, _ = segment_scene(path, model=dataclasses.replace(SPEC, device="cpu"), **options)
    gpu, report = segment_scene(path, model=SPEC, **options)
    assert report.parameters["tiles_per_task"] is None and len(cpu) > 0
    assert abs(len(gpu) - len(cpu)) <= max(1, len(cpu) // 20)  # float differences may flip a threshold
