"""Writing results: atomically, so a failed run never leaves a partial file at the output path."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import geopandas as gpd

from geosam.errors import OutputError
from geosam.report import RunReport

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


def write(
    objects: gpd.GeoDataFrame,
    path: Path,
    overwrite: bool = False,
    layer: str = "objects",
    report: RunReport | None = None,
) -> None:
    """Write a layer to a new file beside ``path``, then move it into place in one step.

    With a ``report``, the layer carries the run's provenance as GeoPackage metadata (the metadata
    extension, which GDAL writes): a few items to read at a glance and the whole report as JSON.
    No second layer: readers that take the file's only layer keep working without a warning.
    """
    driver = check_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    os.unlink(tmp)  # OGR creates the file itself
    try:
        objects.to_file(
            tmp, driver=driver, layer=layer, engine="pyogrio", promote_to_multi=True,
            dataset_options=DATASET_OPTIONS.get(driver), layer_metadata=_layer_metadata(report),
        )  # fmt: skip
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _layer_metadata(report: RunReport | None) -> dict[str, str] | None:
    """How the layer was made, in short: shown by ``ogrinfo`` and QGIS's layer properties."""
    if report is None:
        return None
    return {
        "GEOSAM_VERSION": str(report.versions.get("geosam")),
        "GEOSAM_MODEL": report.model,
        "GEOSAM_MODEL_SHA256": report.model_sha256 or "",
        "GEOSAM_SCENE": report.scene,
        "GEOSAM_STARTED": report.started,
        "GEOSAM_STATUS": report.status,
        "GEOSAM_RUN_REPORT": report.to_json(),
    }
