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
        return cls(
            np.zeros((0, height, width), bool), np.zeros(0, np.float32), np.zeros(0, np.float32)
        )


@runtime_checkable
class Segmenter(Protocol):
    """Segments everything in a tile image: the interface the pipeline runs on workers."""

    name: str

    def automatic(self, tile: TileImage) -> Masks:
        """Masks (H×W, the tile image's size) of all objects in ``tile.image``, only on ``tile.valid`` pixels."""
        ...
