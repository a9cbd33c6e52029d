"""Several tiles per task, embedded in one encoder call: the same objects as one tile per task."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from geosam.errors import ModelError
from geosam.georef import open_scene
from geosam.models import AutomaticParams, ModelSpec, load_model
from geosam.scene_run import segment_scene
from geosam.tiling import TileGrid, read_tile

SPEC = ModelSpec("mobile_sam", params=AutomaticParams(points_per_side=4), backend="torch")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_batched_embeddings_equal_single_ones(model_installed, data, backend):
    scene = open_scene(data / "m_4709963_se_14_1_20200831.tif")
    grid = TileGrid(scene.width, scene.height, 512, 32)
    images = [read_tile(scene, tile, grid.size).image for tile in list(grid)[:3]]
    model = load_model(dataclasses.replace(SPEC, backend=backend))
    together = model.embed_many(images)
    for image, embedding in zip(images, together, strict=True):
        alone = model.embed(image)
        assert embedding.input_size == alone.input_size
        assert (embedding.features - alone.features).abs().max() < 1e-4


@pytest.mark.slow
def test_tiles_per_task_gives_the_same_objects(model_installed, data):
    path = data / "pix4d_alpha_nodata.tif"
    options = {"model": SPEC, "tile_size": 512, "overlap": 32, "workers": 1}
    one, _ = segment_scene(path, **options)
    three, report = segment_scene(path, tiles_per_task=3, **options)
    assert report.parameters["tiles_per_task"] == 3 and len(one) > 0
    assert len(one) == len(three)
    assert np.allclose(sorted(one.area_m2), sorted(three.area_m2), rtol=1e-6)


def test_half_precision_runs_on_torch_only(model_installed):
    assert ModelSpec(precision="bf16").runtime() == "torch"
    with pytest.raises(ModelError, match="--backend torch"):
        ModelSpec(precision="fp16", backend="onnx").runtime()
    with pytest.raises(ModelError, match="unknown precision"):
        ModelSpec(precision="fp8").runtime()


def test_bf16_encoder_on_cpu_is_close_to_fp32(model_installed, data):
    scene = open_scene(data / "m_4709963_se_14_1_20200831.tif")
    image = read_tile(scene, next(iter(TileGrid(scene.width, scene.height, 512, 32))), 512).image
    full = load_model(SPEC).embed(image).features
    half = load_model(dataclasses.replace(SPEC, precision="bf16")).embed(image).features
    assert half.dtype == full.dtype
    cosine = (full * half).sum() / (full.norm() * half.norm())
    assert cosine > 0.99
