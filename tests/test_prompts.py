"""Prompt mode: prompts in map coordinates, windows around them, the embedding cache, the session."""

from __future__ import annotations

import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from affine import Affine
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.features import rasterize
from scipy import ndimage

from geosam.cache import EmbeddingCache, cache_key
from geosam.cli import main
from geosam.models.base import Embedding
from geosam.prompts import PromptError, PromptGroup, command_line_groups, read_prompts
from geosam.session import Session
from geosam.tiling import prompt_window

from .rasters import ORIGIN, UTM, squares, write

# squares(): 40-pixel bright squares at pixels 44 + 128 k; ORIGIN: 2 m pixels


def square(row: int, col: int, transform: Affine = ORIGIN) -> shapely.Polygon:
    """The map outline of the bright square number (row, col)."""
    x0, y0 = 44 + 128 * col, 44 + 128 * row
    (ax, ay), (bx, by) = transform @ (x0, y0), transform @ (x0 + 40, y0 + 40)
    return shapely.box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def centre(row: int, col: int) -> tuple[float, float]:
    c = square(row, col).centroid
    return c.x, c.y


class BrightModel:
    """A promptable stand-in: the bright blob under the first positive point, or bright pixels in the box.

    Its 'embedding' is the image itself, so answers are exact and every encoder call is counted.
    """

    name = "bright"
    encoder_id = "the image itself"

    def __init__(self, image_size: int = 256, checksum: str = "v1") -> None:
        self.image_size = image_size
        self.checksum = checksum
        self.embedded = 0

    def embed(self, image: np.ndarray) -> Embedding:
        self.embedded += 1
        features = torch.from_numpy(image.mean(axis=2).astype(np.float32))[None, None]
        return Embedding(features, image.shape[:2], image.shape[:2])

    def prompt(self, embedding, points=None, labels=None, box=None):
        bright = embedding.features[0, 0].numpy() > 128
        if box is not None:
            x0, y0, x1, y1 = np.round(box).astype(int)
            mask = np.zeros_like(bright)
            mask[y0 : y1 + 1, x0 : x1 + 1] = bright[y0 : y1 + 1, x0 : x1 + 1]
            return mask, 0.9, 0.95
        x, y = points[list(labels).index(1)] + 0.5
        blobs, _ = ndimage.label(bright)
        blob = blobs[int(y), int(x)]
        return (blobs == blob) & (blob > 0), 0.8, 0.9


@pytest.fixture
def scene(tmp_path):
    return write(tmp_path / "squares.tif", squares(512, 512))


@pytest.fixture
def cache(tmp_path):
    return EmbeddingCache(tmp_path / "cache")


def same(a, b, tolerance: float = 1e-6) -> bool:
    return a.symmetric_difference(b).area <= tolerance * max(a.area, 1)


# ---- prompts -------------------------------------------------------------------------------------


def test_command_line_grouping():
    groups = command_line_groups(["1,2", "3,4"], [], ["0,0,5,5"])
    assert [(g.id, g.points, g.box) for g in groups] == [
        (1, ((1.0, 2.0),), None),
        (2, ((3.0, 4.0),), None),
        (3, (), (0.0, 0.0, 5.0, 5.0)),
    ]
    groups = command_line_groups(["1,2,a", "3,4,a", "9,9"], ["2,2,a"], ["0,0,5,5,a"])
    a, other = groups
    assert a.id == "a" and a.labels == (1, 1, 0) and a.box == (0, 0, 5, 5) and other.id == 1
    (one,) = command_line_groups(["1,2"], ["3,3"])  # the only object takes an id-less negative point
    assert one.labels == (1, 0)
    assert len(command_line_groups(["1,2,2"])) == 1
    assert command_line_groups(["1,2,2", "5,5"])[1].id == 1  # numbering skips explicit ids
    with pytest.raises(PromptError, match="say which object"):
        command_line_groups(["1,2", "3,4"], ["5,5"])
    with pytest.raises(PromptError, match="two boxes"):
        command_line_groups([], [], ["0,0,1,1,a", "0,0,2,2,a"])
    with pytest.raises(PromptError, match="give 2 numbers"):
        command_line_groups(["1"])
    with pytest.raises(PromptError, match="XMIN < XMAX"):
        command_line_groups([], [], ["5,0,1,1"])
    with pytest.raises(PromptError, match="only negative"):
        PromptGroup(1, ((0.0, 0.0),), (0,))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6000),
    st.integers(1, 6000),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 3000),
    st.floats(0, 3000),
)
def test_prompt_window_holds_the_prompt_whole(width, height, fx, fy, w, h):
    x0, y0 = fx * width, fy * height
    bounds = (x0, y0, min(width, x0 + w), min(height, y0 + h))
    window = prompt_window(width, height, bounds, 1024)
    box = window.box
    assert 0 <= box.x0 and 0 <= box.y0 and box.x1 <= width and box.y1 <= height
    assert box.x0 <= bounds[0] and box.y0 <= bounds[1] and bounds[2] <= box.x1 and bounds[3] <= box.y1
    assert max(window.shape) <= 1024
    if max(bounds[2] - bounds[0], bounds[3] - bounds[1]) <= 800 and max(width, height) >= 1024:
        assert window.factor == 1  # one model input at full resolution holds it
    # the window is centred on the prompt, up to the snap of 1/8 of its span, unless the scene edge is near
    span = 1024 * window.factor
    cx = (bounds[0] + bounds[2]) / 2
    if span / 2 + span / 16 < cx < width - span / 2 - span / 16:
        assert abs((box.x0 + box.x1) / 2 - cx) <= span / 16 + 1e-6


def test_nearby_prompts_share_a_window():
    a = prompt_window(5000, 5000, (2000, 2000, 2010, 2010))
    b = prompt_window(5000, 5000, (2030, 2040, 2040, 2050))
    assert a == b


# ---- session with a stand-in model ----------------------------------------------------------------


def test_point_and_box_prompts_give_the_objects_in_map_coordinates(scene, cache):
    session = Session(scene, BrightModel(), cache=cache)
    frame = session.predict(points=[centre(1, 2)])
    assert list(frame.columns) == [
        "id",
        "score",
        "stability",
        "area_m2",
        "outline",
        "outline_iou",
        "vertices_raw",
        "vertices",
        "geometry",
    ]
    assert frame.crs == UTM and len(frame) == 1
    assert same(frame.geometry[0], square(1, 2))
    assert frame["area_m2"][0] == pytest.approx(40 * 40 * 4)
    # every square by a box, wherever it sits relative to any grid: none is cut
    boxes = [square(r, c).buffer(6, join_style="mitre").bounds for r in range(4) for c in range(4)]
    frame = session.predict(boxes=boxes)
    assert list(frame["id"]) == list(range(1, 17))
    for (r, c), geometry in zip([(r, c) for r in range(4) for c in range(4)], frame.geometry, strict=True):
        assert same(geometry, square(r, c))


def test_a_box_larger_than_the_model_input_is_read_coarser(tmp_path, cache):
    path = write(tmp_path / "big.tif", squares(1024, 1024))
    session = Session(path, BrightModel(image_size=256), cache=cache)
    (x0, y0), (x1, y1) = ORIGIN @ (30, 30), ORIGIN @ (600, 600)
    frame = session.predict(boxes=[(x0, y1, x1, y0)])
    (window,) = session._embeddings
    assert window.factor == 4 and max(window.shape) <= 256  # 570 px read at 1/4 into 256 px
    expected = shapely.union_all(
        [square(r, c) for r in range(5) for c in range(5) if 44 + 128 * max(r, c) + 40 <= 600]
    )
    # squares at 44 + 128 k are on the 1/4 grid's pixel edges: exact
    assert same(frame.geometry[0], expected)


def test_prompts_from_a_file_in_another_crs(tmp_path, scene, cache):
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    rows = [
        ("a", 1, "field A", shapely.Point(to_lonlat.transform(*centre(0, 0)))),
        (
            "a",
            0,
            "field A",
            shapely.Point(to_lonlat.transform(*centre(2, 2))),
        ),  # negative: ignored by stand-in
        ("b", 1, "field B", shapely.Point(to_lonlat.transform(*centre(3, 1)))),
        ("c", 1, "tarp", shapely.Polygon(shapely.box(*square(2, 3).buffer(4).bounds).exterior.coords)),
    ]
    frame = gpd.GeoDataFrame(
        {"fid_text": [r[0] for r in rows], "kind": [r[1] for r in rows], "name": [r[2] for r in rows]},
        geometry=[r[3] for r in rows],
        crs="EPSG:4326",
    )
    frame.loc[3, "geometry"] = gpd.GeoSeries([square(2, 3).buffer(4, join_style="mitre")], crs=UTM).to_crs(
        4326
    )[0]
    path = tmp_path / "prompts.geojson"
    frame.to_file(path)
    groups, _ = read_prompts(path, id_field="fid_text", label_field="kind")
    assert [g.id for g in groups] == ["a", "b", "c"] and groups[0].labels == (1, 0)
    assert groups[0].attributes == {"name": "field A"}
    result = Session(scene, BrightModel(), cache=cache).predict(
        prompts=path, id_field="fid_text", label_field="kind"
    )
    assert list(result["id"]) == ["a", "b", "c"] and list(result["name"]) == ["field A", "field B", "tarp"]
    for geometry, expected in zip(result.geometry, [square(0, 0), square(3, 1), square(2, 3)], strict=True):
        assert same(geometry, expected, 1e-4)


def test_box_and_points_of_one_group(tmp_path, scene, cache):
    frame = gpd.GeoDataFrame(
        {"gid": [7, 7], "label": ["fg", "bg"]},
        geometry=[square(1, 1).buffer(5, join_style="mitre"), shapely.Point(centre(0, 0))],
        crs=UTM,
    )
    result = Session(scene, BrightModel(), cache=cache).predict(prompts=frame, id_field="gid")
    assert list(result["id"]) == [7] and same(result.geometry[0], square(1, 1))


def test_prompts_outside_the_scene_or_on_nodata_are_reported(tmp_path, cache):
    data = squares(512, 512)
    data[:, :, :128] = 0  # the left quarter is nodata
    path = write(tmp_path / "holes.tif", data, nodata=0)
    session = Session(path, BrightModel(), cache=cache)
    outside = ORIGIN @ (600, 10)
    frame = session.predict(
        prompts=[
            PromptGroup(1, (centre(0, 2),), (1,)),
            PromptGroup(2, (outside,), (1,)),
            PromptGroup(3, (centre(0, 0),), (1,)),
            PromptGroup(4, (), (), (*(ORIGIN @ (2, 300)), *(ORIGIN @ (60, 200)))),
        ]
    )
    assert list(frame["id"]) == [1]
    reasons = {s.id: s.reason for s in frame.attrs["skipped"]}
    assert "outside the scene" in reasons[2] and "on nodata" in reasons[3] and "only nodata" in reasons[4]


# ---- embedding cache ----------------------------------------------------------------------------


def test_second_run_decodes_only_and_a_changed_scene_is_embedded_again(tmp_path, scene, cache):
    first = BrightModel(image_size=512)  # the scene is one window
    a = Session(scene, first, cache=cache).predict(points=[centre(1, 1)])
    assert first.embedded == 1 and len(cache.entries()) == 1
    second = BrightModel(image_size=512)
    session = Session(scene, second, cache=cache)
    b = session.predict(points=[centre(1, 2)])  # another prompt, same window
    session.predict(boxes=[square(1, 1).buffer(3).bounds])
    assert second.embedded == 0 and cache.hits >= 1
    assert same(a.geometry[0], square(1, 1)) and same(b.geometry[0], square(1, 2))
    # the scene file changes: its old entries are never read again, and are removed
    write(scene, squares(512, 512, seed=1, high=200))
    third = BrightModel(image_size=512)
    Session(scene, third, cache=cache).predict(points=[centre(1, 1)])
    assert third.embedded == 1 and len(cache.entries()) == 1
    # another model checkpoint is another key
    other = BrightModel(image_size=512, checksum="v2")
    Session(scene, other, cache=cache).predict(points=[centre(1, 1)])
    assert other.embedded == 1 and len(cache.entries()) == 2
    # the same checkpoint run otherwise (another backend or precision) is another key
    half = BrightModel(image_size=512, checksum="v2")
    half.encoder_id = "torch fp16"
    Session(scene, half, cache=cache).predict(points=[centre(1, 1)])
    assert half.embedded == 1 and len(cache.entries()) == 3


def test_cache_keeps_to_its_size_limit_least_recently_used_first(tmp_path, scene):
    probe = EmbeddingCache(tmp_path / "probe")
    Session(scene, BrightModel(image_size=128), cache=probe).predict(points=[centre(0, 0)])
    entry = probe.size()
    cache = EmbeddingCache(tmp_path / "lru", max_bytes=int(2.5 * entry))
    session = Session(scene, BrightModel(image_size=128), cache=cache)
    windows = [centre(0, 0), centre(3, 3), centre(0, 3)]  # three different 128-px windows
    session.predict(points=[windows[0]])
    session.predict(points=[windows[1]])
    os.utime(cache.entries()[0], ns=(1, 1))  # make the entries' ages explicit
    oldest = min(cache.entries(), key=lambda p: p.stat().st_mtime_ns)
    session.predict(points=[windows[2]])
    assert len(cache.entries()) == 2 and oldest not in cache.entries()
    assert cache.size() <= cache.max_bytes


def test_damaged_cache_entry_is_a_miss(scene, cache):
    model = BrightModel()
    Session(scene, model, cache=cache).predict(points=[centre(1, 1)])
    cache.entries()[0].write_bytes(b"not an npz")
    again = BrightModel()
    Session(scene, again, cache=cache).predict(points=[centre(1, 1)])
    assert again.embedded == 1


def test_cache_key_names_scene_window_and_model(scene):
    from geosam.georef import open_scene

    plan = open_scene(scene)
    w1, w2 = prompt_window(512, 512, (0, 0, 1, 1), 256), prompt_window(512, 512, (400, 400, 401, 401), 256)
    assert cache_key(plan, w1, "m", "x", "torch fp32") == cache_key(plan, w1, "m", "x", "torch fp32")
    keys = {
        cache_key(plan, w, "m", c, e)
        for w in (w1, w2)
        for c in ("x", "y")
        for e in ("torch fp32", "torch fp16")
    }
    assert len(keys) == 8
    assert (
        cache_key(plan, w1, "m", "x", "torch fp32").scene
        == cache_key(plan, w2, "m", "y", "onnxruntime").scene
    )


# ---- errors -------------------------------------------------------------------------------------


@pytest.fixture
def layers(tmp_path):
    out = {}
    out["unreadable"] = tmp_path / "bad.geojson"
    out["unreadable"].write_text("{ this is not json")
    out["nocrs"] = tmp_path / "nocrs.gpkg"
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)]).to_file(out["nocrs"])
    out["lines"] = tmp_path / "lines.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.LineString([(0, 0), (1, 1)])], crs=UTM).to_file(out["lines"])
    out["empty"] = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"a": []}, geometry=gpd.GeoSeries([], crs=UTM)).to_file(out["empty"])
    out["missing"] = tmp_path / "nope.gpkg"
    return out


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("unreadable", "not a readable vector file"),
        ("nocrs", "have no CRS"),
        ("lines", "LineString geometries cannot be prompts"),
        ("empty", "the layer is empty"),
        ("missing", "no such prompt file"),
    ],
)
def test_bad_prompt_files(layers, which, message):
    with pytest.raises(PromptError, match=message) as info:
        read_prompts(layers[which])
    assert "\n" not in str(info.value)


def test_a_layer_is_named_by_layer_or_as_qgis_names_it(tmp_path):
    path = tmp_path / "two.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=UTM).to_file(path, layer="first")
    gpd.GeoDataFrame(geometry=[shapely.Point(5, 5), shapely.Point(9, 9)], crs=UTM).to_file(
        path, layer="second"
    )
    assert len(read_prompts(path, layer="second")[0]) == 2
    assert len(read_prompts(f"{path}|layername=second")[0]) == 2
    assert len(read_prompts(f"{path}|layername=second", layer="second")[0]) == 2
    with pytest.raises(PromptError, match="two layers named") as info:
        read_prompts(f"{path}|layername=second", layer="first")
    assert "\n" not in str(info.value)
    with pytest.raises(PromptError, match="has no layer 'third' with geometries: name one of first, second"):
        read_prompts(path, layer="third")


def test_a_file_of_several_layers_gives_its_first_and_says_so(tmp_path, caplog):
    path = tmp_path / "two.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=UTM).to_file(path, layer="first")
    gpd.GeoDataFrame(geometry=[shapely.Point(5, 5), shapely.Point(9, 9)], crs=UTM).to_file(
        path, layer="second"
    )
    with caplog.at_level("WARNING"):
        assert len(read_prompts(path)[0]) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} has 2 layers with geometries (first, second): reading the first, first; to read another, "
        "give 'FILE|layername=LAYER'"
    ]
    geoparquet = tmp_path / "prompts.parquet"
    gpd.read_file(path, layer="second").to_parquet(geoparquet)
    assert len(read_prompts(geoparquet)[0]) == 2


def test_bad_fields(tmp_path):
    path = tmp_path / "p.gpkg"
    gpd.GeoDataFrame({"label": ["maybe"]}, geometry=[shapely.Point(0, 0)], crs=UTM).to_file(path)
    with pytest.raises(PromptError, match=r"no field 'gid'.*fields: label"):
        read_prompts(path, id_field="gid")
    with pytest.raises(PromptError, match="label 'maybe'"):
        read_prompts(path)


def geosam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geosam", *args], capture_output=True, text=True, timeout=600, check=False
    )


def test_cli_prompt_errors_are_one_line(tmp_path, layers, scene):
    out = str(tmp_path / "out.gpkg")
    done = geosam("prompt", str(scene), "-o", out, "--prompts", str(layers["lines"]))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip().splitlines()[-1].startswith("Error: ")
        and len(done.stderr.strip().splitlines()) == 1
    )
    for args, pattern in [
        ((), "no prompts"),
        (("--point", "1;2"), "give 2 numbers"),
        (("--point", "1,2", "--prompt-crs", "EPSG:999999"), "not a CRS"),
        (("--point", "1,2", "--prompts", str(layers["lines"])), "not both"),
    ]:
        result = CliRunner().invoke(main, ["prompt", str(scene), "-o", out, *args])
        assert result.exit_code == 2, result.output
        assert pattern in result.output
    assert not os.path.exists(out)


# ---- the real model ------------------------------------------------------------------------------

PIX4D = "pix4d_alpha_nodata.tif"
# pixel boxes (col0, row0, col1, row1) around a blue tarp, a green field and a net-covered bed
BOXES = [(413, 275, 443, 300), (232, 420, 300, 490), (335, 268, 370, 302)]


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return EmbeddingCache(tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="module")
def pix4d_session(data, model_installed, real_cache):
    return Session(data / PIX4D, cache=real_cache)


def map_box(transform: Affine, box) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = transform @ box[:2], transform @ box[2:]
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def test_box_prompts_match_the_raw_model(data, pix4d_session):
    """The pipeline (window, cache, polygons, georeferencing) loses nothing against the raw model."""
    with rasterio.open(data / PIX4D) as ds:
        image = ds.read([1, 2, 3]).transpose(1, 2, 0)
        valid = ds.dataset_mask() > 0
        transform = ds.transform
    image = np.where(valid[..., None], image, 0).astype(np.uint8)
    frame = pix4d_session.predict(boxes=[map_box(transform, b) for b in BOXES])
    assert len(frame) == len(BOXES) and frame.crs.to_epsg() == 32750
    model = pix4d_session.model
    embedding = model.embed(image)  # the scene fits one model input: its window is the whole scene
    for box, geometry, score in zip(BOXES, frame.geometry, frame["score"], strict=True):
        sam_box = np.array([[box[0], box[1], box[2] - 1, box[3] - 1]], np.float32)
        low_res, iou = model.decode(embedding, boxes=sam_box, multimask=False)
        raw = (model.upscale(embedding, low_res[0]) > 0)[0].numpy() & valid
        ours = rasterize([geometry], out_shape=valid.shape, transform=transform).astype(bool)
        overlap = (raw & ours).sum() / (raw | ours).sum()
        assert overlap >= 0.98, f"IoU {overlap:.4f} for box {box}"
        assert score == pytest.approx(float(iou[0, 0]), abs=1e-5)
        assert raw.sum() > 50


def test_point_prompt_and_a_second_session_uses_the_cache(data, pix4d_session, real_cache):
    transform = pix4d_session.scene.transform
    point = transform @ (428.5, 287.5)  # the blue tarp
    frame = pix4d_session.predict(points=[point])
    assert len(frame) == 1 and frame.geometry[0].contains(shapely.Point(point))
    assert 0 < frame["area_m2"][0] < 200  # a tarp, not the field around it
    again = Session(data / PIX4D, model=pix4d_session.model, cache=real_cache)
    frame2 = again.predict(points=[point])
    assert again.encoded == 0 and same(frame.geometry[0], frame2.geometry[0])


def test_cli_prompt_writes_a_geopackage(tmp_path, data, pix4d_session, real_cache):
    transform = pix4d_session.scene.transform
    pix4d_session.predict(boxes=[map_box(transform, BOXES[0])])  # the window's embedding is cached
    out = tmp_path / "prompts.gpkg"
    box = ",".join(f"{v:.3f}" for v in map_box(transform, BOXES[1]))
    x, y = transform @ (428.5, 287.5)
    outside = f"{x + 1000:.3f},{y:.3f}"  # ids: points 1 and 2 (skipped), then the box 3
    done = geosam(
        "prompt", str(data / PIX4D), "-o", str(out), "--box", box, "--point", f"{x:.3f},{y:.3f}",
        "--point", outside, "--cache-dir", str(real_cache.folder),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "outside the scene" in done.stderr and "2 objects written" in done.stderr
    back = pyogrio.read_dataframe(out, layer="objects")
    assert list(back.columns) == [
        "id",
        "score",
        "stability",
        "area_m2",
        "outline",
        "outline_iou",
        "vertices_raw",
        "vertices",
        "geometry",
    ]
    assert list(back["id"]) == [1, 3] and back.crs.to_epsg() == 32750 and back.geometry.is_valid.all()
    assert pyogrio.list_layers(out)[0][0] == "objects"
