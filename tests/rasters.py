"""Seeded test rasters with explicit CRS and transform, and a stand-in segmenter for pipeline runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
UTM = "EPSG:32631"
ORIGIN = Affine(2, 0, 500_000, 0, -2, 5_000_000)  # 2 m pixels in UTM 31N


def write(path: Path, data: np.ndarray, crs=UTM, transform: Affine = ORIGIN, **profile) -> Path:
    """Write bands (B, H, W) as a GeoTIFF; ``profile`` adds creation options, nodata, descriptions."""
    descriptions = profile.pop("descriptions", None)
    mask = profile.pop("mask", None)
    count, height, width = data.shape
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype,
        crs=crs, transform=transform, **profile,
    ) as ds:  # fmt: skip
        ds.write(data)
        if descriptions:
            ds.descriptions = descriptions
        if mask is not None:
            ds.write_mask(mask)
    return path


def write_ungeoreferenced(path: Path) -> Path:
    """A 64×64 single-band GeoTIFF with neither CRS nor geotransform (rasterio warns as it writes it)."""
    with (
        pytest.warns(NotGeoreferencedWarning),
        rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8") as ds,
    ):
        ds.write(squares(64, 64))
    return path


def squares(height: int = 512, width: int = 512, dtype="uint8", low=20, high=220, seed=0) -> np.ndarray:
    """A dark, slightly noisy field with bright 40-pixel squares every 128 pixels: (1, H, W)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(low, 3, (height, width))
    for y in range(44, height - 40, 128):
        for x in range(44, width - 40, 128):
            image[y : y + 40, x : x + 40] = high
    return image.astype(dtype)[None]
