"""geosam: objects out of GeoTIFF scenes with Segment Anything models, as georeferenced polygons."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The public API, imported on first use so that `geosam --help` does not wait for torch and dask.
_EXPORTS = {
    "AutomaticParams": "geosam.models",
    "GeosamError": "geosam.errors",
    "ModelSpec": "geosam.models",
    "Scene": "geosam.georef",
    "Session": "geosam.session",
    "Tile": "geosam.tiling",
    "TileGrid": "geosam.tiling",
    "load_model": "geosam.models",
    "open_scene": "geosam.georef",
    "segment": "geosam.pipeline",
}

__all__ = [
    "AutomaticParams",
    "GeosamError",
    "ModelSpec",
    "Scene",
    "Session",
    "Tile",
    "TileGrid",
    "load_model",
    "open_scene",
    "segment",
]

if TYPE_CHECKING:
    from geosam.errors import GeosamError
    from geosam.georef import Scene, open_scene
    from geosam.models import AutomaticParams, ModelSpec, load_model
    from geosam.pipeline import segment
    from geosam.session import Session
    from geosam.tiling import Tile, TileGrid


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geosam' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
