"""Prompting a tile's model for the objects its neighbours saw run into it (geosam.reprompt)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geosam.cluster
from geosam.georef import open_scene
from geosam.models.base import Masks, PointPromptable
from geosam.reprompt import Reprompter, answer, prompts_toward
from geosam.resume import WorkDir
from geosam.scene_run import segment
from geosam.seams import Piece, pieces_from_masks
from geosam.stitch import Stitcher
from geosam.testing import ReferenceModel, ReferenceSegmenter, SyntheticScene, make_scene
from geosam.tiling import TileGrid, TileImage, read_tile
from geosam.vectorize import to_pixels

from .doubles import Offers
from .test_seams import _same


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> SyntheticScene:
    """256×192 px, objects up to 192 px: three tiles across at the smallest tile size."""
    return make_scene(tmp_path_factory.mktemp("reprompt"), seed=3, width=256, height=192, objects=40)


def _forgetful(scene: SyntheticScene, grid: TileGrid, rounds: int | None = None, **options) -> list:
    """Polygons of a run whose model misses objects cut by its tile in every other tile."""
    model = ReferenceModel(str(scene.labels), misses_cut=True)
    more = {} if rounds is None else {"prompt_rounds": rounds}
    frame = segment(
        scene.path, model=model, tile_size=grid.size, overlap=grid.overlap, workers=0, **more, **options
    )
    return list(to_pixels(frame.geometry.values, scene.transform))


@pytest.mark.parametrize("size, overlap", [(96, 16), (64, 8), (80, 2)])
def test_prompts_find_what_automatic_mode_missed(scene, size, overlap):
    grid = TileGrid(scene.width, scene.height, size, overlap)
    truth = list(scene.truth.values())
    assert not _same(_forgetful(scene, grid, rounds=0), truth), "the model misses nothing here"
    assert _same(_forgetful(scene, grid), truth)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(64, 160), overlap_share=st.floats(0.0, 0.5))
def test_any_tiling_of_a_forgetful_model_gives_the_objects(scene, size, overlap_share):
    grid = TileGrid(scene.width, scene.height, size, max(1, int(size * overlap_share)))
    assert _same(_forgetful(scene, grid), list(scene.truth.values()))


def test_dask_workers_answer_prompts_as_this_process_does(scene):
    grid = TileGrid(scene.width, scene.height, 64, 8)
    model = ReferenceModel(str(scene.labels), misses_cut=True)
    frame = segment(scene.path, model=model, tile_size=64, overlap=8, workers=2)
    assert _same(list(to_pixels(frame.geometry.values, scene.transform)), _forgetful(scene, grid))


def test_a_resumed_run_reuses_the_answers(scene, tmp_path, monkeypatch):
    grid = TileGrid(scene.width, scene.height, 64, 8)
    work = tmp_path / "work"
    first = _forgetful(scene, grid, work_dir=work)
    assert list(work.glob("*/*.r1-*.tile")), "answers were not kept"
    asked = []
    monkeypatch.setattr(geosam.cluster, "prompt_tile", lambda *args: asked.append(args))
    assert _same(_forgetful(scene, grid, work_dir=work), first)
    assert not asked
    # answers are kept under a digest of their prompts: other prompts (after a neighbour that had
    # failed is segmented, say) are asked again
    (stored,) = [p for p in work.iterdir() if p.is_dir()]
    folder, tile = WorkDir(work, stored.name), grid.tile(0, 0)
    piece = Piece(shapely.box(0, 0, 3, 2), False, 0.5, 0.75)
    folder.store(tile, [piece], True, 1, "abc")
    assert folder.load(tile, 1, "abc") == ([piece], True, 0) and folder.load(tile, 1, "abd") is None
    assert folder.finished(grid)[0, 0] == 1 and folder.finished(grid).count() == len(grid)


def test_prompting_streams_tiles_in_any_order_and_holds_only_nearby_rows(tmp_path):
    scene = make_scene(tmp_path, seed=5, width=1024, height=1024, max_size=120, objects=300)
    grid = TileGrid(scene.width, scene.height, 64, 8)  # 18 × 18 tiles
    plan, model = open_scene(scene.path), ReferenceSegmenter(str(scene.labels), misses_cut=True)
    images = {(t.row, t.col): read_tile(plan, t, grid.size) for t in grid}
    pieces = {
        key: pieces_from_masks(image.tile, model.automatic(image), grid) for key, image in images.items()
    }

    def run(tiles: list, pick: random.Random | None) -> tuple[list, int]:
        reprompter, stitcher, jobs, out, held = Reprompter(grid), Stitcher(grid), [], [], 0

        def feed(tile, round, found) -> None:
            ready, final = reprompter.add(tile, round, found)
            jobs.extend(ready)
            for done, kept in final:
                out.extend(o.geometry for o in stitcher.add(done, kept))

        for tile in tiles:
            feed(tile, 0, pieces[(tile.row, tile.col)])
            while jobs:
                job = jobs.pop(pick.randrange(len(jobs)) if pick else 0)
                feed(
                    job.tile,
                    job.round,
                    answer(images[(job.tile.row, job.tile.col)], job.prompts, model, grid),
                )
            held = max(held, reprompter.held)
        reprompter.close()
        stitcher.close()
        return out, held

    in_order, held = run(list(grid), None)
    shuffled = list(grid)
    random.Random(1).shuffle(shuffled)
    assert _same(run(shuffled, random.Random(2))[0], in_order)
    assert _same(in_order, list(scene.truth.values()))
    rows, cols = grid.shape
    most_in_six_rows = max(
        sum(len(pieces[(r, c)]) for r in range(r0, r0 + 6) for c in range(cols)) for r0 in range(rows - 5)
    )
    assert 0 < held <= most_in_six_rows < sum(map(len, pieces.values())) / 2


def _tile_masks(tile, boxes: list[tuple[int, int, int, int]], size: int = 160) -> np.ndarray:
    masks = np.zeros((len(boxes), size, size), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        mask[y0 - tile.read.y0 : y1 - tile.read.y0, x0 - tile.read.x0 : x1 - tile.read.x0] = True
    return masks


def test_a_piece_the_neighbour_missed_is_put_to_its_model():
    # two tiles of 160 px, overlap 64: read windows x 0..160 and 96..256, cores meet at x = 128; the
    # left tile sees an object run out of its window at x = 160, the right tile saw nothing of it
    grid = TileGrid(256, 128, 160, 64)
    left, right = grid.tile(0, 0), grid.tile(0, 1)
    seen = pieces_from_masks(
        left, Masks(_tile_masks(left, [(40, 30, 160, 90)]), np.ones(1), np.ones(1)), grid
    )
    (prompt,) = prompts_toward(left, right, [], seen, [])
    assert prompt.view.equals(shapely.box(96, 30, 160, 90))
    (x, y) = prompt.points[0]
    assert 96 < x < 160 and 30 < y < 90
    # offered: a part of it, all of it (on into the right tile's core), something else
    model = Offers(_tile_masks(right, [(96, 30, 160, 50), (96, 30, 230, 90), (170, 10, 250, 120)]))
    assert isinstance(model, PointPromptable)
    image = TileImage(right, np.zeros((160, 160, 3), np.uint8), np.ones((160, 160), bool))
    (found,) = answer(image, (prompt,), model, grid)
    assert found.full.equals(shapely.box(96, 30, 230, 90))
    assert np.allclose(model.asked[0], np.array(prompt.points) - (96, 0))
    # with the answer the object comes out whole, without the cut at x = 128
    stitcher = Stitcher(grid)
    objects_ = stitcher.add(left, seen) + stitcher.add(right, [found])
    assert len(objects_) == 1 and objects_[0].geometry.equals(shapely.box(40, 30, 230, 90))


def test_a_piece_the_neighbour_sees_or_that_stays_in_its_tile_asks_nothing():
    grid = TileGrid(256, 128, 160, 64)
    left, right = grid.tile(0, 0), grid.tile(0, 1)
    ones = np.ones(1)
    cut = pieces_from_masks(left, Masks(_tile_masks(left, [(40, 30, 160, 90)]), ones, ones), grid)
    inside = pieces_from_masks(left, Masks(_tile_masks(left, [(40, 30, 150, 90)]), ones, ones), grid)
    there = pieces_from_masks(right, Masks(_tile_masks(right, [(96, 30, 230, 90)]), ones, ones), grid)
    assert prompts_toward(left, right, [], cut, there) == []
    assert prompts_toward(left, right, [], inside, []) == []
    # an answer that does not agree with the piece in the shared window is left out
    (prompt,) = prompts_toward(left, right, [], cut, [])
    image = TileImage(right, np.zeros((160, 160, 3), np.uint8), np.ones((160, 160), bool))
    assert answer(image, (prompt,), Offers(_tile_masks(right, [(96, 30, 160, 45)])), grid) == []


def test_reprompter_refuses_rounds_out_of_turn():
    grid = TileGrid(256, 128, 160, 64)
    reprompter = Reprompter(grid, rounds=2)
    reprompter.add(grid.tile(0, 0), 0, [])
    with pytest.raises(ValueError, match="out of turn"):
        reprompter.add(grid.tile(0, 0), 1, [])
    with pytest.raises(RuntimeError, match="not final"):
        reprompter.close()


def test_reference_answers_the_object_under_the_first_point(scene):
    grid = TileGrid(scene.width, scene.height, 256, 1)
    image = read_tile(open_scene(scene.path), grid.tile(0, 0), grid.size)
    with rasterio.open(scene.labels) as ds:
        labels = ds.read(1)
    (y, x), (by, bx) = (
        np.argwhere(labels == labels.max())[0],
        np.argwhere((labels == 0) & image.valid[:192])[0],
    )
    on, off = ReferenceSegmenter(str(scene.labels)).point_masks(
        image, [np.array([[x + 0.5, y + 0.5]]), np.array([[bx, by]])]
    )
    assert len(on) == 1 and (on.masks[0][:192] == (labels == labels.max())).all()
    assert len(off) == 0


def test_the_report_counts_prompts_and_their_pieces(scene):
    model = ReferenceModel(str(scene.labels), misses_cut=True)
    _, report = geosam.scene_run.segment_scene(scene.path, model=model, tile_size=64, overlap=8, workers=0)
    assert report.prompts >= report.prompt_pieces > 0
    _, none = geosam.scene_run.segment_scene(
        scene.path, model=model, tile_size=64, overlap=8, workers=0, prompt_rounds=0
    )
    assert none.prompts == none.prompt_pieces == 0
