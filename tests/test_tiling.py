from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geosam.errors import InputError
from geosam.georef import open_scene
from geosam.tiling import TileGrid, TileMarks, read_tile

from .rasters import write


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
    size=st.integers(64, 1500),
    overlap_fraction=st.floats(0, 0.9),
)
def test_cores_cover_the_scene_exactly_once(width, height, size, overlap_fraction):
    grid = TileGrid(width, height, size, max(1, int(size * overlap_fraction)))
    rows, cols = grid.shape
    xs = [grid.tile(0, c).core for c in range(cols)]
    ys = [grid.tile(r, 0).core for r in range(rows)]
    assert xs[0].x0 == 0 and xs[-1].x1 == width
    assert ys[0].y0 == 0 and ys[-1].y1 == height
    assert all(a.x1 == b.x0 for a, b in pairwise(xs))
    assert all(a.y1 == b.y0 for a, b in pairwise(ys))
    for tile in grid:
        assert tile.read.width <= size and tile.read.height <= size
        assert tile.read.x0 <= tile.core.x0 < tile.core.x1 <= tile.read.x1
        assert tile.read.y0 <= tile.core.y0 < tile.core.y1 <= tile.read.y1
    assert len(grid) == rows * cols == len(list(grid))


def test_border_keeps_its_pixels_and_internal_edges_are_trimmed():
    grid = TileGrid(1900, 1000, 1024, 128)
    assert grid.shape == (1, 2)
    left, right = grid.tile(0, 0), grid.tile(0, 1)
    assert (left.read.x0, left.read.x1, left.core.x0, left.core.x1) == (0, 1024, 0, 896 + 64)
    assert (right.read.x0, right.read.x1, right.core.x0, right.core.x1) == (896, 1900, 960, 1900)
    assert left.read.intersection(right.read).width == 128


@pytest.mark.parametrize(("size", "overlap"), [(1024, 1024), (1024, 2000), (1024, 0), (8, 1), (100000, 1)])
def test_bad_tiling_is_refused(size, overlap):
    with pytest.raises(InputError, match=r"overlap|tile size"):
        TileGrid(5000, 5000, size, overlap)


def test_neighbours_are_the_tiles_whose_read_windows_overlap():
    grid = TileGrid(3000, 3000, 1024, 128)
    for tile in grid:
        expected = {(t.row, t.col) for t in grid if t != tile and tile.read.intersection(t.read)}
        assert {(n.row, n.col) for n in grid.neighbours(tile)} == expected


def test_read_tile_pads_edge_tiles_and_marks_nodata(tmp_path):
    data = np.random.default_rng(0).integers(1, 255, (3, 300, 500), dtype=np.uint8)
    data[:, :10, :] = 0
    path = write(tmp_path / "s.tif", data, nodata=0)
    scene = open_scene(path)
    grid = TileGrid(scene.width, scene.height, 256, 32)
    tile = grid.tile(1, 1)
    image = read_tile(scene, tile, grid.size)
    h, w = tile.read.height, tile.read.width
    assert image.image.shape == (256, 256, 3) and image.valid.shape == (256, 256)
    expected = data[:, tile.read.y0 : tile.read.y1, tile.read.x0 : tile.read.x1].transpose(1, 2, 0)
    np.testing.assert_array_equal(image.image[:h, :w], expected)
    assert image.valid[:h, :w].all() and not image.valid[h:, :].any() and not image.valid[:, w:].any()
    top = read_tile(scene, grid.tile(0, 0), grid.size)
    assert not top.valid[:10].any() and top.valid[10:256].all()


def test_tile_marks_are_a_byte_a_tile_listed_in_grid_order():
    grid = TileGrid(500, 300, 128, 16)
    marks = TileMarks(grid)
    marks[2, 0], marks[0, 3], marks[0, 1] = 1, 2, 1
    assert marks[0, 3] == 2 and marks[1, 1] == 0 and marks.count() == 3
    assert list(marks.marked()) == [(0, 1), (0, 3), (2, 0)]
    assert marks._marks.nbytes == len(grid)
