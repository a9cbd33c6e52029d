"""Automatic mode's stability score is SAM's, computed on each mask's bounding box only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geosam.models._mobile_sam import import_mobile_sam
from geosam.models.automatic import stability_scores


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


def test_stability_equals_sam_score_on_upsampled_logits():
    _, amg = import_mobile_sam()
    for seed, (rows, cols) in enumerate([(256, 256), (181, 256), (256, 203), (97, 131)]):
        logits = _logits(seed)
        full = F.interpolate(logits[:, None], (1024, 1024), mode="bilinear", align_corners=False)[:, 0]
        expected = amg.calculate_stability_score(full[:, : rows * 4, : cols * 4], 0.0, 1.0).nan_to_num(0.0)
        got = stability_scores(logits, rows, cols, offset=1.0)
        assert torch.allclose(got, expected, atol=1e-6), (seed, (got - expected).abs().max())
        assert got[0] == 0 and got[1] == 1


def test_low_resolution_score_would_differ():
    """The reason for upsampling: scoring the 256² logits directly gives other values."""
    _, amg = import_mobile_sam()
    logits = _logits(7)
    low = amg.calculate_stability_score(logits, 0.0, 1.0).nan_to_num(0.0)
    assert (low - stability_scores(logits, 256, 256, offset=1.0)).abs().max() > 0.01
