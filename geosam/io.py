"""Writing results: atomically, so a failed run never leaves a partial file at the output path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd

from geosam.errors import OutputError

DRIVERS = {".gpkg": "GPKG"}
# GeoPackage 1.2: GDAL < 3.7 (QGIS 3.22 LTR, Debian's ogrinfo) warns on the 1.4 files newer GDAL writes.
DATASET_OPTIONS = {"GPKG": {"VERSION": "1.2"}}


def check_output(path: Path, overwrite: bool) -> str:
    """Fail before any work if ``path`` cannot be written; return the OGR driver for it."""
    driver = DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise OutputError(f"{path}: unsupported output format; use one of {', '.join(DRIVERS)}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists: pass --overwrite to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{folder}: output folder does not exist; create it first")
    try:  # a real write: permission bits alone do not tell (root, read-only mounts, ACLs)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        raise OutputError(f"{folder}: output folder is not writable; choose another folder") from None
    return driver


def write(objects: gpd.GeoDataFrame, path: Path, overwrite: bool = False, layer: str = "objects") -> None:
    """Write a layer to a new file beside ``path``, then move it into place in one step."""
    write_layers({layer: objects}, path, overwrite=overwrite)


def write_layers(layers: Mapping[str, gpd.GeoDataFrame], path: Path, overwrite: bool = False) -> None:
    """Write several layers to one new file beside ``path``, then move it into place in one step.

    Readers see the old file or the complete new one, never a file with some of the layers.
    """
    driver = check_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    os.unlink(tmp)  # OGR creates the file itself
    try:
        for i, (layer, objects) in enumerate(layers.items()):
            objects.to_file(
                tmp, driver=driver, layer=layer, engine="pyogrio", promote_to_multi=True,
                dataset_options=DATASET_OPTIONS.get(driver) if i == 0 else None, append=False,
            )  # fmt: skip
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
