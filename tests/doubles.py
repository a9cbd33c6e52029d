"""The tests' doubles of models and model sources, in one place (picklable where they travel to Dask
worker processes, which import them from ``tests.doubles``). The reference segmenter of synthetic
scenes, which benchmarks use too, is public: ``geosam.testing``."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from geosam.models.base import AutomaticParams, Embedding, Funnel, Masks
from geosam.testing import ReferenceSegmenter
from geosam.tiling import TileImage


@dataclass(frozen=True)
class SlowReference:
    """The reference segmenter of a synthetic scene's label raster, ``delay`` seconds per tile.

    Tiles listed in ``fail`` (as ``"row,col"``) raise every time; each try on them leaves a file in
    ``tries`` (when given), so tests can count the retries.
    """

    labels: str
    delay: float = 0.0
    fail: tuple[str, ...] = ()
    tries: str | None = None
    trace: str | None = None  # a folder: each tile leaves PID-ROW_COL-start before and -end after
    name: str = "slow-reference"

    def check(self) -> None:
        pass

    def load(self) -> _Slow:
        return _Slow(self)


class _Slow:
    name = "slow-reference"

    def __init__(self, source: SlowReference) -> None:
        self.source = source
        self.reference = ReferenceSegmenter(source.labels)

    def automatic(self, tile: TileImage) -> Masks:
        where = f"{tile.tile.row},{tile.tile.col}"
        if where in self.source.fail:
            if self.source.tries:
                os.close(tempfile.mkstemp(dir=self.source.tries, prefix=f"try-{where}-")[0])
            raise RuntimeError(f"the model fails on tile {where}")
        self._mark(tile, "start")
        time.sleep(self.source.delay)
        masks = self.reference.automatic(tile)
        self._mark(tile, "end")
        return masks

    def _mark(self, tile: TileImage, what: str) -> None:
        if self.source.trace:
            Path(self.source.trace, f"{os.getpid()}-{tile.tile.row}_{tile.tile.col}-{what}").touch()


def from_environment(
    name: str,
    device: str = "cpu",
    params: object = None,
    **_model_options: object,  # checkpoint, backend, precision ...: not used by the reference
) -> SlowReference:
    """Stands in for ``ModelSpec`` in tests/double_cli.py: ``-m LABELS.tif``; delay and failing tiles
    from $GEOSAM_TEST_DELAY and $GEOSAM_TEST_FAIL (``row,col;row,col``), $GEOSAM_TEST_TRIES and $GEOSAM_TEST_TRACE (folders)."""
    fail = tuple(t for t in os.environ.get("GEOSAM_TEST_FAIL", "").split(";") if t)
    delay = float(os.environ.get("GEOSAM_TEST_DELAY", "0"))
    return SlowReference(
        name, delay, fail, os.environ.get("GEOSAM_TEST_TRIES"), os.environ.get("GEOSAM_TEST_TRACE")
    )


@dataclass(frozen=True)
class Bright:
    """A segmenter that finds bright pixels (one mask), or everything, in a tile."""

    everything: bool = False
    name: str = "bright"

    def check(self) -> None:
        pass

    def load(self) -> Bright:
        return self

    def automatic(self, tile: TileImage) -> Masks:
        mask = np.ones(tile.valid.shape, bool) if self.everything else tile.image.mean(axis=2) > 128
        return Masks(mask[None], np.ones(1, np.float32), np.ones(1, np.float32))


@dataclass(frozen=True)
class Counting:
    """A segmenter that finds nothing and says so as automatic mode counts it: ``funnel`` every tile."""

    funnel: Funnel
    params: AutomaticParams = field(default_factory=AutomaticParams)
    name: str = "counting"

    def check(self) -> None:
        pass

    def load(self) -> Counting:
        return self

    def automatic(self, tile: TileImage) -> Masks:
        return Masks.empty(*tile.valid.shape, self.funnel)


@dataclass(frozen=True)
class RecordingSource:
    """Test double of a model source: each load() leaves a file naming its process and torch threads."""

    folder: str
    name: str = "recording"

    def check(self) -> None:
        pass

    def load(self) -> RecordingSegmenter:
        import torch

        Path(self.folder, f"load-{os.getpid()}-{torch.get_num_threads()}").touch()
        return RecordingSegmenter(self.folder)


@dataclass
class RecordingSegmenter:
    """Finds one object: the bright pixels of the tile."""

    folder: str
    name: str = "recording"

    def automatic(self, tile: TileImage) -> Masks:
        os.close(tempfile.mkstemp(dir=self.folder, prefix=f"task-{os.getpid()}-")[0])
        mask = (tile.image[..., 0] > 127) & tile.valid
        return Masks(mask[None], np.ones(1, np.float32), np.ones(1, np.float32))


class WholeTile:
    """Test double answering every tile with one mask of all its pixels, nodata included."""

    name = "whole tile"

    def automatic(self, tile: TileImage) -> Masks:
        return Masks(np.ones((1, *tile.valid.shape), bool), np.ones(1, np.float32), np.ones(1, np.float32))


class Forgetful(WholeTile):
    """``WholeTile`` that counts the calls to drop what it keeps for prompts."""

    def __init__(self) -> None:
        self.forgotten = 0

    def forget(self) -> None:
        self.forgotten += 1


@dataclass(frozen=True)
class Double:
    """A model stand-in for both modes: automatic finds the bright pixels; a point prompt the bright blob."""

    name: str = "double"
    checksum: str | None = None
    image_size: int = 256

    def check(self) -> None:
        pass

    def load(self) -> Double:
        return self

    def automatic(self, tile) -> Masks:
        blobs, n = ndimage.label(tile.image.mean(axis=2) > 128)
        masks = blobs[None] == np.arange(1, n + 1)[:, None, None]
        # objects in the left half of the scene score 0.95, the others 0.85 (below a 0.9 threshold)
        centres = [tile.tile.read.x0 + np.nonzero(m)[1].mean() for m in masks]
        scores = np.array([0.95 if x < 150 else 0.85 for x in centres], np.float32)
        return Masks(masks, scores, np.ones(n, np.float32))

    def embed(self, image: np.ndarray) -> Embedding:
        features = torch.from_numpy(image.mean(axis=2).astype(np.float32))[None, None]
        return Embedding(features, image.shape[:2], image.shape[:2])

    def prompt(self, embedding, points=None, labels=None, box=None):
        blobs, _ = ndimage.label(embedding.features[0, 0].numpy() > 128)
        x, y = points[0] + 0.5
        blob = blobs[int(y), int(x)]
        return (blobs == blob) & (blob > 0), 0.8, 0.9


class Offers:
    """Offers the same masks for every prompt, and records the points it was asked at."""

    name = "offers"

    def __init__(self, masks: np.ndarray) -> None:
        self.masks, self.asked = masks, []

    def automatic(self, tile: TileImage) -> Masks:
        raise NotImplementedError

    def point_masks(self, tile: TileImage, points: list[np.ndarray]) -> list[Masks]:
        self.asked.extend(points)
        ones = np.ones(len(self.masks), np.float32)
        return [Masks(self.masks, ones, ones) for _ in points]


class Twice:
    """A segmenter that answers every reference mask twice, the copy less its first pixel and scored lower."""

    name = "twice"

    def __init__(self, labels: str) -> None:
        self.reference = ReferenceSegmenter(labels)

    def automatic(self, tile: TileImage) -> Masks:
        masks = self.reference.automatic(tile)
        shrunk = masks.masks.copy().reshape(len(masks), -1)
        shrunk[np.arange(len(masks)), shrunk.argmax(axis=1)] = False
        shrunk = shrunk.reshape(masks.masks.shape)
        return Masks(
            np.concatenate([masks.masks, shrunk]),
            np.concatenate([masks.scores, masks.scores * 0.9]),
            np.concatenate([masks.stability, masks.stability]),
        )


@dataclass(frozen=True)
class FlatRegions:
    """Finds a synthetic scene's flat-coloured objects in the image itself, whatever its stretch: each
    4-connected region of one colour with at least ``min_pixels`` valid pixels (textured ground has none)."""

    min_pixels: int = 16
    name: str = "flat-regions"

    def check(self) -> None:
        pass

    def load(self) -> FlatRegions:
        return self

    def automatic(self, tile: TileImage) -> Masks:
        image = tile.image.astype(np.int64)
        code = np.where(tile.valid, (image[..., 0] << 16) | (image[..., 1] << 8) | image[..., 2], -1)
        values, counts = np.unique(code[code >= 0], return_counts=True)
        masks = []
        for value in values[counts >= self.min_pixels]:
            regions, n = ndimage.label(code == value)
            sizes = np.bincount(regions.ravel())
            masks += [regions == k for k in range(1, n + 1) if sizes[k] >= self.min_pixels]
        stack = np.array(masks, bool).reshape(len(masks), *code.shape)
        ones = np.ones(len(masks), np.float32)
        return Masks(stack, ones, ones.copy())
