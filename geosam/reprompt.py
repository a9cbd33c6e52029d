"""Asking a tile's model again for the objects that a neighbouring tile saw run into it.

The model's automatic mode can find an object in one tile and miss it in the next; the first
tile's piece then runs out of its read window with nothing across the seam, and the stitcher must
cut it straight at the core edge (or at the corner of four cores). Each such piece (running out
into the neighbour's window, or cut and reaching into its core) becomes a prompt for the
neighbour: points deep
inside the piece's part in the two tiles' shared window, put to the neighbour's model. Of the
masks the model offers, the one that agrees best with the piece in the shared window is kept, if
it agrees there (IoU of at least ``MATCH_IOU``): it is the neighbour's view of the object, it
continues into the neighbour's core, and the stitcher joins it to the piece like any other pair.
An answer can run out of its tile in turn: rounds repeat, each from the pieces that the previous
round found, up to ``rounds`` times.

The work is local and streams: a ``Reprompter`` takes each tile's pieces round by round (round 0
is automatic mode), in any order, gives back a tile's prompts for its next round as soon as its
four neighbours have finished the current one, and a tile's pieces of every round once its last
round is in; it forgets a tile's pieces once no neighbour can still ask from them.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass

import numpy as np
import shapely

from geosam import settings
from geosam.models.base import Masks, PointPromptable, Segmenter
from geosam.seams import (
    MATCH_IOU,
    Piece,
    continuations,
    matches,
    pieces_from_masks,
    raster,
    runs_out,
    whole_links,
)
from geosam.tiling import Box, Tile, TileGrid, TileImage, TileMarks

ROUNDS = settings.TILING.prompt_rounds  # 3: an object missed by up to three tiles in a row is found
POINTS = 1  # points per prompt: SAM answers one point with three masks, from part to whole


@dataclass(frozen=True)
class Prompt:
    """A neighbour's piece put to a tile's model: points inside its part in the shared window."""

    points: tuple[tuple[float, float], ...]  # scene pixels (x, y)
    view: shapely.Geometry  # the neighbour's piece in the shared window, scene pixels
    window: Box  # the window the two tiles share


@dataclass(frozen=True)
class PromptJob:
    """A tile's prompts of one round."""

    tile: Tile
    round: int
    prompts: tuple[Prompt, ...]

    @property
    def digest(self) -> str:
        """A hash of the prompts: stored answers are reused only for the same prompts."""
        h = hashlib.sha256()
        for prompt in self.prompts:
            h.update(repr((prompt.points, prompt.window)).encode())
            h.update(shapely.to_wkb(prompt.view))
        return h.hexdigest()[:16]


Key = tuple[int, int]


def prompts_toward(
    a: Tile,
    b: Tile,
    old: list[Piece],
    new: list[Piece],
    seen: list[Piece],
    points: int = POINTS,
    match_iou: float = MATCH_IOU,
) -> list[Prompt]:
    """Prompts for tile ``b`` from ``a``'s pieces ``new`` that run out of ``a`` into ``b``'s window, or
    that ``a`` saw cut and reach into ``b``'s core, where the stitcher would link them to none of
    ``b``'s pieces ``seen`` (``old``: ``a``'s earlier pieces, which take part in the stitcher's
    one-to-one matching)."""
    window = a.read.intersection(b.read)
    mine = old + new
    core = shapely.box(b.core.x0, b.core.y0, b.core.x1, b.core.y1)
    cut = [
        i for i in range(len(old), len(mine))
        if not mine[i].whole and (runs_out(mine[i], a, b) or _reaches(mine[i], core))
    ]  # fmt: skip
    if window is None or not cut:
        return []
    linked: set[int] = set()
    if seen:
        matched, _ = matches(a, b, mine, seen, match_iou)
        pairs = matched + continuations(a, b, mine, seen, matched, match_iou)
        linked = {i for i, _ in pairs + whole_links(a, b, mine, seen, pairs)}
    prompts = []
    for piece in (mine[i] for i in cut if i not in linked):
        view = shapely.clip_by_rect(piece.full, window.x0, window.y0, window.x1, window.y1)
        inside = _deepest(raster([view], window), points)
        if inside:
            scene = tuple((x + window.x0, y + window.y0) for x, y in inside)
            prompts.append(Prompt(scene, view, window))
    return prompts


def _reaches(piece: Piece, core: shapely.Geometry) -> bool:
    """Whether a cut piece holds pixels of a neighbour's core (where the corner of four cores cuts it)."""
    return not piece.complete and shapely.intersection(piece.full, core).area > 0


def _deepest(mask: np.ndarray, count: int) -> list[tuple[float, float]]:
    """Up to ``count`` pixel centres (x, y) farthest inside ``mask``, each outside the others' reach."""
    # imported here: scipy.ndimage is 16 MiB in every process that imports this module, Dask workers too
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(mask)
    rows, cols = np.ogrid[: mask.shape[0], : mask.shape[1]]
    found: list[tuple[float, float]] = []
    for _ in range(count):
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        reach = depth[y, x]
        if reach <= 0:
            break
        found.append((float(x) + 0.5, float(y) + 0.5))
        depth[(rows - y) ** 2 + (cols - x) ** 2 < (2 * reach) ** 2] = 0
    return found


def answer(
    image: TileImage,
    prompts: tuple[Prompt, ...],
    model: Segmenter,
    grid: TileGrid,
    match_iou: float = MATCH_IOU,
) -> list[Piece]:
    """The tile's pieces for its prompts: for each, the offered mask that agrees best with the
    neighbour's view in their shared window, where it agrees (IoU >= ``match_iou``). Where prompts
    from several neighbours find one object (answers alike above ``match_iou``), one piece answers
    them all: the answer whose worst agreement with their views is best. A model that cannot take
    point prompts answers nothing."""
    if not prompts or not isinstance(model, PointPromptable):
        return []
    tile = image.tile
    origin = np.array([tile.read.x0, tile.read.y0], np.float32)
    offered = model.point_masks(image, [np.array(p.points, np.float32) - origin for p in prompts])
    chosen: list[tuple[np.ndarray, float, float, np.ndarray | None]] = []
    asked: list[list[tuple[Prompt, np.ndarray]]] = []  # the prompts (with their views) each answers
    for prompt, masks in zip(prompts, offered, strict=True):
        view = raster([prompt.view], prompt.window)
        agree = [_agreement(mask, tile, prompt.window, view) for mask in masks.masks]
        if not agree or max(agree) < match_iou:
            continue
        best = int(np.argmax(agree))
        described = masks.descriptors[best] if masks.descriptors is not None else None
        found = (masks.masks[best], float(masks.scores[best]), float(masks.stability[best]), described)
        same = next((k for k, c in enumerate(chosen) if iou(c[0], found[0]) > match_iou), None)
        if same is None:
            chosen.append(found)
            asked.append([(prompt, view)])
            continue
        asked[same].append((prompt, view))
        chosen[same] = max(
            (chosen[same], found),
            key=lambda c: min(_agreement(c[0], tile, p.window, v) for p, v in asked[same]),
        )
    if not chosen:
        return []
    described = [c[3] for c in chosen]
    answers = Masks(
        np.stack([c[0] for c in chosen]),
        np.array([c[1] for c in chosen], np.float32),
        np.array([c[2] for c in chosen], np.float32),
        descriptors=None if any(d is None for d in described) else np.stack(described),
    )
    return pieces_from_masks(tile, answers, grid, image.valid, source="prompt")


def _agreement(mask: np.ndarray, tile: Tile, window: Box, view: np.ndarray) -> float:
    """IoU of a tile's mask and a neighbour's view (over ``window``) in that window."""
    x0, y0 = window.x0 - tile.read.x0, window.y0 - tile.read.y0
    return iou(mask[y0 : y0 + window.height, x0 : x0 + window.width], view)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(int((a | b).sum()), 1))


class Reprompter:
    """Streams tiles' pieces in round by round; gives back prompt jobs and tiles whose pieces are final.

    ``add(tile, 0, pieces)`` takes a tile's automatic pieces, ``add(tile, k, pieces)`` its answers to
    its round-k job; each returns the jobs that became ready (to be answered and added back) and the
    tiles whose rounds are all in, with their pieces of every round. Tiles added with
    ``segmented=False`` (no valid pixels, or failed) are never prompted. With ``rounds=0`` every tile
    is final as soon as it is added.
    """

    def __init__(
        self, grid: TileGrid, rounds: int = ROUNDS, points: int = POINTS, match_iou: float = MATCH_IOU
    ) -> None:
        if rounds < 0 or points < 1:
            raise ValueError("rounds must be at least 0 and points at least 1")
        self.grid, self.rounds, self.points, self.match_iou = grid, rounds, points, match_iou
        self._pieces: dict[Key, list[list[Piece]]] = {}  # each round's pieces, rounds in so far
        self._asked = TileMarks(grid)  # the last round asked of each tile (0: none)
        self._closed = TileMarks(grid)  # 1: the tile is never prompted
        self._final = TileMarks(grid)  # 1: its rounds are all in

    @property
    def held(self) -> int:
        """Pieces held now (the memory it takes)."""
        return sum(len(p) for rounds in self._pieces.values() for p in rounds)

    def add(
        self, tile: Tile, round: int, pieces: list[Piece], segmented: bool = True
    ) -> tuple[list[PromptJob], list[tuple[Tile, list[Piece]]]]:
        key = (tile.row, tile.col)
        known = len(self._pieces.get(key, []))
        if round != known or (round > 0 and self._asked[key] != round):
            raise ValueError(f"tile {key}: round {round} added out of turn")
        jobs: list[PromptJob] = []
        final: list[tuple[Tile, list[Piece]]] = []
        todo = deque([(tile, round, pieces)])
        while todo:
            tile, round, pieces = todo.popleft()
            key = (tile.row, tile.col)
            if round == 0 and not segmented:
                self._closed[key] = 1
            self._pieces.setdefault(key, []).append(list(pieces))
            if round == self.rounds:
                self._final[key] = 1
                final.append((tile, [p for r in self._pieces[key] for p in r]))
                self._forget(tile)
            for other in [tile, *self._four(tile)]:
                job = self._ready(other)
                if job is None:
                    continue
                if job.prompts:
                    jobs.append(job)
                else:
                    todo.append((job.tile, job.round, []))
        return jobs, final

    def _four(self, tile: Tile) -> list[Tile]:
        rows, cols = self.grid.shape
        near = [(tile.row + dr, tile.col + dc) for dr, dc in ((0, -1), (-1, 0), (0, 1), (1, 0))]
        return [self.grid.tile(r, c) for r, c in near if 0 <= r < rows and 0 <= c < cols]

    def _rounds_in(self, key: Key) -> int:
        return len(self._pieces.get(key, [])) if not self._final[key] else self.rounds + 1

    def _ready(self, tile: Tile) -> PromptJob | None:
        """The tile's next job, when it is due: its last round and its neighbours' are in."""
        key = (tile.row, tile.col)
        after = len(self._pieces.get(key, []))
        if self._final[key] or after == 0 or self._asked[key] >= after:
            return None
        near = self._four(tile)
        if any(self._rounds_in((t.row, t.col)) < after for t in near):
            return None
        self._asked[key] = after
        prompts: list[Prompt] = []
        if not self._closed[key]:
            seen = [p for r in self._pieces[key] for p in r]
            for other in near:
                theirs = self._pieces.get((other.row, other.col), [])
                if len(theirs) >= after:
                    old = [p for r in theirs[: after - 1] for p in r]
                    new = theirs[after - 1]
                    prompts += prompts_toward(other, tile, old, new, seen, self.points, self.match_iou)
        for other in near:
            self._forget(other)
        return PromptJob(tile, after, tuple(prompts))

    def _forget(self, tile: Tile) -> None:
        """Drop a final tile's pieces once every neighbour has asked its last round."""
        key = (tile.row, tile.col)
        near = self._four(tile)
        if (
            self._final[key]
            and key in self._pieces
            and all(self._asked[t.row, t.col] >= self.rounds for t in near)
        ):
            del self._pieces[key]

    def close(self) -> None:
        """Check that every tile went out final."""
        missing = len(self.grid) - self._final.count()
        if missing:
            raise RuntimeError(f"prompting unfinished: {missing} tiles not final")
