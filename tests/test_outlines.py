"""geosam.outlines: pixel outlines to orthogonal, circular and smooth ones, neighbours kept, measures recorded."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio.features
import shapely
from click.testing import CliRunner
from shapely import affinity

from geosam import metrics, outlines
from geosam.cli import main
from geosam.scene_run import segment_scene
from geosam.testing import make_scene
from geosam.vectorize import mask_to_geometry

SIZE = 200


def pixels(*shapes: shapely.Geometry) -> tuple[np.ndarray, np.ndarray]:
    """The pixel outlines of ``shapes`` rasterized on a SIZE² grid (later shapes over earlier ones), and
    their label raster."""
    labels = rasterio.features.rasterize(
        [(g, k) for k, g in enumerate(shapes, start=1)], out_shape=(SIZE, SIZE), dtype="int32"
    )
    raw = np.array([mask_to_geometry(labels == k, (0, 0)) for k in range(1, len(shapes) + 1)], dtype=object)
    return raw, labels


def one(kind: str, shape: shapely.Geometry, **options) -> tuple[outlines.Outlines, shapely.Geometry]:
    result = outlines.outline(pixels(shape)[0], kind, **options)
    return result, result.geometry[0]


def rotated_rectangle(angle: float = 20) -> shapely.Geometry:
    return affinity.rotate(shapely.box(60, 80, 140, 120), angle, origin="centroid")


def test_orthogonal_gives_right_angles_closer_to_the_true_outline_with_fewer_vertices():
    truth = rotated_rectangle()
    result, square = one("orthogonal", truth)
    raw = result.raw[0]
    assert shapely.is_valid(square) and result.kind[0] == "orthogonal"
    assert np.all(np.abs(outlines.corner_angles(square) - 90) < 1)
    assert result.vertices[0] == 4 and result.vertices_raw[0] >= 5 * result.vertices[0]
    assert (
        metrics.iou(np.array([square]), np.array([truth]))[0]
        >= metrics.iou(np.array([raw]), np.array([truth]))[0]
    )
    assert result.iou[0] == pytest.approx(metrics.iou(np.array([square]), np.array([raw]))[0])


def test_orthogonal45_keeps_a_cut_corner_that_orthogonal_squares_off():
    truth = shapely.Polygon([(40, 40), (160, 40), (160, 100), (100, 160), (40, 160)])
    _, square = one("orthogonal", truth)
    _, cut = one("orthogonal45", truth)
    assert np.all(np.abs(outlines.corner_angles(square) - 90) < 1)
    angles = outlines.corner_angles(cut)
    assert (
        np.all((np.abs(angles - 90) < 1) | (np.abs(angles - 135) < 1))
        and (np.abs(angles - 135) < 1).sum() == 2
    )
    iou = metrics.iou(np.array([square, cut]), np.array([truth, truth]))
    assert iou[1] > iou[0] + 0.05


def test_circle_fits_a_round_tank():
    truth = shapely.Point(100, 100).buffer(30, quad_segs=64)
    result, circle = one("circle", truth)
    assert metrics.iou(np.array([circle]), np.array([truth]))[0] > 0.99
    assert result.vertices[0] == 32 < result.vertices_raw[0]


def test_smooth_takes_the_staircase_out_and_keeps_the_area():
    truth = affinity.scale(shapely.Point(100, 100).buffer(60, quad_segs=64), 1.0, 0.6)
    result, smooth = one("smooth", truth)
    raw = result.raw[0]
    assert smooth.area == pytest.approx(raw.area, rel=0.005)
    assert np.all(outlines.corner_angles(raw) % 180 == 90)  # all staircase
    assert outlines.corner_angles(smooth).min() > 150  # no corner left
    assert result.vertices[0] * 3 < result.vertices_raw[0]


def test_auto_chooses_by_shape_and_records_the_choice():
    field = affinity.scale(shapely.Point(100, 150).buffer(40, quad_segs=64), 1.0, 0.5).union(
        shapely.Point(130, 160).buffer(25)
    )
    shapes = (rotated_rectangle(30), shapely.Point(40, 40).buffer(20, quad_segs=64), field)
    result = outlines.outline(pixels(*shapes)[0], "auto")
    assert list(result.kind) == ["orthogonal", "circle", "smooth"]


def gaps_and_overlaps(result: outlines.Outlines, a: int, b: int) -> float:
    """Gap and overlap area between two neighbours, along the edge their pixels share."""
    edge = shapely.buffer(shapely.intersection(result.raw[a], result.raw[b]), 4)
    both = shapely.union(result.raw[a], result.raw[b])
    final = shapely.union(result.geometry[a], result.geometry[b])
    gap = shapely.intersection(shapely.difference(both, final), edge).area
    return gap + shapely.intersection(result.geometry[a], result.geometry[b]).area


@pytest.mark.parametrize("kind", ["simplify", "smooth", "orthogonal", "orthogonal45", "circle", "auto"])
def test_neighbours_keep_their_shared_edge(kind):
    """Two fields split by a slanted staircase line and a hall beside them: no gaps, no overlaps."""
    left = shapely.Polygon([(20, 20), (110, 20), (80, 180), (20, 180)])
    right = shapely.Polygon([(110, 20), (180, 20), (180, 180), (80, 180)])
    below = shapely.box(20, 180, 120, 195)
    raw, _ = pixels(left, right, below)
    result = outlines.outline(raw, kind)
    assert shapely.is_valid(result.geometry).all()
    total = shapely.area(result.raw).sum()
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        if kind == "circle":  # circles cannot share an edge: they only do not overlap
            assert shapely.intersection(result.geometry[a], result.geometry[b]).area < 1e-6
        else:
            assert gaps_and_overlaps(result, a, b) <= 0.005 * total, (a, b)
    if kind in ("simplify", "smooth"):  # changed on shared arcs: the same edge, vertex for vertex
        shared = shapely.intersection(result.geometry[0], result.geometry[1])
        assert shared.area < 1e-6 and shapely.length(shared) > 150


@pytest.mark.parametrize("angle", [-8.0, 4.0, 11.0])
def test_terraced_houses_keep_right_angles_and_their_shared_walls(angle):
    """A turned row of touching houses: each regularized in the row's direction, where two meet the later
    takes the pixels between them and is squared again (no pixel staircase left), walls still shared."""
    houses, x = [], 30.0
    for width in (22, 35, 18, 40, 27):
        houses.append(shapely.box(x, 80, x + width, 112))
        x += width
    raw, _ = pixels(*(affinity.rotate(h, angle, origin=(100, 96)) for h in houses))
    result = outlines.outline(raw, "orthogonal")
    assert shapely.is_valid(result.geometry).all()
    angles = np.concatenate([outlines.corner_angles(g) for g in result.geometry])
    assert (np.abs(angles - 90) <= 10).mean() >= 0.95
    total = shapely.area(result.raw).sum()
    for a in range(len(houses) - 1):
        assert gaps_and_overlaps(result, a, a + 1) <= 0.005 * total, a


def test_nested_objects_stay_nested_and_flat_makes_a_partition():
    yard = shapely.box(30, 30, 170, 170)
    roof = affinity.rotate(shapely.box(70, 80, 130, 120), 15, origin="centroid")
    raw, labels = pixels(yard, roof)
    raw[0] = mask_to_geometry(labels > 0, (0, 0))  # the yard holds the roof (part and whole)
    nested = outlines.outline(raw, "smooth")
    assert nested.geometry[1].difference(nested.geometry[0]).area < 1e-6
    flat = outlines.outline(raw, "orthogonal", flat=True)
    assert flat.raw[0].area == pytest.approx(raw[0].area - raw[1].area)  # the smaller keeps its pixels
    assert shapely.intersection(flat.geometry[0], flat.geometry[1]).area < 1e-6
    assert shapely.union_all(flat.geometry).area == pytest.approx(raw[0].area, rel=0.01)


def test_fill_holes_fills_only_the_small_ones():
    field = (
        shapely.box(20, 20, 180, 180)
        .difference(shapely.box(40, 40, 42, 42))
        .difference(shapely.box(100, 100, 120, 120))
    )
    result, filled = one("pixel", field, fill_holes=10)
    assert len(result.raw[0].interiors) == 1 and filled.area == pytest.approx(160 * 160 - 400)
    _, kept = one("pixel", field)
    assert len(kept.interiors) == 2


@pytest.mark.parametrize("kind", outlines.KINDS)
def test_every_outline_is_valid_on_random_blobs(kind):
    rng = np.random.default_rng(4)
    noise = rng.random((SIZE, SIZE))
    from scipy import ndimage

    blobs, count = ndimage.label(ndimage.gaussian_filter(noise, 3) > 0.5)
    raw = np.array([mask_to_geometry(blobs == k, (0, 0)) for k in range(1, count + 1)], dtype=object)
    assert count > 20
    result = outlines.outline(raw, kind, fill_holes=4, flat=True)
    assert shapely.is_valid(result.geometry).all()
    assert np.isin(shapely.get_type_id(result.geometry), (3, 6)).all()
    assert ((result.iou > 0) & (result.iou <= 1 + 1e-9)).all()


def test_unknown_kind_is_one_line():
    with pytest.raises(ValueError, match="unknown outline 'square': use one of pixel, simplify"):
        outlines.outline(np.array([shapely.box(0, 0, 4, 4)]), "square")


def test_segment_writes_the_outlines_their_measures_and_the_raw_layer(tmp_path):
    from geosam import output

    scene = make_scene(tmp_path, seed=3, objects=40)
    frame, report = segment_scene(scene.path, model=scene.model, workers=0, outline="auto", keep_raw=True)
    assert set(frame["outline"]) <= {"orthogonal", "circle", "smooth"} and len(set(frame["outline"])) > 1
    assert {"outline_iou", "vertices_raw", "vertices", "raw_geometry"} <= set(frame.columns)
    assert frame["vertices"].sum() < frame["vertices_raw"].sum() and report.outlines_s > 0
    assert frame.geometry.is_valid.all()
    np.testing.assert_allclose(frame["area_m2"], frame.geometry.area)
    path = tmp_path / "out.gpkg"
    output.write(frame, path)
    assert [name for name, _ in pyogrio.list_layers(path)][:2] == ["objects", "objects_raw"]
    raw = pyogrio.read_dataframe(path, layer="objects_raw")
    assert list(raw["id"]) == list(frame["id"])
    assert shapely.equals(raw.geometry.values, frame["raw_geometry"].values).all()
    pixel, _ = segment_scene(scene.path, model=scene.model, workers=0)
    assert set(pixel["outline"]) == {"pixel"} and (pixel["outline_iou"] == 1).all()


def test_prompt_mode_outlines(tmp_path):
    from geosam.cache import EmbeddingCache
    from geosam.session import Session
    from tests.test_prompts import BrightModel, centre, squares, write

    scene = write(tmp_path / "squares.tif", squares(512, 512))
    session = Session(scene, BrightModel(), cache=EmbeddingCache(tmp_path / "cache"))
    frame = session.predict(points=[centre(1, 1)], outline="circle", keep_raw=True)
    assert list(frame["outline"]) == ["circle"] and frame["vertices"][0] == 32
    assert frame["outline_iou"][0] < 1 and frame.geometry[0].area == pytest.approx(frame["area_m2"][0])


def test_keep_raw_needs_a_geopackage(tmp_path):
    result = CliRunner().invoke(
        main, ["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / "a.geojson"), "--keep-raw"]
    )
    assert result.exit_code == 2 and "--keep-raw writes the pixel outlines as a second layer" in result.output


def test_shared_pixel_edges_between_generated_fields(tmp_path):
    """Fields that tile the scene (a planar partition of pixels): smooth outlines leave no gaps and overlaps."""
    rng = np.random.default_rng(0)
    seeds = rng.integers(0, 160, (12, 2))
    yy, xx = np.mgrid[:160, :160]
    nearest = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    labels = (nearest + 1).astype(np.int32)
    raw = np.array([mask_to_geometry(labels == k, (0, 0)) for k in range(1, 13)], dtype=object)
    result = outlines.outline(raw, "smooth")
    union = shapely.union_all(result.geometry)
    overlap = shapely.area(result.geometry).sum() - union.area
    gap = shapely.box(0, 0, 160, 160).area - union.area
    assert abs(overlap) + gap <= 0.005 * 160 * 160
    assert (result.vertices < result.vertices_raw).all()


def test_pipeline_files_take_an_outlines_section(tmp_path):
    from geosam.batch import config as batch_config
    from geosam.batch import run as batch_run
    from geosam.batch.config import PipelineError

    scene = make_scene(tmp_path / "scenes", seed=5, objects=30)
    job = tmp_path / "job.yaml"
    job.write_text(
        "inputs: [scenes/scene.tif]\noutput: {path: out}\ncluster: {workers: 0}\n"
        "outlines: {outline: orthogonal, keep_raw: true, fill_holes: 2}\n"
    )
    summary = batch_run.run(batch_config.load(job), model=scene.model)
    assert [o.status for o in summary.outcomes] == ["done"]
    written = tmp_path / "out" / "scene.gpkg"
    frame = pyogrio.read_dataframe(written, layer="objects")
    assert set(frame["outline"]) == {"orthogonal"} and len(frame) == summary.outcomes[0].objects
    assert len(pyogrio.read_dataframe(written, layer="objects_raw")) == len(frame)
    with pytest.raises(PipelineError, match=r"outlines\.outline: .*squares.* is not one of pixel"):
        batch_config.parse({"inputs": ["a.tif"], "output": {"path": "o"}, "outlines": {"outline": "squares"}})


def test_class_outlines_give_each_class_its_kind(tmp_path):
    from geosam import settings
    from geosam.classes import ClassModel
    from geosam.georef import open_scene
    from geosam.objectstore import ObjectStore
    from geosam.scene_run import _stage
    from geosam.stitch import StitchedObject

    assert outlines.by_class(["building=orthogonal", " tank = circle"]) == {
        "building": "orthogonal",
        "tank": "circle",
    }
    with pytest.raises(ValueError, match="'tank' is not CLASS=KIND"):
        outlines.by_class(["tank"])
    with pytest.raises(ValueError, match="unknown outline 'square'"):
        outlines.by_class(["tank=square"])
    model = ClassModel(("building", "tank", "background"), np.array([[5.0, 0], [0, 5.0], [0, 0]]), np.zeros(3),
                       np.eye(2), np.zeros(2), "test", {"building": 3, "tank": 3})  # fmt: skip
    raw, _ = pixels(rotated_rectangle(), shapely.Point(40, 40).buffer(15))
    objects = [
        StitchedObject(g, 0.9, 0.9, 1, np.array(d, np.float32)) for g, d in zip(raw, np.eye(2), strict=True)
    ]
    scene = open_scene(make_scene(tmp_path, seed=1, objects=2).path)
    store = ObjectStore(tmp_path / "objects.sqlite", model)
    store.add(objects)
    store.finish(0, None, keep_background=True)
    mapping = {"building": "orthogonal"}
    _stage(scene, store.chunks(), store, (0.0, 0.0), model, None, settings.OUTLINES, mapping)
    (frame,) = store.ordered()
    store.close()
    assert dict(zip(frame["class"], frame["outline"], strict=True)) == {
        "building": "orthogonal",
        "tank": "pixel",
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--class-outlines", "building=square"], "unknown outline 'square'"),
        (["--class-outlines", "building=circle"], "classes come from --examples or --class-model"),
        (["--keep", "building"], "--keep building: classes come from --examples"),
    ],
)
def test_class_outlines_and_keep_without_classes_are_one_line(tmp_path, arguments, message):
    scene = make_scene(tmp_path, seed=2, objects=3)
    out = tmp_path / "o.gpkg"
    result = CliRunner().invoke(main, ["segment", str(scene.path), "-o", str(out), "-w", "0", *arguments])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not out.exists()
