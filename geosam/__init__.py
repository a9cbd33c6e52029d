"""geosam: objects out of GeoTIFF scenes with Segment Anything models, as georeferenced polygons."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from geosam._version import __version__ as __version__

# The public API, imported on first use so that `geosam --help` does not wait for torch and dask.
_EXPORTS = {
    "AutomaticParams": "geosam.models",
    "ChangeResult": "geosam.timeseries",
    "ClassModel": "geosam.classes",
    "EvaluationResult": "geosam.evaluation",
    "GeosamError": "geosam.errors",
    "ModelSpec": "geosam.models",
    "Scene": "geosam.georef",
    "Session": "geosam.session",
    "Tile": "geosam.tiling",
    "TileGrid": "geosam.tiling",
    "change": "geosam.timeseries",
    "compare": "geosam.timeseries",
    "evaluate": "geosam.evaluation",
    "label_raster": "geosam.xr",
    "load_model": "geosam.models",
    "open_scene": "geosam.georef",
    "overview": "geosam.preview",
    "sample_path": "geosam.sample",
    "segment": "geosam.scene_run",
    "track": "geosam.timeseries",
    "write": "geosam.output",
    "write_change": "geosam.timeseries",
    "write_labels": "geosam.labels",
    "write_preview": "geosam.preview",
    "write_tracks": "geosam.timeseries",
}

__all__ = [
    "AutomaticParams",
    "ChangeResult",
    "ClassModel",
    "EvaluationResult",
    "GeosamError",
    "ModelSpec",
    "Scene",
    "Session",
    "Tile",
    "TileGrid",
    "change",
    "compare",
    "evaluate",
    "label_raster",
    "load_model",
    "open_scene",
    "overview",
    "sample_path",
    "segment",
    "track",
    "write",
    "write_change",
    "write_labels",
    "write_preview",
    "write_tracks",
]

if TYPE_CHECKING:
    from geosam.errors import GeosamError
    from geosam.evaluation import EvaluationResult, evaluate
    from geosam.georef import Scene, open_scene
    from geosam.labels import write_labels
    from geosam.models import AutomaticParams, ModelSpec, load_model
    from geosam.output import write
    from geosam.preview import overview, write_preview
    from geosam.sample import sample_path
    from geosam.scene_run import segment
    from geosam.session import Session
    from geosam.tiling import Tile, TileGrid
    from geosam.timeseries import ChangeResult, change, compare, track, write_change, write_tracks
    from geosam.xr import label_raster


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geosam' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
