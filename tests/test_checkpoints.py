"""Any SAM state dict via --checkpoint: architecture detected or checked, bad files refused in one line."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
import torch
from click.testing import CliRunner

from geosam.cli import main
from geosam.errors import ModelError
from geosam.models import ModelSpec, load_model
from geosam.models.checkpoints import architecture_of, read_shapes, read_state_dict
from geosam.models.sam import SamModel
from geosam.models.weights import sha256_file

from .test_cli import assert_one_line_error, geosam

SMALL = "rgb_unmasked.tif"  # 200 × 200 px: one tile


def test_random_vit_b_segments_a_real_scene_end_to_end(tmp_path, data, random_vit_b):
    out = tmp_path / "objects.gpkg"
    done = geosam(
        "segment", str(data / SMALL), "-o", str(out), "--checkpoint", str(random_vit_b), "--points-per-side", "2",
        "--pred-iou-thresh", "0", "--stability-thresh", "0", "-w", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "objects.report.json").read_text())
    assert report["model"] == "vit_b_random" and report["model_sha256"] == sha256_file(random_vit_b)
    assert report["tiles_done"] == 1 and report["objects"] == len(gpd.read_file(out, layer="objects"))


def test_spec_detects_the_architecture_and_hashes_once(random_vit_b):
    spec = ModelSpec(checkpoint=random_vit_b)
    assert (spec.name, spec.architecture, spec.checksum) == (
        "vit_b_random",
        "vit_b",
        sha256_file(random_vit_b),
    )
    model = load_model(dataclasses.replace(spec, backend="torch"))
    assert model.checksum == spec.checksum and model.image_size == 1024
    assert model.encoder_id == "torch fp32"
    assert {k: tuple(v.shape) for k, v in model.runtime.sam.state_dict().items()} == {
        k: v.shape for k, v in read_shapes(random_vit_b).items()
    }
    assert model.runtime.sam.image_encoder.patch_embed.proj.out_channels == 768


def test_wrong_architecture_names_both(tmp_path, data, random_vit_b):
    with pytest.raises(ModelError, match="is a SAM vit_b checkpoint, not vit_l"):
        ModelSpec(checkpoint=random_vit_b, architecture="vit_l")
    with pytest.raises(ModelError, match="is a SAM vit_b checkpoint, not vit_t"):
        SamModel.load("x", "vit_t", random_vit_b)
    done = geosam(
        "segment", str(data / SMALL), "-o", str(tmp_path / "o.gpkg"), "--checkpoint", str(random_vit_b),
        "--architecture", "vit_h",
    )  # fmt: skip
    assert_one_line_error(done, 1, "is a SAM vit_b checkpoint, not vit_h: give --architecture vit_b")
    assert list(tmp_path.iterdir()) == []


def test_truncated_checkpoint_is_refused(tmp_path, model_installed):
    path = tmp_path / "half.pt"
    data = model_installed.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"half.pt is truncated or corrupt"):
        ModelSpec(checkpoint=path)


class Code:
    """Unpickling this would create a folder: the marker of code that ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path, data):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save(
        {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16), "x": Code(marker)}, path
    )
    with pytest.raises(ModelError, match=r"evil.pt holds pickled objects other than tensors \(\S*mkdir\)"):
        ModelSpec(checkpoint=path)
    done = geosam("prompt", str(data / SMALL), "-o", str(tmp_path / "o.gpkg"), "--checkpoint", str(path),
                  "--point", "1,1", "--pixel-coordinates")  # fmt: skip
    assert_one_line_error(done, 1, "which geosam never unpickles")
    assert not marker.exists()


def test_not_a_state_dict_and_not_sam(tmp_path):
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(ModelError, match=r"list.pt is not a state dict \(a list\)"):
        ModelSpec(checkpoint=listed)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(
        ModelError, match=r"cannot tell the SAM architecture of .*other.pt: give --architecture"
    ):
        ModelSpec(checkpoint=other)
    with pytest.raises(ModelError, match="not a SAM vit_t checkpoint"):
        load_model(ModelSpec(checkpoint=other, architecture="vit_t"))
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ModelError, match=r"notes.pt is not a torch checkpoint"):
        ModelSpec(checkpoint=text)


def test_wrapped_state_dicts_are_unwrapped(tmp_path):
    state = {"image_encoder.layers.0.weight": torch.zeros(1), "mask_decoder.w": torch.ones(1)}
    path = tmp_path / "trained.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    loaded = read_state_dict(path)
    assert loaded.keys() == state.keys() and architecture_of(loaded) == "vit_t"


def test_prompt_with_a_checkpoint_file_equals_the_named_model(tmp_path, data, model_installed):
    """MobileSAM's own file given as --checkpoint: vit_t detected, the same answer as the named model."""
    import rasterio

    from geosam.session import Session

    with rasterio.open(data / SMALL) as scene:
        x, y = scene.xy(100, 100)
    out = tmp_path / "o.gpkg"
    done = geosam("prompt", str(data / SMALL), "-o", str(out), "--point", f"{x},{y}", "--no-cache",
                  "--checkpoint", str(model_installed))  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = gpd.read_file(out, layer="objects")
    named = Session(data / SMALL, "mobile_sam", cache=False).predict(points=[(x, y)])
    assert len(answer) == 1 and answer.geometry.geom_equals(named.geometry).all()


def test_architecture_needs_a_checkpoint(tmp_path, data):
    result = CliRunner().invoke(
        main, ["segment", str(data / SMALL), "-o", str(tmp_path / "o.gpkg"), "--architecture", "vit_b"]
    )
    assert result.exit_code == 2 and "--architecture applies to --checkpoint" in result.output


def test_the_client_reads_a_checkpoints_architecture_without_torch(random_vit_b, model_installed):
    code = (
        "import sys; from geosam.models import ModelSpec\n"
        f"print(ModelSpec(checkpoint={str(random_vit_b)!r}).architecture, "
        f"ModelSpec(checkpoint={str(model_installed)!r}).architecture, 'torch' in sys.modules)"
    )
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["vit_b", "vit_t", "False"]


def test_loading_a_vit_adds_little_but_its_weights(random_vit_b):
    # Building the whole SAM on torch's meta device imported torch's symbolic-shape machinery (75 MB
    # resident for the process's life) for the prompt encoder's random numbers; only the ViT is built so.
    code = (
        "import re, torch\n"
        "from geosam.models.torch import TorchRuntime\n"
        "rss = lambda: int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024\n"
        "before = rss()\n"
        f"runtime = TorchRuntime.load('vit_b', {str(random_vit_b)!r})\n"
        "print(rss() - before, sum(t.nbytes for t in runtime.sam.state_dict().values()))"
    )
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    grown, weights = map(int, done.stdout.split())
    assert grown - weights < 50 * 2**20
