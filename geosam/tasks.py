"""What runs on a Dask worker: read a tile's window, segment it or answer its prompts, return pieces.

Workers read their own windows from the scene's path (pixels never travel through the scheduler) and
keep their model loaded between tasks. Each task's value is small: the tiles' pieces, the worker's
name and its peak memory.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from geosam import heap
from geosam.georef import Scene
from geosam.models.base import Funnel, Segmenter
from geosam.report import peak_rss
from geosam.reprompt import PromptJob, answer
from geosam.seams import Piece, pieces_from_masks
from geosam.tiling import Box, Tile, TileGrid, read_tile


class ModelSource(Protocol):
    """Anything that names a segmenter and loads it on a worker (``ModelSpec`` for real models)."""

    @property
    def name(self) -> str: ...

    def __hash__(self) -> int: ...  # workers keep the model loaded per source (functools.lru_cache)

    def check(self) -> None: ...

    def load(self) -> Segmenter: ...


@dataclass(frozen=True)
class TileResult:
    tile: Tile
    pieces: list[Piece]
    segmented: bool  # False when the tile had no valid pixels (or failed)
    reused: bool = False  # read back from the work folder of an earlier run
    error: str | None = None  # why the tile failed, after its retries
    input_error: bool = False  # it failed on its input (an InputError), not in the model or the cluster
    round: int = 0  # 0: automatic mode; k: answers to the tile's round-k prompts (geosam.reprompt)
    model_s: float = 0.0  # seconds in the model on the worker: segmenting the tile, or answering its prompts
    data_pixels: int = 0  # valid pixels in the tile's core (round 0): its share of the scene's data
    data_box: Box | None = None  # the bounds of those pixels (scene pixels): where the scene's data lies
    funnel: Funnel | None = None  # automatic mode: how many masks each stage kept (models that count them)


@functools.lru_cache(maxsize=1)
def _worker_model(source: ModelSource, threads: int | None) -> Segmenter:
    """The model, loaded once per worker process (``threads=None``: torch's threads as the worker set them)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return source.load()


def segment_tiles(
    scene: Scene, grid: TileGrid, tiles: Sequence[Tile], model: Segmenter, prompts_follow: bool = True
) -> list[TileResult]:
    """Read the tiles' windows, segment them (in one encoder call where the model can), return pieces.

    Unless ``prompts_follow``, the model then drops what it keeps for prompts about them (a ViT-B
    worker: up to 16 embeddings and 2 tiles' decoding terms, 120 MB).
    """
    images = [read_tile(scene, tile, grid.size) for tile in tiles]
    todo = [image for image in images if image.valid.any()]
    many = getattr(model, "automatic_many", None)
    start = time.perf_counter()
    found = iter(many(todo) if many is not None and len(todo) > 1 else [model.automatic(i) for i in todo])
    seconds = (time.perf_counter() - start) / max(len(todo), 1)
    results = []
    for tile, image in zip(tiles, images, strict=True):
        if not image.valid.any():
            results.append(TileResult(tile, [], False))
            continue
        masks = next(found)
        np.logical_and(masks.masks, image.valid, out=masks.masks)  # invalid pixels are never objects
        pieces = pieces_from_masks(tile, masks, grid, image.valid)
        data, box = _core_data(tile, image.valid)
        results.append(
            TileResult(
                tile, pieces, True, model_s=seconds, data_pixels=data, data_box=box, funnel=masks.funnel
            )
        )
    forget = getattr(model, "forget", None)  # SAM models keep embeddings for prompts
    if not prompts_follow and forget is not None:
        forget()
    return results


def _core_data(tile: Tile, valid: np.ndarray) -> tuple[int, Box | None]:
    """Valid pixels in the tile's core (``valid``: its read window's, padded) and their bounds (scene
    pixels; None when there are none)."""
    x0, y0 = tile.core.x0 - tile.read.x0, tile.core.y0 - tile.read.y0
    core = valid[y0 : y0 + tile.core.height, x0 : x0 + tile.core.width]
    box = Box.around(core, (tile.core.x0, tile.core.y0))
    return (0, None) if box is None else (int(core.sum()), box)


def segment_task(
    scene: Scene, grid: TileGrid, tiles: tuple[Tile, ...], source: ModelSource, threads: int | None,
    prompts_follow: bool,
) -> tuple[list[TileResult], str, int]:  # fmt: skip
    """One Dask task: ``segment_tiles`` with the worker's cached model; with the worker's peak memory."""
    return _task_done(segment_tiles(scene, grid, tiles, _worker_model(source, threads), prompts_follow))


def _task_done(results: list[TileResult]) -> tuple[list[TileResult], str, int]:
    """A task's results with the worker's name and peak memory, its heap given back first."""
    heap.give_back()  # a worker then holds what one task needs, not what the heap kept over many (see geosam.cluster.MALLOC)
    return results, _worker_name(), peak_rss()


def prompt_tile(scene: Scene, grid: TileGrid, job: PromptJob, model: Segmenter) -> TileResult:
    """Read a tile's window again and answer its prompts (``geosam.reprompt``)."""
    image = read_tile(scene, job.tile, grid.size)
    start = time.perf_counter()
    pieces = answer(image, job.prompts, model, grid)
    return TileResult(job.tile, pieces, True, round=job.round, model_s=time.perf_counter() - start)


def prompt_task(
    scene: Scene, grid: TileGrid, job: PromptJob, source: ModelSource, threads: int | None
) -> tuple[list[TileResult], str, int]:
    """One Dask task: ``prompt_tile`` with the worker's cached model; with the worker's peak memory."""
    return _task_done([prompt_tile(scene, grid, job, _worker_model(source, threads))])


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # not on a Dask worker
        return f"pid {os.getpid()}"
