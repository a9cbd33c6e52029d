"""geosam: objects out of GeoTIFF scenes with Segment Anything models, as georeferenced polygons."""

from geosam.errors import GeosamError
from geosam.georef import Scene, open_scene
from geosam.models import AutomaticParams, ModelSpec, load_model
from geosam.pipeline import segment
from geosam.tiling import Tile, TileGrid

__version__ = "0.1.0"

__all__ = [
    "AutomaticParams",
    "GeosamError",
    "ModelSpec",
    "Scene",
    "Tile",
    "TileGrid",
    "load_model",
    "open_scene",
    "segment",
]
