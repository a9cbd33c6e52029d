"""What an object looks like to the model: descriptors pooled from the image embedding, and the cells of
a tile that look like a class's examples.

A descriptor is the mean of the encoder's features (C × 64 × 64 cells, 16 model-input pixels each) under
an object's mask, weighted by how much of each cell the mask covers, scaled to unit length. It costs one
matrix product per tile: the embedding is the one the tile was segmented with.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from geosam.models.base import Embedding, Find

LOW_RES_PER_CELL = 4  # low-resolution mask pixels (model input / 4) per feature cell (model input / 16)


def pool(embedding: Embedding, weights: torch.Tensor) -> np.ndarray:
    """Unit descriptors (N, C) of N masks given as cell weights (N, 64, 64) over the embedding's cells,
    pooled where the embedding is (a GPU's)."""
    features = embedding.features[0].float()  # (C, 64, 64)
    weights = weights.to(features.device, torch.float32)
    sums = torch.einsum("nhw,chw->nc", weights, features)
    empty = weights.flatten(1).sum(1) <= 0
    if empty.any():  # no cell weight: the mean of every cell, not a zero vector
        sums[empty] = features.flatten(1).mean(1)
    return F.normalize(sums, dim=1).cpu().numpy().astype(np.float32)


def low_res_weights(low_res: torch.Tensor) -> torch.Tensor:
    """Cell weights (N, 64, 64) of masks given as low-resolution logits (N, 256, 256)."""
    return F.avg_pool2d((low_res > 0).float()[:, None], LOW_RES_PER_CELL)[:, 0]


def mask_weights(embedding: Embedding, masks: np.ndarray, image_size: int) -> torch.Tensor:
    """Cell weights (N, 64, 64) of masks (N, H, W) at the embedded image's resolution."""
    h, w = embedding.input_size
    resized = F.interpolate(torch.from_numpy(masks).float()[:, None], size=(h, w), mode="area")
    padded = F.pad(resized, (0, image_size - w, 0, image_size - h))
    cell = image_size // embedding.features.shape[-1]
    return F.avg_pool2d(padded, cell)[:, 0]


def similarity(embedding: Embedding, prototypes: np.ndarray) -> torch.Tensor:
    """Cosine similarity (K, 64, 64) of every cell to each of K prototypes (K, C), on the CPU."""
    cells = F.normalize(embedding.features[0].float(), dim=0)
    prototypes_ = torch.as_tensor(prototypes, dtype=torch.float32, device=cells.device)
    return torch.einsum("kc,chw->khw", prototypes_, cells).cpu()


def proposals(
    embedding: Embedding, find: Find, valid: np.ndarray, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt points (M, 2; x, y in image pixels) at the cells most like each class's examples, and the
    class of each (M,): local maxima (3×3) of the similarity at least the class's threshold, on valid
    pixels, at most ``find.most`` a class, the most similar first."""
    sims = similarity(embedding, np.asarray(find.prototypes, np.float32))
    cells = sims.shape[-1]
    cell = image_size / cells
    h, w = embedding.input_size
    rows, cols = int(np.ceil(h / cell)), int(np.ceil(w / cell))
    peaks = (sims == F.max_pool2d(sims[None], 3, stride=1, padding=1)[0]) & (
        sims >= torch.as_tensor(find.thresholds, dtype=torch.float32)[:, None, None]
    )
    peaks[:, rows:, :] = False
    peaks[:, :, cols:] = False
    scale = np.array(embedding.original_size[::-1], float) / np.array((w, h), float)
    points, classes = [], []
    for k in range(len(sims)):
        r, c = np.nonzero(peaks[k].numpy())
        order = np.argsort(-sims[k].numpy()[r, c], kind="stable")
        xy = (np.stack([c[order], r[order]], 1) + 0.5) * cell * scale
        xy = np.minimum(xy, np.array(valid.shape[::-1]) - 1)
        on = valid[xy[:, 1].astype(int), xy[:, 0].astype(int)]
        xy = xy[on][: find.most]
        points.append(xy)
        classes.append(np.full(len(xy), k))
    return np.concatenate(points).astype(np.float32), np.concatenate(classes)
