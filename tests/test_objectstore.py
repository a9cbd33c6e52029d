"""The object store: the stitcher's objects on disk, de-duplicated and grounded out of core."""

from __future__ import annotations

import resource

import numpy as np
import pytest
import shapely

from geosam import objectstore
from geosam.errors import OutputError
from geosam.objectstore import ObjectStore
from geosam.stitch import StitchedObject, drop_duplicates
from geosam.tiling import Box


def _objects(seed: int, n: int = 300) -> list[StitchedObject]:
    """Boxes and their shifted copies (duplicates or not), nested boxes and tied scores."""
    rng = np.random.default_rng(seed)
    objects = []
    for _ in range(n):
        x, y = rng.integers(0, 400, 2)
        w, h = rng.integers(4, 60, 2)
        score = float(rng.choice([0.9, 0.95, rng.random()]))  # ties are ranked by stability, then bounds
        shape = shapely.box(x, y, x + w, y + h)
        objects.append(StitchedObject(shape, score, float(rng.choice([0.95, 0.97])), 1))
        for _ in range(rng.integers(0, 3)):
            dx, dy = rng.integers(-w // 2, w // 2 + 1), rng.integers(-h // 2, h // 2 + 1)
            objects.append(
                StitchedObject(shapely.affinity.translate(shape, dx, dy), float(rng.random()), 0.95, 2)
            )
    return objects


def _key(o: StitchedObject) -> tuple:
    return (o.geometry.wkb, o.score, o.stability, o.tiles)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_out_of_core_duplicates_are_the_ones_in_memory(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(objectstore, "CHUNK", 17)  # many chunks: pairs across chunk boundaries
    objects = _objects(seed)
    store = ObjectStore(tmp_path / "objects.sqlite")
    for first in range(0, len(objects), 50):
        store.add(objects[first : first + 50])
    left, ground = store.finish(0, None, keep_background=False)
    kept = [o for chunk, _ in store.chunks(31) for o in chunk]
    expected = drop_duplicates(objects)
    assert len(expected) < len(objects) - 50  # the scenes hold duplicates
    assert (left, ground) == (len(expected), 0)
    assert sorted(map(_key, kept)) == sorted(map(_key, expected))
    assert [o.score for o in kept] == [o.score for o in objects if _key(o) in set(map(_key, expected))]
    store.close()
    assert not (tmp_path / "objects.sqlite").exists()


def test_the_ground_is_left_out_unless_kept(tmp_path):
    ground = StitchedObject(shapely.box(0, 0, 95, 100).difference(shapely.box(40, 40, 60, 60)), 0.9, 0.9, 4)
    narrow = StitchedObject(shapely.box(0, 0, 100, 30), 0.9, 0.9, 4)  # across the scene, but not over it
    small = StitchedObject(shapely.box(40, 40, 60, 60), 0.9, 0.9, 1)
    for keep, expected in ((False, (2, 1)), (True, (3, 0))):
        store = ObjectStore(tmp_path / "objects.sqlite")
        store.add([ground, narrow, small])
        assert store.finish(100 * 100, Box(0, 0, 100, 100), keep_background=keep) == expected
        store.close()


def test_classes_are_taken_as_objects_come(tmp_path):
    from geosam.classes import fit

    descriptors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    model = fit(descriptors, np.array(["roof", "roof", "background", "background"]), "test", {"roof": 0.5})
    objects = [
        StitchedObject(
            shapely.box(i * 10, 0, i * 10 + 5, 5), 0.9, 0.9, 1, np.array(d, np.float32), "proposal"
        )
        for i, d in enumerate([[1.0, 0.0], [0.0, 1.0], [0.8, 0.2]])
    ]
    store = ObjectStore(tmp_path / "objects.sqlite", model)
    store.add(objects)
    store.finish(0, None, keep_background=True)
    ((chunk, columns),) = list(store.chunks())
    assert all(o.descriptor is None for o in chunk)  # classified on the way in; descriptors not kept
    assert columns["class"].tolist() == ["roof", "background", "roof"]
    assert columns["source"].tolist() == ["proposal"] * 3
    store.close()


def test_a_file_size_limit_stops_in_one_line(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    store = ObjectStore(tmp_path / "objects.sqlite", after="; finished tiles are kept in WORK")
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))  # this process ignores SIGXFSZ: writes fail
    try:
        with pytest.raises(OutputError) as failed:
            store.add(_objects(0))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(failed.value)
    assert message.startswith(f"file size limit reached writing {tmp_path / 'objects.sqlite'}: ")
    assert message.endswith("run the same command again; finished tiles are kept in WORK")
    store.close()
    assert not (tmp_path / "objects.sqlite").exists()


def test_a_scene_made_a_frame_chunk_by_chunk_is_the_scene_made_at_once(tmp_path, monkeypatch):
    from geosam.scene_run import segment_scene
    from geosam.testing import make_scene

    scene = make_scene(tmp_path, seed=5, width=300, height=260, max_size=60, objects=40)
    options = {"model": scene.model, "tile_size": 96, "overlap": 16, "workers": 0}
    whole, report = segment_scene(scene.path, **options)
    monkeypatch.setattr(objectstore, "CHUNK", 3)
    chunked, chunked_report = segment_scene(scene.path, work_dir=tmp_path / "work", **options)
    assert len(whole) > 20 and report.objects == chunked_report.objects
    assert whole.drop(columns="geometry").equals(chunked.drop(columns="geometry"))
    assert whole.geometry.geom_equals_exact(chunked.geometry, 0).all()
    assert not list((tmp_path / "work").rglob("*.sqlite")), "the store goes with the run"


def test_the_style_range_and_counts_come_from_the_staged_rows(tmp_path):
    from geosam import style
    from geosam.scene_run import segmented
    from geosam.testing import make_scene

    scene = make_scene(tmp_path, seed=6, width=300, height=260, max_size=60, objects=40)
    with segmented(scene.path, model=scene.model, tile_size=96, overlap=16, workers=0) as result:
        count, scores = result.store.scores()
        cut = float(scores.mean())  # halfway between the lowest and the highest
        kept, above = result.store.scores(at_least=cut)
        layer = result.layer()
        frame = result.frame()
    assert count == len(frame) > 20 and list(scores) == [frame["score"].min(), frame["score"].max()]
    assert kept == (frame["score"] >= cut).sum() and above[0] >= cut and above[1] == scores[1]
    assert list(layer.scores) == list(scores)
    assert style.qml(scores) == style.qml(frame["score"].to_numpy())  # the range is the style
