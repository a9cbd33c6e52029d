"""The low-rank decoder equals SAM's own mask decoder, for every kind of prompt."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from geosam.models import ModelSpec, load_model


def _prompts(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batches of (coords (B, N, 2) in model input pixels, labels (B, N)): points, negatives, boxes."""
    single = rng.uniform(0, 1024, (11, 1, 2))  # more than one decoder call's (PROMPTS_PER_CALL)
    mixed = rng.uniform(0, 1024, (4, 3, 2))
    corners = np.sort(rng.uniform(0, 1024, (5, 2, 2)), axis=1)
    padded = np.concatenate([single[:, :1], np.zeros((11, 1, 2))], 1)
    return [
        (single, np.ones((11, 1))),
        (mixed, np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]])),
        (corners, np.tile([2, 3], (5, 1))),  # boxes, as their two corners
        (padded, np.tile([1, -1], (11, 1))),  # a point with a padding point, as SAM's export pads
    ]


def _check(runtime, features: torch.Tensor, seed: int) -> None:
    for coords, labels in _prompts(np.random.default_rng(seed)):
        coords, labels = torch.tensor(coords, dtype=torch.float32), torch.tensor(labels, dtype=torch.float32)
        expected_masks, expected_iou = runtime.decoder(features, coords, labels)  # SAM's own decoder graph
        for multimask, pick in ((True, slice(1, None)), (False, slice(0, 1))):
            masks, iou = runtime.decode(features, coords, labels, multimask)
            reference = expected_masks[:, pick]
            scale = reference.abs().max()
            assert (masks - reference).abs().max() <= 1e-5 * scale + 1e-4
            assert torch.allclose(iou, expected_iou[:, pick], atol=1e-5)
            agree = ((masks > 0) == (reference > 0)).float().mean()
            assert agree >= 0.9999
            threshold = float(iou.median())  # some masks of a batch kept, some not
            confident, confident_iou = runtime.decode_confident(
                features, coords, labels, multimask, threshold
            )
            keep = iou >= threshold
            assert 0 < int(keep.sum()) == len(confident)
            assert torch.allclose(confident_iou, iou[keep])
            assert (confident - masks[keep]).abs().max() <= 1e-5 * scale + 1e-4


def test_low_rank_decoder_equals_sam_on_real_imagery(model_installed, data):
    model = load_model(ModelSpec("mobile_sam", backend="torch"))
    with rasterio.open(data / "m_4709963_se_14_1_20200831.tif") as src:
        image = src.read([1, 2, 3], window=Window(0, 0, 1024, 1024)).transpose(1, 2, 0)
    _check(model.runtime, model.embed(image).features, seed=0)


def test_low_rank_decoder_equals_sam_with_other_weights(random_vit_b):
    """Randomly initialised ViT-B weights: nothing in the algebra depends on MobileSAM's values."""
    model = load_model(ModelSpec(checkpoint=random_vit_b, backend="torch"))
    torch.manual_seed(1)
    _check(model.runtime, torch.randn(1, 256, 64, 64), seed=1)


@pytest.mark.parametrize("batch", [1, 5])
def test_image_terms_are_reused_and_renewed(model_installed, batch):
    runtime = load_model(ModelSpec("mobile_sam", backend="torch")).runtime
    first, second = torch.randn(1, 256, 64, 64), torch.randn(1, 256, 64, 64)
    coords, labels = torch.full((batch, 1, 2), 500.0), torch.ones(batch, 1)
    assert runtime.terms(first) is runtime.terms(first)
    after_other = runtime.decode(second, coords, labels, True)[0]
    expected = runtime.decoder(second, coords, labels)[0][:, 1:]
    assert torch.allclose(after_other, expected, atol=1e-3)


def test_prompt_batches_reuse_the_decoders_arrays(model_installed):
    """The decoder's large arrays (B × 4096 positions) are made once, not at every prompt batch, and hold
    nothing a later call reads: the same prompts give the same masks; ``forget`` drops them."""
    runtime = load_model(ModelSpec("mobile_sam", backend="torch")).runtime
    torch.manual_seed(2)
    features, coords, labels = torch.randn(1, 256, 64, 64), torch.rand(16, 1, 2) * 1024, torch.ones(16, 1)
    first = runtime.decode(features, coords, labels, True)
    scratch = runtime.fast.scratch._arrays
    made = {name: array.data_ptr() for name, array in scratch.items()}
    runtime.decode(features, coords[:5], labels[:5], False)  # fewer prompts, one mask each: the same arrays
    second = runtime.decode(features, coords, labels, True)
    assert set(made) == {"store", "products", "scores"}
    assert {name: array.data_ptr() for name, array in scratch.items()} == made
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    runtime.forget()
    assert not scratch
