"""Identities and keys: what says that a file, a model or a run's settings are the same as before.

One module for the three stores that must know whether their content is still current: the work
folder of a resumable scene run (``run_key``), the embedding cache (``file_state`` in its key) and a
pipeline's per-scene records (``file_identity`` and ``model_identity`` in their key).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, fields, is_dataclass
from typing import TYPE_CHECKING, Any

from geosam.tilefile import FORMAT as TILE_FORMAT  # a new tile file layout makes old work folders stale

if TYPE_CHECKING:
    from geosam.georef import Scene
    from geosam.tiling import TileGrid

HEADER_BYTES = 1 << 16  # a file's first 64 KiB (its GeoTIFF header) are hashed into its state


def digest(value: Any, length: int = 64) -> str:
    """A sha256 hex digest of ``value`` as sorted JSON (anything JSON cannot write, as its str)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def file_state(path: str) -> dict[str, Any] | None:
    """What identifies a local file's content: size, modification time and a hash of its header;
    None where it cannot be read (URLs, /vsi paths)."""
    try:
        stat = os.stat(path)
        with open(path, "rb") as f:
            header = hashlib.sha256(f.read(HEADER_BYTES)).hexdigest()
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "header": header}


def file_identity(path: str) -> dict[str, Any]:
    """A file's absolute path and state; for remote paths the path alone (the planned grid stands in)."""
    state = file_state(path)
    return {"path": path} if state is None else {"path": os.path.abspath(path), **state}


def model_identity(source: object) -> dict[str, Any]:
    """A model source's name, checkpoint sha256 (where it has one) and every setting."""
    name = getattr(source, "name", type(source).__name__)
    checksum = getattr(source, "checksum", None)
    if checksum is None and type(source).__name__ == "ModelSpec":
        from geosam.models.weights import known

        checksum = known(name).sha256
    settings = (
        json.loads(json.dumps(_compared(source), default=str)) if is_dataclass(source) else repr(source)
    )
    return {"name": name, "checksum": checksum, "type": type(source).__qualname__, "settings": settings}


def _compared(source: Any) -> dict[str, Any]:
    """A dataclass's fields, less those it leaves out of comparisons (``ModelSpec.offline``: how weights are
    found, not which)."""
    return {
        f.name: asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
        for f in fields(source)
        if f.compare
        for value in [getattr(source, f.name)]
    }


def run_key(scene: Scene, grid: TileGrid, source: object) -> str:
    """The key of a scene run's finished tiles: scene, read plan, tiling, model and geosam's version.

    Only what decides the objects of the tiles goes in: filters that act after stitching (``min_area``,
    ``simplify``) do not, so changing them reuses every tile.
    """
    from geosam._version import __version__

    plan = {
        "scene": file_identity(scene.path),
        "grid": [scene.width, scene.height, list(scene.transform)[:6], scene.resampling],
        "crs": scene.crs.to_wkt() if scene.crs is not None else None,
        "bands": list(scene.bands),
        "stretch": scene.stretch,
        "nodata": scene.nodata,
        "tiling": [grid.size, grid.overlap],
        "model": model_identity(source),
        "geosam": __version__,
        "format": TILE_FORMAT,
    }
    return digest(plan, 24)
