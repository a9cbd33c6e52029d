"""What every segmenter takes and returns."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from geosam.settings import MODEL
from geosam.tiling import TileImage

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Funnel:
    """How many masks each stage of automatic mode let through, in a tile or (added up) a scene: what says
    why a scene gave no objects."""

    tiles: int = 1  # tiles counted
    prompts: int = 0  # grid points on valid pixels
    masks: int = 0  # masks the model answered them with (3 a point, or 1)
    confident: int = 0  # of those, predicted IoU at least pred_iou_thresh
    stable: int = 0  # of those, stability score at least stability_score_thresh
    distinct: int = 0  # of those, not empty and not suppressed by a better one overlapping it
    objects: int = 0  # of those, holding a valid pixel (whole-tile masks too: the stitcher judges them)
    proposals: int = 0  # prompts proposed where the tile looks like a class's examples (find-them-all)

    def __add__(self, other: Funnel) -> Funnel:
        return Funnel(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class Masks:
    """Boolean masks over one tile image, with the model's confidence in each."""

    masks: np.ndarray  # bool (N, H, W)
    scores: np.ndarray  # float32 (N,): predicted IoU
    stability: np.ndarray  # float32 (N,): stability score
    funnel: Funnel | None = None  # automatic mode: how many masks each stage kept
    descriptors: np.ndarray | None = None  # float32 (N, C): what each object looks like to the model
    proposed: np.ndarray | None = None  # bool (N,): answers to find-them-all's proposals, not the grid

    def __post_init__(self) -> None:
        n = len(self.masks)
        if self.masks.ndim != 3 or len(self.scores) != n or len(self.stability) != n:
            raise ValueError("masks must be (N, H, W) with N scores and N stability values")
        if any(a is not None and len(a) != n for a in (self.descriptors, self.proposed)):
            raise ValueError("masks must have one descriptor and one proposed flag each")

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def empty(cls, height: int, width: int, funnel: Funnel | None = None) -> Masks:
        return cls(
            np.zeros((0, height, width), bool), np.zeros(0, np.float32), np.zeros(0, np.float32), funnel
        )


@dataclass(frozen=True)
class Find:
    """Find-them-all: each class's prototype descriptor and the cell similarity that proposes a prompt
    (``geosam.models.features.proposals``); of the model's masks for a proposal, the one most like its
    class's prototype among those passing the filters below is kept (``geosam.models.automatic``)."""

    prototypes: tuple[tuple[float, ...], ...]  # (K, C) unit vectors, one per class
    thresholds: tuple[float, ...]  # (K,) a cell at least this similar to its class's prototype is a peak
    most: int = 64  # proposals per class and tile, the most similar first
    # a proposal is evidence of an object, so its answers pass laxer filters than the grid's
    pred_iou_thresh: float = 0.8  # drop a proposal's masks the model rates below this IoU
    stability_score_thresh: float = 0.85  # and those less stable than this


@dataclass(frozen=True)
class AutomaticParams:
    """Settings of automatic mode; the defaults suit 1024-pixel tiles of aerial imagery.

    The first four take their defaults from the settings (``geosam.settings.Model``, where
    ``stability_score_thresh`` is ``stability_thresh``), which also hold the limits that the command
    line and pipeline files check.

    Attributes:
        points_per_side: The prompt grid is ``points_per_side``² points over the tile (fewer is faster).
        points_per_batch: Prompts decoded per model call: more is faster and takes more memory.
        pred_iou_thresh: Masks the model itself rates below this predicted IoU (0 to 1) are dropped.
        stability_score_thresh: Masks whose stability score (0 to 1) is below this are dropped: those
            that change when the threshold on the mask logits moves.
        stability_score_offset: The shift of the logit threshold that the stability score is
            measured with (logit units).
        box_nms_thresh: Of two masks whose boxes overlap (IoU) more than this, the lower-scored one
            is suppressed.
        find: Prompts proposed where the tile looks like a class's examples, answered beside the
            grid's (``geosam.classes``).

    Raises:
        ValueError: ``points_per_side`` or ``points_per_batch`` below 1.
    """

    points_per_side: int = MODEL.points_per_side  # the prompt grid is points_per_side² over the tile
    points_per_batch: int = MODEL.points_per_batch  # prompts decoded per model call (memory vs. speed)
    pred_iou_thresh: float = MODEL.pred_iou_thresh  # drop masks the model itself rates below this IoU
    stability_score_thresh: float = (
        MODEL.stability_thresh
    )  # drop masks that change when the logit threshold moves
    stability_score_offset: float = 1.0  # the logit shift used for the stability score
    box_nms_thresh: float = 0.7  # suppress lower-scored masks whose boxes overlap more than this
    find: Find | None = None  # also prompt where the tile looks like these classes' examples

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be at least 1")


@dataclass(frozen=True)
class Embedding:
    """An image embedding with the sizes needed to map prompts and masks to the image."""

    features: torch.Tensor  # (1, 256, 64, 64)
    original_size: tuple[int, int]  # (H, W) of the image
    input_size: tuple[int, int]  # (h, w) after resizing the longest side to the model input


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
