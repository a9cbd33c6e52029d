"""Shared fixtures: sample imagery from ../shared/data and small seeded GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import pytest

from .rasters import DATA


@pytest.fixture(autouse=True)
def offline(monkeypatch) -> None:
    """Tests never download a model by accident (a missing model is fetched on first use): tests of
    fetching serve the files from 127.0.0.1 and turn this off."""
    from geosam.models.weights import OFFLINE_ENV

    monkeypatch.setenv(OFFLINE_ENV, "1")


@pytest.fixture(scope="session")
def data() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"sample imagery missing: {DATA} (see README, Tests)")
    return DATA


@pytest.fixture(scope="session")
def model_installed() -> Path:
    """The default model's checkpoint; it must be installed (`geosam models fetch`)."""
    from geosam.models.weights import installed_path

    return installed_path("mobile_sam")


@pytest.fixture(scope="session")
def random_vit_b(tmp_path_factory) -> Path:
    """A randomly initialised SAM ViT-B state dict (~375 MB), saved once per test session."""
    import torch

    from geosam.models._mobile_sam import import_mobile_sam

    build_sam, _ = import_mobile_sam()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoints") / "vit_b_random.pth"
    torch.save(build_sam.build_sam_vit_b().state_dict(), path)
    return path
