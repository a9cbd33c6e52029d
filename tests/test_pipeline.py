"""The Dask run around the model, with a test double in place of the model."""

from __future__ import annotations

import os

import numpy as np

import geosam

from .doubles import Forgetful, RecordingSource, WholeTile
from .rasters import write


def test_model_loads_once_per_worker_and_threads_fit_the_cores(tmp_path):
    data = np.zeros((3, 900, 900), np.uint8)
    data[:, 100:800, 100:800] = 200  # one square object across all seams
    scene = write(tmp_path / "scene.tif", data)
    records = tmp_path / "records"
    records.mkdir()
    frame = geosam.segment(scene, model=RecordingSource(str(records)), tile_size=256, overlap=64, workers=2)
    loads = [p.name.split("-") for p in records.glob("load-*")]
    tasks = list(records.glob("task-*"))
    tiles = len(geosam.TileGrid(900, 900, 256, 64))
    assert len(tasks) == tiles == 25
    assert len(loads) <= 2, "the model is loaded once per worker process, not once per task"
    assert all(int(threads) * 2 <= (os.cpu_count() or 1) or int(threads) == 1 for _, _, threads in loads)
    assert len(frame) == 1 and frame.iloc[0]["tiles"] == tiles
    assert abs(frame.iloc[0]["area_m2"] - 700 * 700 * 4.0) < 1e-6


def test_tiles_without_valid_pixels_are_not_segmented(tmp_path):
    data = np.zeros((3, 600, 600), np.uint8)
    data[:, :200, :200] = 200
    scene = write(tmp_path / "scene.tif", data, nodata=0)
    records = tmp_path / "records"
    records.mkdir()
    started, done = [], []
    geosam.segment(
        scene, model=RecordingSource(str(records)), tile_size=256, overlap=16, workers=1,
        on_start=lambda tiles: started.append((tiles, len(done))), on_tile=done.append,
    )  # fmt: skip
    assert started == [(9, 0)]  # once, with the number of tiles, before any tile
    assert len(done) == len(geosam.TileGrid(600, 600, 256, 16)) == 9
    assert sum(r.segmented for r in done) == 1 == len(list(records.glob("task-*")))


def test_masks_leave_out_nodata_pixels(tmp_path):
    from geosam.georef import open_scene
    from geosam.tasks import segment_tiles

    data = np.full((3, 300, 300), 100, np.uint8)
    data[:, :, :120] = 0  # nodata on the left
    scene = open_scene(write(tmp_path / "scene.tif", data, nodata=0))
    grid = geosam.TileGrid(300, 300, 256, 64)
    results = segment_tiles(scene, grid, list(grid), WholeTile())
    outlines = [piece.full for result in results for piece in result.pieces]
    assert outlines and all(outline.bounds[0] >= 120 for outline in outlines)


def test_the_last_objects_are_assembled_after_the_local_cluster_closed(tmp_path, monkeypatch):
    import psutil

    from geosam import scene_run

    workers = []  # processes under this one at each tile's stitching, less multiprocessing's resource tracker

    class Recording(scene_run.Stitcher):
        def add(self, tile, pieces):
            children = psutil.Process().children(recursive=True)
            workers.append(sum("resource_tracker" not in " ".join(child.cmdline()) for child in children))
            return super().add(tile, pieces)

    monkeypatch.setattr(scene_run, "Stitcher", Recording)
    data = np.zeros((3, 600, 600), np.uint8)
    data[:, 100:500, 100:500] = 200  # one object in every tile: assembled when the last tile is in
    scene = write(tmp_path / "scene.tif", data)
    records = tmp_path / "records"
    records.mkdir()
    frame = geosam.segment(scene, model=RecordingSource(str(records)), tile_size=256, overlap=64, workers=1)
    assert len(frame) == 1 and len(workers) == len(geosam.TileGrid(600, 600, 256, 64))
    assert workers[0] > 0, "tiles are stitched while the cluster segments the next ones"
    assert workers[-1] == 0, "the cluster's workers, each holding a model, are gone"


def test_a_model_keeps_nothing_for_prompts_that_cannot_follow(tmp_path, model_installed):
    from geosam.cluster import run_tiles_here
    from geosam.georef import open_scene
    from geosam.models import AutomaticParams, ModelSpec, load_model
    from geosam.tasks import segment_tiles

    data = np.full((3, 300, 300), 100, np.uint8)
    data[:, 100:200, 100:200] = 220
    scene = open_scene(write(tmp_path / "scene.tif", data))
    grid = geosam.TileGrid(300, 300, 256, 64)
    double = Forgetful()
    segment_tiles(scene, grid, [grid.tile(0, 0)], double)
    assert double.forgotten == 0
    segment_tiles(scene, grid, [grid.tile(0, 0)], double, prompts_follow=False)
    assert double.forgotten == 1
    source = ModelSpec("mobile_sam", params=AutomaticParams(points_per_side=4))
    model = load_model(source)
    segment_tiles(scene, grid, [grid.tile(0, 0)], model)
    assert model._recent and model.runtime._terms, "kept for the neighbours' prompts"
    segment_tiles(scene, grid, [grid.tile(0, 1)], model, prompts_follow=False)
    assert not model._recent and not model.runtime._terms
    assert len(list(run_tiles_here(scene, grid, source, jobs=None))) == len(grid)  # no prompts: none asked
