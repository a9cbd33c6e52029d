"""Shared fixtures: sample imagery from ../shared/data and small seeded GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


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


def write_tif(path: Path, array: np.ndarray, crs="EPSG:32633", transform=None, **profile) -> Path:
    """Write a (bands, rows, cols) array as a GeoTIFF with an explicit CRS and transform."""
    transform = transform or Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0)
    with rasterio.open(
        path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
        dtype=array.dtype, crs=crs, transform=transform, **profile,
    ) as ds:  # fmt: skip
        ds.write(array)
    return path
