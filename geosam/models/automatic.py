"""Automatic ("segment everything") mask generation from a grid of point prompts.

Stages follow segment-anything's generator: grid -> batched decoding -> filtering by predicted IoU
and stability -> non-maximum suppression -> masks at image resolution. Stability is scored as SAM
scores it, on the logits upsampled to the model input, without upsampling them; suppression runs
on the low-resolution masks, so only the masks that are kept are upsampled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from geosam.models._mobile_sam import import_mobile_sam
from geosam.models.base import AutomaticParams, Masks

# Float32 logits upsampled per call, at the model input's size and at the image's: 4 masks of a 1024²
# tile, 16 MB an array. Under glibc's mmap threshold in workers (geosam.pipeline.MALLOC), so they reuse
# the heap the encoder and decoder just freed instead of adding fresh pages to a task's peak.
UPSCALE_BYTES = 32 * 2**20

if TYPE_CHECKING:
    from geosam.models.sam import Embedding, SamModel


def grid_points(points_per_side: int, valid: np.ndarray) -> np.ndarray:
    """The prompt grid as (N, 2) pixel coordinates (x, y), in SAM's order, without points on invalid pixels."""
    _, amg = import_mobile_sam()
    h, w = valid.shape
    points = amg.build_point_grid(points_per_side) * np.array([w, h])
    cols = np.minimum(points[:, 0].astype(int), w - 1)
    rows = np.minimum(points[:, 1].astype(int), h - 1)
    return points[valid[rows, cols]].astype(np.float32)


def stability_scores(
    low_res: torch.Tensor, rows: int, cols: int, offset: float, scale: int = 4
) -> torch.Tensor:
    """SAM's stability score of each low-resolution mask (K, 256, 256), at model input resolution.

    The area above ``+offset`` over the area above ``-offset`` of the logits upsampled ``scale``×
    (bilinear, as ``F.interpolate``), within the ``rows`` × ``cols`` low-resolution pixels that cover the
    image. Counted without upsampling: an upsampled pixel lies in the cell between four low-resolution
    pixels and is their convex combination, so a cell whose four corners are all above (or none above) a
    threshold counts whole (or not at all); only cells the threshold crosses are interpolated. Scoring the
    low-resolution logits directly instead changes which masks pass.
    """
    above_lower = _count_above(low_res, rows, cols, -offset, scale)
    return _count_above(low_res, rows, cols, offset, scale) / above_lower.clamp(min=1)


def _count_above(low_res: torch.Tensor, rows: int, cols: int, threshold: float, scale: int) -> torch.Tensor:
    """Pixels (K,) above ``threshold`` in the top-left ``rows·scale`` × ``cols·scale`` of each upsampled mask."""
    # Edge pixels repeat, as the interpolation clamps there: cell (i, j) lies between pixels (i - 1, j - 1)
    # and (i, j), clamped, and holds output rows scale·i - scale/2 + phase, for phase 0 .. scale - 1.
    logits = low_res[:, : rows + 1, : cols + 1]
    r = (torch.arange(logits.shape[1] + 2) - 1).clamp(0, logits.shape[1] - 1)
    c = (torch.arange(logits.shape[2] + 2) - 1).clamp(0, logits.shape[2] - 1)
    above = logits > threshold
    above = torch.cat([above[:, :1], above, above[:, -1:]], 1)
    above = torch.cat([above[:, :, :1], above, above[:, :, -1:]], 2)
    corners = (above[:, :-1, :-1], above[:, :-1, 1:], above[:, 1:, :-1], above[:, 1:, 1:])
    every = corners[0] & corners[1] & corners[2] & corners[3]
    some = corners[0] | corners[1] | corners[2] | corners[3]
    phase_rows = _phases_inside(len(r) - 1, rows, scale)  # (cells, scale): output row inside?
    phase_cols = _phases_inside(len(c) - 1, cols, scale)
    per_row, per_col = phase_rows.sum(1), phase_cols.sum(1)  # output pixels of a cell: their product
    edge = torch.nonzero(per_col < scale)[:, 0]  # columns of cells not wholly inside
    whole = scale * every.sum(2) - (every[:, :, edge] * (scale - per_col[edge])).sum(2)
    counts = (whole * per_row).sum(1)
    k, i, j = torch.nonzero(some & ~every, as_tuple=True)  # cells the threshold crosses
    if len(k):
        lam = (torch.arange(scale) + 0.5) / scale  # each phase's position in its cell
        y0, y1, x0, x1 = r[i], r[i + 1], c[j], c[j + 1]
        w = lam.view(1, 1, -1)
        top = (1 - w) * logits[k, y0, x0].float().view(-1, 1, 1) + w * logits[k, y0, x1].float().view(
            -1, 1, 1
        )
        bottom = (1 - w) * logits[k, y1, x0].float().view(-1, 1, 1) + w * logits[k, y1, x1].float().view(
            -1, 1, 1
        )
        h = lam.view(1, -1, 1)
        values = (
            1 - h
        ) * top + h * bottom  # (cells, row phase, column phase), as F.interpolate computes them
        hits = (values > threshold) & phase_rows[i][:, :, None] & phase_cols[j][:, None, :]
        counts += torch.bincount(k, hits.flatten(1).sum(1), minlength=len(low_res)).long()
    return counts.float()


def _phases_inside(cells: int, extent: int, scale: int) -> torch.Tensor:
    """(cells, scale) bools: whether each cell's output row (or column) falls in ``[0, extent·scale)``."""
    out = scale * torch.arange(cells)[:, None] - scale // 2 + torch.arange(scale)[None, :]
    return (out >= 0) & (out < extent * scale)


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
    for start in range(0, len(points), params.points_per_batch):
        batch = points[start : start + params.points_per_batch]
        low_res, iou = model.confident_points(  # a runtime that answers one mask: its single-mask answer
            embedding,
            batch[:, None, :],
            np.ones((len(batch), 1)),
            model.runtime.multimask,
            params.pred_iou_thresh,
        )
        stable = stability_scores(
            low_res,
            *model.low_res_extent(embedding),
            params.stability_score_offset,
            round(1 / model.low_res_scale),
        )
        keep = stable >= params.stability_score_thresh
        if not keep.any():
            continue
        logits.append(low_res[keep].half())
        scores.append(iou[keep])
        stability.append(stable[keep])
    if not logits:
        return Masks.empty(h, w)
    low_res, iou, stable = torch.cat(logits), torch.cat(scores), torch.cat(stability)
    rows, cols = model.low_res_extent(embedding)
    binary = low_res[:, :rows, :cols] > 0
    nonempty = binary.flatten(1).any(1)
    low_res, iou, stable, binary = low_res[nonempty], iou[nonempty], stable[nonempty], binary[nonempty]
    kept = box_nms(amg.batched_mask_to_box(binary), iou, params.box_nms_thresh)
    full = np.empty((len(kept), h, w), bool)
    step = max(1, UPSCALE_BYTES // (4 * (model.image_size**2 + h * w)))
    for start in range(0, len(kept), step):
        chunk = kept[start : start + step]
        np.logical_and((model.upscale(embedding, low_res[chunk].float()) > 0).numpy(), valid,
                       out=full[start : start + len(chunk)])  # fmt: skip
    keep = objects(full, valid, params.max_area_fraction)
    if not keep.all():
        full = full[keep]
    return Masks(full, iou[kept].numpy()[keep], stable[kept].numpy()[keep])


def objects(masks: np.ndarray, valid: np.ndarray, max_fraction: float) -> np.ndarray:
    """Which masks (N, H, W) are objects: not empty, and not (nearly) all of the image's valid pixels.

    SAM answers some prompts with the whole image, most often on tiles that the scene's edge leaves
    partly empty; such a mask is the image, not an object in it.
    """
    area = masks.reshape(len(masks), -1).sum(1)
    return (area > 0) & (area <= max_fraction * max(int(valid.sum()), 1))
