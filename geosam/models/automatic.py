"""Automatic ("segment everything") mask generation from a grid of point prompts.

Stages follow segment-anything's generator: grid -> batched decoding -> filtering by predicted IoU
and stability -> non-maximum suppression -> masks at image resolution. Stability is scored as SAM
scores it, on the logits upsampled to the image's size, without upsampling them; suppression runs
on the low-resolution masks, so only the masks that are kept are upsampled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from geosam.models import features
from geosam.models._mobile_sam import import_mobile_sam
from geosam.models.base import AutomaticParams, Embedding, Find, Funnel, Masks

# Float32 logits upsampled per call, at the model input's size and at the image's: 4 masks of a 1024²
# tile, 16 MB an array. Under glibc's mmap threshold in workers (geosam.cluster.MALLOC), so they reuse
# the heap the encoder and decoder just freed instead of adding fresh pages to a task's peak.
UPSCALE_BYTES = 32 * 2**20
MASKS_PER_STEP = 16  # masks whose stability is counted at once: their boolean maps stay small
BOXES_PER_STEP = 256  # masks boxed at once: 16 MB of boolean maps at 256² logits


class _Runtime(Protocol):
    @property
    def multimask(self) -> bool:
        """Whether the decoder can answer with all three masks of a prompt."""
        ...


class Predictor(Protocol):
    """What automatic mode asks of a promptable model (``geosam.models.sam.SamModel`` is one)."""

    @property
    def image_size(self) -> int: ...

    @property
    def runtime(self) -> _Runtime: ...

    def embed(self, image: np.ndarray) -> Embedding: ...

    def confident_points(
        self, embedding: Embedding, points: np.ndarray, labels: np.ndarray, multimask: bool, min_iou: float
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode_points(
        self, embedding: Embedding, points: np.ndarray, labels: np.ndarray, multimask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def upscale(self, embedding: Embedding, low_res: torch.Tensor) -> torch.Tensor: ...

    def upsampling(self, embedding: Embedding) -> Upsampling: ...

    def low_res_extent(self, embedding: Embedding) -> tuple[int, int]: ...


def grid_points(points_per_side: int, valid: np.ndarray) -> np.ndarray:
    """The prompt grid as (N, 2) pixel coordinates (x, y), in SAM's order, without points on invalid pixels."""
    _, amg = import_mobile_sam()
    h, w = valid.shape
    points = amg.build_point_grid(points_per_side) * np.array([w, h])
    cols = np.minimum(points[:, 0].astype(int), w - 1)
    rows = np.minimum(points[:, 1].astype(int), h - 1)
    return points[valid[rows, cols]].astype(np.float32)


@dataclass(frozen=True)
class _Axis:
    """SAM's upsampling along one axis: the output pixels between the low-resolution logits ``s`` and
    ``s + width - 1`` (a "start" ``s``) are each a weighted sum ``weights[s, slot] · logits[s : s + width]``,
    with bilinear weights (non-negative, summing to 1), in the first ``counts[s]`` slots (``real``; the
    rest is padding). Most starts hold ``usual`` pixels, the edges' more.
    """

    weights: torch.Tensor  # (starts, most, width)
    real: torch.Tensor  # (starts, most) bool
    counts: torch.Tensor  # (starts,) long
    usual: int

    @property
    def width(self) -> int:
        return self.weights.shape[2]

    @property
    def starts(self) -> int:
        return len(self.weights)


@lru_cache(maxsize=32)
def _axis(low: int, model: int, crop: int, out: int, device: str) -> _Axis:
    """One axis of SAM's mask upsampling: ``low`` logits bilinearly to ``model`` pixels, the first ``crop``
    kept, those bilinearly to ``out`` (no second step where ``crop == out``), its tables on ``device``.
    The weights are found by upsampling the identity, so they are the interpolation's own."""
    eye = torch.eye(low)[None]  # (1, source pixel, position)
    up = F.interpolate(eye, model, mode="linear", align_corners=False)[..., :crop]
    if crop != out:
        up = F.interpolate(up, out, mode="linear", align_corners=False)
    matrix = up[0].T  # (out, low)
    nonzero = (matrix != 0).int()
    first, last = nonzero.argmax(1), low - 1 - nonzero.flip(1).argmax(1)
    width = int((last - first).max()) + 1
    start = first.clamp(max=low - width)
    counts = torch.bincount(start, minlength=low - width + 1)
    slot = torch.arange(int(counts.max()))
    real = slot < counts[:, None]
    index = (torch.cumsum(counts, 0) - counts)[:, None] + torch.where(real, slot, 0)
    pixels = torch.argsort(start, stable=True)[index.clamp(max=out - 1)]
    weights = matrix.gather(1, start[:, None] + torch.arange(width))[pixels]
    return _Axis(weights.to(device), real.to(device), counts.to(device), int(counts.mode().values))


@dataclass(frozen=True)
class Upsampling:
    """How SAM brings low-resolution mask logits to the image's pixels (``SamModel.upscale``): ``low``²
    logits bilinearly to the ``model``² input, cropped to the image's part of it (``input_size``),
    bilinearly to the image's ``size``."""

    low: int
    model: int
    input_size: tuple[int, int]
    size: tuple[int, int]

    def axes(self, device: torch.device) -> tuple[_Axis, _Axis]:
        """The rows' and the columns' tables, on ``device`` (the logits')."""
        rows = _axis(self.low, self.model, self.input_size[0], self.size[0], str(device))
        return rows, _axis(self.low, self.model, self.input_size[1], self.size[1], str(device))


def stability_scores(
    low_res: torch.Tensor, upsampling: Upsampling, offset: float, at_least: float | None = None
) -> torch.Tensor:
    """SAM's stability score of each low-resolution mask (K, h, w), counted at the image's size.

    The area above ``+offset`` over the area above ``-offset`` of the logits upsampled as SAM does, without
    upsampling them: an upsampled pixel is a convex combination of a few neighbouring low-resolution
    logits, so where all of them are above (or none is above) a threshold it is too; only the pixels
    whose neighbourhood the threshold crosses are interpolated. Scoring the low-resolution logits
    directly instead changes which masks pass. With ``at_least``, a mask whose score cannot reach it
    (counting every crossed pixel above ``+offset`` and none of them above ``-offset``) is not
    interpolated: its score is that bound, below ``at_least``.
    """
    axes = upsampling.axes(low_res.device)
    scores = torch.zeros(len(low_res), dtype=torch.float64, device=low_res.device)
    for first in range(0, len(low_res), MASKS_PER_STEP):
        logits = low_res[first : first + MASKS_PER_STEP]
        upper, lower = _Crossed.of(logits, axes, offset), _Crossed.of(logits, axes, -offset)
        bound = upper.most / lower.least.clamp(min=1)
        exact = torch.ones_like(bound, dtype=torch.bool) if at_least is None else bound >= at_least
        scores[first : first + len(logits)] = bound
        if exact.any():
            above, below = (crossed.count(logits, axes, exact) for crossed in (upper, lower))
            scores[first : first + len(logits)][exact] = (above / below.clamp(min=1))[exact]
    return scores.float()


@dataclass(frozen=True)
class _Crossed:
    """Of masks' logits upsampled to the image, the pixels (K,) surely above ``threshold`` (in starts whose
    whole neighbourhood is above), those perhaps above (some of it above), and the starts between."""

    threshold: float
    least: torch.Tensor  # (K,) float64
    most: torch.Tensor  # (K,) float64
    crossed: torch.Tensor  # (K, starts, starts) bool: the neighbourhood is partly above

    @classmethod
    def of(cls, logits: torch.Tensor, axes: tuple[_Axis, _Axis], threshold: float) -> _Crossed:
        rows, cols = axes
        above = logits[:, : rows.starts + rows.width - 1, : cols.starts + cols.width - 1] > threshold
        every = above[:, : rows.starts, : cols.starts].clone()
        some = every.clone()
        for r in range(rows.width):
            for c in range(cols.width):
                shifted = above[:, r : r + rows.starts, c : c + cols.starts]
                every &= shifted
                some |= shifted
        least, most = (
            (m.float() @ cols.counts.float()).double() @ rows.counts.double() for m in (every, some)
        )
        return cls(threshold, least, most, some & ~every)

    def count(self, logits: torch.Tensor, axes: tuple[_Axis, _Axis], masks: torch.Tensor) -> torch.Tensor:
        """Pixels (K,) above the threshold, exact for ``masks`` (K,) bool, the surely above elsewhere."""
        rows, cols = axes
        k, i, j = torch.nonzero(self.crossed & masks[:, None, None], as_tuple=True)
        counts = self.least.clone()
        if not len(k):
            return counts
        patch = logits.unfold(1, rows.width, 1).unfold(2, cols.width, 1)[k, i, j]  # (n, rows, columns)
        wy, wx, real = rows.weights[i], cols.weights[j], rows.real[i][:, :, None] & cols.real[j][:, None, :]
        # the usual starts' pixels first, then the few more of the edges' starts
        hits = _above(patch, wy[:, : rows.usual], wx[:, : cols.usual], self.threshold)
        hits &= real[:, : rows.usual, : cols.usual]
        counts += torch.bincount(k, hits.flatten(1).sum(1), minlength=len(counts))
        more = (rows.counts[i] > rows.usual) | (cols.counts[j] > cols.usual)
        if more.any():
            hits = _above(patch[more], wy[more], wx[more], self.threshold) & real[more]
            hits[:, : rows.usual, : cols.usual] = False
            counts += torch.bincount(k[more], hits.flatten(1).sum(1), minlength=len(counts))
        return counts


def _above(patch: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor, threshold: float) -> torch.Tensor:
    """Whether the logits ``patch`` (n, a, b) upsampled with weights ``wy`` (n, R, a) and ``wx`` (n, C, b)
    are above ``threshold``: (n, R, C), interpolated along columns, then rows, as F.interpolate sums."""
    across = patch[:, :, 0, None] * wx[:, None, :, 0]  # the sums' first terms, then the others
    for b in range(1, wx.shape[-1]):
        across = across + patch[:, :, b, None] * wx[:, None, :, b]
    values = wy[:, :, 0, None] * across[:, None, 0]
    for a in range(1, wy.shape[-1]):
        values = values + wy[:, :, a, None] * across[:, None, a]
    return values > threshold


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU (N, M) of boxes ``a`` (N, 4) and ``b`` (M, 4), each x0, y0, x1, y1."""
    a, b = a.float(), b.float()
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the boxes (x0, y0, x1, y1) kept by greedy non-maximum suppression, best first."""
    order = torch.argsort(scores, descending=True)
    iou = box_iou(boxes[order], boxes[order]).numpy()
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > threshold
    return order[keep]


def generate(
    model: Predictor,
    image: np.ndarray,
    valid: np.ndarray,
    params: AutomaticParams,
    embedding: Embedding | None = None,
) -> Masks:
    """Every object the model finds in ``image`` (embedded now unless ``embedding`` is given), as masks
    restricted to ``valid`` pixels, with their descriptors and the ``Funnel`` of how many each stage kept.

    With ``params.find``, the points that ``features.proposals`` proposes are asked too, after the grid's
    (``_ask_proposals``: one mask each), and kept where they add an object the grid missed.
    """
    h, w = valid.shape
    points = grid_points(params.points_per_side, valid)
    if len(points) == 0:
        return Masks.empty(h, w, Funnel())
    embedding = embedding or model.embed(image)
    proposed, classes = (
        features.proposals(embedding, params.find, valid, model.image_size)
        if params.find is not None
        else (np.zeros((0, 2), np.float32), np.zeros(0, int))
    )
    asked = len(points) + len(proposed)
    found = _Found(asked * (3 if model.runtime.multimask else 1))
    confident = _ask_grid(model, embedding, points, params, found)
    if params.find is not None and len(proposed):
        confident += _ask_proposals(model, embedding, (proposed, classes), params.find, params, found)
    funnel = Funnel(1, asked, found.most, confident, found.count, proposals=len(proposed))
    if not found.count:
        return Masks.empty(h, w, funnel)
    low_res, iou, stable, proposals = found.arrays()
    rows, cols = model.low_res_extent(embedding)
    boxes, drawn = _boxes(low_res[:, :rows, :cols])
    kept = _suppress(boxes, iou, proposals, drawn, params.box_nms_thresh)
    if not len(kept):
        return Masks.empty(h, w, funnel)
    full = np.empty((len(kept), h, w), bool)
    step = max(1, UPSCALE_BYTES // (4 * (model.image_size**2 + h * w)))
    for start in range(0, len(kept), step):
        chunk = kept[start : start + step]
        np.logical_and((model.upscale(embedding, low_res[chunk].float()) > 0).numpy(), valid,
                       out=full[start : start + len(chunk)])  # fmt: skip
    seen = nonempty(full)
    if not seen.all():
        full = full[seen]
    described = features.pool(embedding, features.low_res_weights(low_res[kept].float()))
    funnel = replace(funnel, distinct=len(kept), objects=int(seen.sum()))
    return Masks(
        full, iou[kept].numpy()[seen], stable[kept].numpy()[seen], funnel, described[seen],
        proposals[kept].numpy()[seen],
    )  # fmt: skip


def _ask_grid(
    model: Predictor, embedding: Embedding, points: np.ndarray, params: AutomaticParams, found: _Found
) -> int:
    """Ask the grid's points in batches, keep their confident and stable masks in ``found``; how many
    were confident."""
    confident = 0
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
            low_res, model.upsampling(embedding), params.stability_score_offset, params.stability_score_thresh
        )
        keep = stable >= params.stability_score_thresh
        found.add(low_res[keep], iou[keep], stable[keep], False)
        confident += len(low_res)
    return confident


def _ask_proposals(
    model: Predictor,
    embedding: Embedding,
    proposed: tuple[np.ndarray, np.ndarray],
    find: Find,
    params: AutomaticParams,
    found: _Found,
) -> int:
    """Ask the proposed points (M, 2) of classes (M,) in batches; of each one's masks that pass ``find``'s
    filters, keep the most like its class's prototype in ``found``; how many were confident."""
    points, classes = proposed
    prototypes = torch.as_tensor(np.asarray(find.prototypes, np.float32))
    confident = 0
    for start in range(0, len(points), params.points_per_batch):
        batch = points[start : start + params.points_per_batch]
        low_res, iou = (  # few: scored on the CPU, beside the prototypes
            answer.cpu()
            for answer in model.decode_points(
                embedding, batch[:, None, :], np.ones((len(batch), 1)), model.runtime.multimask
            )
        )
        n, k = iou.shape
        sure = (iou >= find.pred_iou_thresh).flatten()  # only these are scored: stability is the cost
        flat = low_res.flatten(0, 1)[sure]
        stable = torch.zeros(n * k)
        stable[sure] = stability_scores(flat, model.upsampling(embedding), params.stability_score_offset)
        likeness = torch.full((n * k,), -torch.inf)
        own = prototypes[torch.as_tensor(classes[start : start + n]).repeat_interleave(k)[sure]]
        if len(flat):
            described = features.pool(embedding, features.low_res_weights(flat.float()))
            likeness[sure] = (torch.from_numpy(described) * own).sum(1)
        confident += int(sure.sum())
        stable, likeness = stable.view(n, k), likeness.view(n, k)
        passed = sure.view(n, k) & (stable >= find.stability_score_thresh)
        answered = torch.nonzero(passed.any(1))[:, 0]
        best = torch.where(passed, likeness, -torch.inf).argmax(1)[answered]
        found.add(low_res[answered, best], iou[answered, best], stable[answered, best], True)
    return confident


def _suppress(
    boxes: torch.Tensor, iou: torch.Tensor, proposed: torch.Tensor, drawn: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Indices of the masks kept: of the non-empty ones (``drawn``), the grid's and the proposals' each by
    non-maximum suppression, less the proposals whose boxes overlap a kept grid mask's more than
    ``threshold``: proposals add what the grid missed and leave its objects as they are."""
    kept = []
    for group in (drawn & ~proposed, drawn & proposed):
        among = torch.nonzero(group)[:, 0]
        kept.append(among[box_nms(boxes[among], iou[among], threshold)] if len(among) else among)
    grid, extra = kept
    if len(grid) and len(extra):
        extra = extra[(box_iou(boxes[extra], boxes[grid]) <= threshold).all(1)]
    return torch.cat([grid, extra])


class _Found:
    """The masks a tile's prompt batches keep, in prompt order: low-resolution logits (as float16), predicted
    IoU and stability, in arrays sized for every mask the prompts could answer. Those are allocated, not
    written: the OS commits only the pages the kept masks fill, and nothing is copied to join batches.
    """

    def __init__(self, most: int) -> None:
        self.most, self.count = most, 0
        self._logits = self._iou = self._stability = torch.empty(0)
        self._proposed = torch.zeros(most, dtype=torch.bool)

    def add(self, logits: torch.Tensor, iou: torch.Tensor, stability: torch.Tensor, proposed: bool) -> None:
        if not len(logits):
            return
        if not len(self._logits):
            self._logits = torch.empty(self.most, *logits.shape[1:], dtype=torch.half)
            self._iou, self._stability = torch.empty(self.most), torch.empty(self.most)
        end = self.count + len(logits)
        self._logits[self.count : end], self._iou[self.count : end] = logits, iou
        self._stability[self.count : end], self._proposed[self.count : end] = stability, proposed
        self.count = end

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (N, h, w), IoU (N,), stability (N,) and whether proposed (N,) of the N masks kept."""
        n = self.count
        return self._logits[:n], self._iou[:n], self._stability[:n], self._proposed[:n]


def _boxes(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (N, 4) around the masks ``logits > 0`` (N, h, w), and which are not empty, a few at a time."""
    _, amg = import_mobile_sam()
    boxes = torch.zeros(len(logits), 4, dtype=torch.long)
    nonempty = torch.zeros(len(logits), dtype=torch.bool)
    for start in range(0, len(logits), BOXES_PER_STEP):
        binary = logits[start : start + BOXES_PER_STEP] > 0
        boxes[start : start + len(binary)] = amg.batched_mask_to_box(binary)
        nonempty[start : start + len(binary)] = binary.flatten(1).any(1)
    return boxes, nonempty


def nonempty(masks: np.ndarray) -> np.ndarray:
    """Which masks (N, H, W) hold a pixel (on valid pixels, an upsampled mask can hold none).

    Masks of the whole tile are kept: the tile may lie inside an object, or the mask is the image
    rather than an object in it, which only the neighbouring tiles tell (``geosam.stitch``).
    """
    return np.asarray(masks.reshape(len(masks), -1).any(1))
