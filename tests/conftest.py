"""Shared fixtures: sample imagery from ../shared/data and small seeded GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import pytest

from .rasters import DATA


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
