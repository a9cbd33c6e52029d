"""What every segmenter takes and returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from geosam.tiling import TileImage


@dataclass(frozen=True)
class Masks:
    """Boolean masks over one tile image, with the model's confidence in each."""

    masks: np.ndarray  # bool (N, H, W)
    scores: np.ndarray  # float32 (N,): predicted IoU
    stability: np.ndarray  # float32 (N,): stability score

    def __post_init__(self) -> None:
        n = len(self.masks)
        if self.masks.ndim != 3 or len(self.scores) != n or len(self.stability) != n:
            raise ValueError("masks must be (N, H, W) with N scores and N stability values")

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def empty(cls, height: int, width: int) -> Masks:
        return cls(np.zeros((0, height, width), bool), np.zeros(0, np.float32), np.zeros(0, np.float32))


@dataclass(frozen=True)
class AutomaticParams:
    """Settings of automatic mode; the defaults suit 1024-pixel tiles of aerial imagery."""

    points_per_side: int = 32  # the prompt grid is points_per_side² over the tile
    points_per_batch: int = 16  # prompts decoded per model call (memory vs. speed)
    pred_iou_thresh: float = 0.88  # drop masks the model itself rates below this IoU
    stability_score_thresh: float = 0.92  # drop masks that change when the logit threshold moves
    stability_score_offset: float = 1.0  # the logit shift used for the stability score
    box_nms_thresh: float = 0.7  # suppress lower-scored masks whose boxes overlap more than this
    max_area_fraction: float = 0.95  # masks of more of the tile's valid pixels are the image, not an object

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be at least 1")
        if not 0 < self.max_area_fraction <= 1:
            raise ValueError("max_area_fraction must be above 0 and at most 1")


@runtime_checkable
class Segmenter(Protocol):
    """Segments everything in a tile image: the interface the pipeline runs on workers."""

    name: str

    def automatic(self, tile: TileImage) -> Masks:
        """Masks (H×W, the tile image's size) of all objects in ``tile.image``, only on ``tile.valid`` pixels;
        new arrays, which the caller may change."""
        ...


@runtime_checkable
class PointPromptable(Protocol):
    """A segmenter that can also be asked what object lies under given points of a tile image."""

    def point_masks(self, tile: TileImage, points: list[np.ndarray]) -> list[Masks]:
        """For each set of positive points (N, 2; x, y in tile image pixels), the masks the model
        offers for the object there (any number, on ``tile.valid`` pixels only)."""
        ...
