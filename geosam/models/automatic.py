"""Automatic ("segment everything") mask generation from a grid of point prompts.

Stages follow segment-anything's generator: grid -> batched decoding -> filtering by predicted IoU
and stability -> non-maximum suppression -> masks at image resolution. Filtering and suppression
run on the decoder's low-resolution logits, so only the masks that are kept are upsampled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from geosam.models._mobile_sam import import_mobile_sam
from geosam.models.base import AutomaticParams, Masks

UPSCALE_BYTES = 64 * 2**20  # float32 logits at image size upsampled per call (16 masks of a 1024² tile)

if TYPE_CHECKING:
    from geosam.models.sam import Embedding, SamModel


def grid_points(points_per_side: int, valid: np.ndarray) -> np.ndarray:
    """The prompt grid as (N, 2) pixel coordinates (x, y), coarse to fine, without points on invalid pixels.

    Coarse to fine: first every 8th point of the grid in both directions, then every 4th, 2nd, the rest,
    so that large objects are found first and, with ``skip_covered``, their inner points are skipped.
    """
    _, amg = import_mobile_sam()
    h, w = valid.shape
    points = amg.build_point_grid(points_per_side) * np.array([w, h])
    i, j = np.divmod(np.arange(points_per_side**2), points_per_side)
    level = np.zeros(len(points), int)
    for step in (2, 4, 8):
        level += (i % step != 0) | (j % step != 0)
    points = points[np.argsort(level, kind="stable")]
    cols = np.minimum(points[:, 0].astype(int), w - 1)
    rows = np.minimum(points[:, 1].astype(int), h - 1)
    return points[valid[rows, cols]].astype(np.float32)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the boxes (x0, y0, x1, y1) kept by greedy non-maximum suppression, best first."""
    order = torch.argsort(scores, descending=True)
    boxes = boxes[order].float()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    iou = (inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9)).numpy()
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > threshold
    return order[keep]


def generate(
    model: SamModel,
    image: np.ndarray,
    valid: np.ndarray,
    params: AutomaticParams,
    embedding: Embedding | None = None,
) -> Masks:
    """Every object the model finds in ``image`` (embedded now unless ``embedding`` is given), as masks
    restricted to ``valid`` pixels."""
    _, amg = import_mobile_sam()
    h, w = valid.shape
    points = grid_points(params.points_per_side, valid)
    if len(points) == 0:
        return Masks.empty(h, w)
    embedding = embedding or model.embed(image)
    logits, scores, stability = [], [], []
    covered = None
    for start in range(0, len(points), params.points_per_batch):
        batch = points[start : start + params.points_per_batch]
        if covered is not None:
            batch = batch[~_points_covered(covered, batch, embedding, model.low_res_scale)]
            if len(batch) == 0:
                continue
        low_res, iou = model.decode_points(  # a runtime that answers one mask: its single-mask answer
            embedding, batch[:, None, :], np.ones((len(batch), 1)), multimask=model.runtime.multimask
        )
        per_point = low_res.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten()
        rows, cols = model.low_res_extent(embedding)
        stable = amg.calculate_stability_score(low_res[:, :rows, :cols], 0.0, params.stability_score_offset)
        keep = (iou >= params.pred_iou_thresh) & (stable >= params.stability_score_thresh)
        if not keep.any():
            continue
        logits.append(low_res[keep].half())
        scores.append(iou[keep])
        stability.append(stable[keep])
        if params.skip_covered:
            binary = low_res[:, :rows, :cols] > 0
            area = binary.flatten(1).sum(1).float()
            marks = keep & (area <= params.coverage_max_fraction * rows * cols)
            if params.coverage == "smallest":
                area = torch.where(marks, area, torch.inf).view(-1, per_point)
                smallest = torch.zeros_like(marks).view(-1, per_point)
                smallest[torch.arange(len(area)), area.argmin(1)] = True
                marks &= smallest.flatten()
            if marks.any():
                fresh = binary[marks].any(0)
                covered = fresh if covered is None else covered | fresh
    if not logits:
        return Masks.empty(h, w)
    low_res, iou, stable = torch.cat(logits), torch.cat(scores), torch.cat(stability)
    rows, cols = model.low_res_extent(embedding)
    binary = low_res[:, :rows, :cols] > 0
    nonempty = binary.flatten(1).any(1)
    low_res, iou, stable, binary = low_res[nonempty], iou[nonempty], stable[nonempty], binary[nonempty]
    kept = box_nms(amg.batched_mask_to_box(binary), iou, params.box_nms_thresh)
    full = np.empty((len(kept), h, w), bool)
    step = max(1, UPSCALE_BYTES // (4 * h * w))
    for start in range(0, len(kept), step):
        chunk = kept[start : start + step]
        np.logical_and((model.upscale(embedding, low_res[chunk].float()) > 0).numpy(), valid,
                       out=full[start : start + len(chunk)])  # fmt: skip
    present = full.reshape(len(full), -1).any(1)
    if not present.all():
        full = full[present]
    return Masks(full, iou[kept].numpy()[present], stable[kept].numpy()[present])


def _points_covered(covered: torch.Tensor, points: np.ndarray, embedding, scale: float) -> np.ndarray:
    """Which points (x, y) in image pixels fall inside the low-resolution coverage mask."""
    x = points[:, 0] * embedding.input_size[1] / embedding.original_size[1] * scale
    y = points[:, 1] * embedding.input_size[0] / embedding.original_size[0] * scale
    cols = np.clip(x.astype(int), 0, covered.shape[1] - 1)
    rows = np.clip(y.astype(int), 0, covered.shape[0] - 1)
    return covered[rows, cols].numpy()
