"""Automatic mode: its stability score is SAM's, computed without upsampling; tiles are embedded once."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from geosam.models import AutomaticParams, ModelSpec, load_model
from geosam.models._mobile_sam import import_mobile_sam
from geosam.models.automatic import (
    BOXES_PER_STEP,
    Upsampling,
    _boxes,
    _Found,
    _suppress,
    stability_scores,
)
from geosam.models.base import Find, Funnel
from geosam.tiling import TileGrid, TileImage


def _logits(seed: int) -> torch.Tensor:
    """Smooth (K, 256, 256) logits: blobs of many sizes, at the borders, one all negative, one all positive."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(8, 1, 16, 16, generator=generator) * 8
    logits = F.interpolate(noise, (256, 256), mode="bicubic", align_corners=False)[:, 0]
    logits[0] = -5.0  # nothing above -offset: stability 0
    logits[1] = 3.0  # everything
    logits[2, :, :] = -5.0
    logits[2, 100:103, 40:41] = 4.0  # a few pixels
    logits[3, :, :] = -5.0
    logits[3, 0:30, 200:256] = 2.5  # against two borders
    return logits


def _sam_upscaled(logits: torch.Tensor, input_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """SAM's ``postprocess_masks``: to the 1024² input, cropped to the image's part, to the image's size."""
    full = F.interpolate(logits[:, None], (1024, 1024), mode="bilinear", align_corners=False)
    full = full[..., : input_size[0], : input_size[1]]
    return F.interpolate(full, size, mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize(
    ("input_size", "size"),
    [
        ((1024, 1024), (1024, 1024)),  # a default tile
        ((724, 1024), (724, 1024)),  # an image at the model's scale: no second step
        ((1024, 812), (405, 321)),  # a small image, upsampled to the model input
        ((929, 1024), (718, 791)),  # the Landsat image of benchmarks/automatic.py
        ((1024, 1024), (2048, 2048)),  # a 2048² tile
        ((388, 1024), (1517, 4000)),  # a strip
    ],
)
def test_stability_equals_sam_score_on_upsampled_logits(input_size, size):
    _, amg = import_mobile_sam()
    upsampling = Upsampling(256, 1024, input_size, size)
    for seed in range(3):
        logits = _logits(seed)
        expected = amg.calculate_stability_score(_sam_upscaled(logits, input_size, size), 0.0, 1.0)
        got = stability_scores(logits, upsampling, offset=1.0)
        assert torch.allclose(got, expected.nan_to_num(0.0), atol=1e-6), (seed, (got - expected).abs().max())
        assert got[0] == 0 and got[1] == 1


@pytest.mark.parametrize("at_least", [0.5, 0.8, 0.92])
def test_masks_that_cannot_pass_are_not_interpolated_yet_fail_alike(at_least):
    """With ``at_least``, a mask passes exactly when its full score does, with the same score; the others
    get a bound of their score that stays below ``at_least``."""
    upsampling = Upsampling(256, 1024, (929, 1024), (718, 791))
    rough = torch.full((2, 256, 256), -5.0)  # noise about the thresholds: crossed everywhere, unstable
    rough[:, 40:200, 60:220] = -0.5 + 0.6 * torch.randn(
        2, 160, 160, generator=torch.Generator().manual_seed(0)
    )
    logits = torch.cat([rough, *(_logits(seed) for seed in range(4))])
    full = stability_scores(logits, upsampling, offset=1.0)
    bounded = stability_scores(logits, upsampling, offset=1.0, at_least=at_least)
    passing = full >= at_least
    assert 0 < passing.sum() < len(full), "the logits hold masks on both sides of the threshold"
    assert torch.equal(bounded >= at_least, passing)
    assert torch.equal(bounded[passing], full[passing])
    assert (bounded[~passing] >= full[~passing] - 1e-6).all()  # an upper bound of the score
    assert (bounded[:2] > full[:2]).all(), "the rough masks were not interpolated"


def test_low_resolution_score_would_differ():
    """The reason for upsampling: scoring the 256² logits directly gives other values."""
    _, amg = import_mobile_sam()
    logits = _logits(7)
    low = amg.calculate_stability_score(logits, 0.0, 1.0).nan_to_num(0.0)
    upsampling = Upsampling(256, 1024, (1024, 1024), (1024, 1024))
    assert (low - stability_scores(logits, upsampling, offset=1.0)).abs().max() > 0.01


def test_the_score_is_counted_at_the_image_size():
    """At the model input's size instead (as before), some masks of a small image score otherwise."""
    logits = _logits(3)
    at_image = stability_scores(logits, Upsampling(256, 1024, (929, 1024), (718, 791)), offset=1.0)
    at_input = stability_scores(logits, Upsampling(256, 1024, (929, 1024), (929, 1024)), offset=1.0)
    assert (at_image - at_input).abs().max() > 1e-4


def test_the_upsampling_tables_are_made_where_the_logits_are():
    """On a GPU the logits are the GPU's: tables on the CPU failed every tile there (found on an H200).
    torch's meta device stands in for it here; the gpu tests run the whole of it on CUDA."""
    upsampling = Upsampling(256, 1024, (929, 1024), (718, 791))
    for device in (torch.device("cpu"), torch.device("meta")):
        for axis in upsampling.axes(device):
            assert {axis.weights.device, axis.real.device, axis.counts.device} == {device}


def test_a_tile_prompted_after_it_was_segmented_is_not_embedded_again(model_installed, data):
    """Neighbours' prompts (geosam.reprompt) reuse the embedding automatic mode made of the same pixels."""
    model = load_model(ModelSpec("mobile_sam", backend="torch", params=AutomaticParams(points_per_side=4)))
    with rasterio.open(data / "m_4709963_se_14_1_20200831.tif") as src:
        pixels = src.read([1, 2, 3], window=Window(0, 0, 256, 256)).transpose(1, 2, 0)
    encoded = []
    encode = model.runtime.encode
    model.runtime.encode = lambda x: encoded.append(len(x)) or encode(x)
    place = next(iter(TileGrid(256, 256, 256, 32)))
    tile = TileImage(place, np.ascontiguousarray(pixels), np.ones((256, 256), bool))
    model.automatic(tile)
    answers = model.point_masks(tile, [np.array([[128.0, 128.0]])])
    assert encoded == [1] and len(answers[0]) > 0
    model.point_masks(
        TileImage(place, np.ascontiguousarray(pixels[::-1]), tile.valid), [np.array([[9.0, 9.0]])]
    )
    assert encoded == [1, 1]  # other pixels: embedded


def test_kept_masks_are_joined_in_prompt_order_and_boxed_a_few_at_a_time():
    """What the prompt batches keep, joined without copies, is what concatenating them gives; their
    boxes, taken a few masks at a time, are segment-anything's for all of them at once."""
    batches = [_logits(seed) for seed in range(40)]  # 320 masks: more than one boxing step
    batches[3] = batches[3][:0]  # a batch that keeps nothing
    found = _Found(sum(len(b) for b in batches) + 5)
    for i, batch in enumerate(batches):
        found.add(batch, torch.full((len(batch),), float(i)), torch.arange(len(batch)).float(), i % 2 == 1)
    logits, iou, stability, proposed = found.arrays()
    assert torch.equal(logits, torch.cat(batches).half())
    assert torch.equal(iou, torch.cat([torch.full((len(b),), float(i)) for i, b in enumerate(batches)]))
    assert torch.equal(stability, torch.cat([torch.arange(len(b)).float() for b in batches]))
    assert torch.equal(
        proposed, torch.cat([torch.full((len(b),), i % 2 == 1) for i, b in enumerate(batches)])
    )
    _, amg = import_mobile_sam()
    assert len(logits) > BOXES_PER_STEP
    boxes, nonempty = _boxes(logits)
    assert torch.equal(boxes, amg.batched_mask_to_box(logits > 0))
    assert torch.equal(nonempty, (logits > 0).flatten(1).any(1)) and not nonempty.all()


def test_a_tile_where_no_mask_passes_the_filters_has_no_objects(model_installed, data):
    strict = AutomaticParams(points_per_side=4, pred_iou_thresh=1.5)  # no predicted IoU reaches it
    model = load_model(ModelSpec("mobile_sam", backend="torch", params=strict))
    with rasterio.open(data / "m_4709963_se_14_1_20200831.tif") as src:
        pixels = src.read([1, 2, 3], window=Window(0, 0, 256, 256)).transpose(1, 2, 0)
    place = next(iter(TileGrid(256, 256, 256, 32)))
    masks = model.automatic(TileImage(place, np.ascontiguousarray(pixels), np.ones((256, 256), bool)))
    assert masks.masks.shape == (0, 256, 256) and len(masks.scores) == 0
    assert masks.funnel == Funnel(tiles=1, prompts=16, masks=48, confident=0)


def test_the_funnel_counts_what_each_stage_kept(model_installed, data):
    model = load_model(ModelSpec("mobile_sam", backend="torch", params=AutomaticParams(points_per_side=8)))
    with rasterio.open(data / "m_4709963_se_14_1_20200831.tif") as src:
        pixels = src.read([1, 2, 3], window=Window(0, 0, 256, 256)).transpose(1, 2, 0)
    place = next(iter(TileGrid(256, 256, 256, 32)))
    valid = np.ones((256, 256), bool)
    valid[:128] = False  # half the grid's points fall on invalid pixels
    masks = model.automatic(TileImage(place, np.ascontiguousarray(pixels), valid))
    f = masks.funnel
    assert (f.tiles, f.prompts, f.masks) == (1, 32, 96)
    assert f.masks >= f.confident >= f.stable >= f.distinct >= f.objects == len(masks) > 0
    assert (masks.scores >= 0.88).all() and (masks.stability >= 0.92).all()


def test_proposals_add_what_the_grid_missed_and_leave_its_masks():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60], [0, 0, 10, 10], [80, 80, 90, 90], [0, 0, 9, 10]]
    )
    iou = torch.tensor([0.95, 0.90, 0.90, 0.85, 0.85, 0.80])
    proposed = torch.tensor([False, False, False, True, True, True])
    drawn = torch.tensor([True, True, True, True, True, False])  # the last mask is empty
    kept = _suppress(boxes, iou, proposed, drawn, 0.7)
    # grid: 0 suppresses 1, 2 stays; proposal 3 duplicates 0 and goes; proposal 4 is new
    assert sorted(kept.tolist()) == [0, 2, 4]


def test_find_all_asks_the_proposals_and_keeps_one_mask_each(model_installed, data):
    with rasterio.open(data / "m_4709963_se_14_1_20200831.tif") as src:
        pixels = src.read([1, 2, 3], window=Window(0, 0, 256, 256)).transpose(1, 2, 0)
    place = next(iter(TileGrid(256, 256, 256, 32)))
    image = TileImage(place, np.ascontiguousarray(pixels), np.ones((256, 256), bool))
    plain = load_model(ModelSpec("mobile_sam", backend="torch", params=AutomaticParams(points_per_side=4)))
    found = plain.automatic(image)
    prototype = tuple(float(v) for v in found.descriptors[0])  # like the first object: proposals there
    find = Find((prototype,), (0.5,), most=8)
    params = AutomaticParams(points_per_side=4, find=find)
    model = load_model(ModelSpec("mobile_sam", backend="torch", params=params))
    masks = model.automatic(image)
    assert 0 < masks.funnel.proposals <= 8
    assert masks.proposed.sum() <= masks.funnel.proposals
    assert (masks.scores[masks.proposed] >= find.pred_iou_thresh).all()
    assert (masks.stability[masks.proposed] >= find.stability_score_thresh).all()
