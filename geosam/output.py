"""Writing results as vector files: atomically, so a failed run never leaves a partial file at the output path.

Formats by extension: GeoPackage (with a default QGIS style), GeoJSON (RFC 7946, WGS84), GeoParquet
and Shapefile (a set of files, field names of at most 10 characters).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import warnings
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from geosam import atomic, style
from geosam.errors import OutputError

if TYPE_CHECKING:
    import geopandas as gpd

    from geosam.report import RunReport

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".parquet": "Parquet", ".shp": "ESRI Shapefile"}
# GeoPackage 1.2: GDAL < 3.7 (QGIS 3.22 LTR, Debian's ogrinfo) warns on the 1.4 files newer GDAL writes.
DATASET_OPTIONS = {"GPKG": {"VERSION": "1.2"}}
# RFC 7946: GeoJSON is WGS84 longitude/latitude; GDAL reprojects and writes 7 decimals (about 1 cm).
LAYER_OPTIONS = {"GeoJSON": {"RFC7946": "YES"}, "ESRI Shapefile": {"ENCODING": "UTF-8"}}
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qmd")
SHAPEFILE_NAME = 10  # dBASE field names have at most 10 characters
STYLE_NAME = "geosam: outlines by score"
STYLE_DESCRIPTION = "Outlines coloured by the model's score (low: red, high: cyan)"

LAYER = "objects"  # the layer geosam writes its objects to
RAW_GEOMETRY = "raw_geometry"  # a column of pixel outlines (--keep-raw), written as layer LAYER_raw


def check_output(path: Path, overwrite: bool, formats: dict[str, str] = DRIVERS) -> str:
    """Fail before any work if ``path`` cannot be written; return the driver (format) for it."""
    path = Path(path)
    driver = formats.get(path.suffix.lower())
    if driver is None:
        raise OutputError(f"{path}: unsupported output format; use one of {', '.join(formats)}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists: pass --overwrite to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{folder}: output folder does not exist; create it first")
    try:  # a real write: permission bits alone do not tell (root, read-only mounts, ACLs)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        raise OutputError(f"{folder}: output folder is not writable; choose another folder") from None
    if driver == "Parquet":
        _pyarrow()
    return driver


def write(
    objects: gpd.GeoDataFrame,
    path: Path,
    overwrite: bool = False,
    layer: str = LAYER,
    report: RunReport | None = None,
) -> None:
    """Write the objects to ``path`` in the format its extension names, then move it into place in one step.

    A GeoPackage gets layer ``layer``, a default style (outlines coloured by score) that QGIS applies
    on opening and, with a ``report``, the run's provenance as layer metadata (a few items to read
    at a glance and the whole report as JSON); a Shapefile's field names are cut to 10 characters
    (``shapefile_fields``).

    Args:
        objects: The objects, e.g. what ``geosam.segment`` returns.
        path: The output file: .gpkg (GeoPackage), .geojson (GeoJSON, reprojected to WGS84),
            .parquet (GeoParquet, needs pyarrow) or .shp (Shapefile).
        overwrite: Replace an existing file at ``path``.
        layer: The layer name (GeoPackage and GeoJSON).
        report: The run's report (``geosam.report.RunReport``), kept as a GeoPackage's layer
            metadata.

    Raises:
        OutputError: The extension names no supported format, the file exists (without
            ``overwrite``), its folder does not exist or is not writable, or GeoParquet output
            lacks pyarrow. Nothing is written then.
    """
    write_layers(
        {layer: objects},
        path,
        overwrite=overwrite,
        metadata={layer: report.layer_metadata() if report is not None else None},
    )


def write_layers(
    layers: Mapping[str, gpd.GeoDataFrame],
    path: Path,
    overwrite: bool = False,
    metadata: Mapping[str, dict[str, str] | None] | None = None,
    styles: Mapping[str, style.Style] | None = None,
) -> None:
    """Write named layers to one new file beside ``path``, then move it into place in one step.

    Readers see the old file or the complete new one, never a file with some of the layers.
    Several layers need a GeoPackage; ``metadata`` and ``styles`` (per layer) are kept in GeoPackages,
    where a layer with a ``score`` field and no style of its own gets outlines coloured by score.
    """
    path = Path(path)
    driver = check_output(path, overwrite)
    layers = _with_raw(layers)
    if len(layers) > 1 and driver != "GPKG":
        raise OutputError(f"{path}: {len(layers)} layers need a GeoPackage; name the output *.gpkg")
    if driver == "ESRI Shapefile":
        _write_shapefile(next(iter(layers.values())), path)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    os.unlink(tmp)  # the writer creates the file itself
    try:
        with atomic.faults(path, probing=True):  # tmp is still there
            for i, (layer, objects) in enumerate(layers.items()):
                _write_layer(objects, tmp, driver, layer, first=i == 0, metadata=(metadata or {}).get(layer))
            if driver == "GPKG":
                for layer, objects in layers.items():
                    chosen = (styles or {}).get(layer)
                    if chosen is None and "score" in objects.columns:
                        chosen = style.Style(
                            STYLE_NAME, STYLE_DESCRIPTION, style.qml(objects["score"].to_numpy())
                        )
                    if chosen is not None:
                        add_style(Path(tmp), layer, chosen)
            atomic.publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _with_raw(layers: Mapping[str, gpd.GeoDataFrame]) -> dict[str, gpd.GeoDataFrame]:
    """The layers, each with a ``RAW_GEOMETRY`` column split into a layer NAME_raw of its own (id and the
    pixel outline)."""
    out: dict[str, gpd.GeoDataFrame] = {}
    for name, objects in layers.items():
        if RAW_GEOMETRY not in objects.columns:
            out[name] = objects
            continue
        import geopandas as gpd

        out[name] = objects.drop(columns=RAW_GEOMETRY)
        ids = {"id": objects["id"].to_numpy()} if "id" in objects.columns else {}
        out[f"{name}_raw"] = gpd.GeoDataFrame(ids, geometry=objects[RAW_GEOMETRY].to_numpy(), crs=objects.crs)
    return out


def _write_layer(
    objects: gpd.GeoDataFrame, tmp: str, driver: str, layer: str, first: bool, metadata: dict[str, str] | None
) -> None:
    if driver == "Parquet":
        objects.to_parquet(tmp, index=False)
        return
    options = LAYER_OPTIONS.get(driver)
    if driver == "GeoJSON" and objects.crs is None:  # pixel coordinates: RFC 7946 needs a CRS
        options = {}
    with warnings.catch_warnings():  # pixel coordinates have no CRS, and that is known
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        objects.to_file(
            tmp, driver=driver, layer=layer, engine="pyogrio", promote_to_multi=True,
            dataset_options=DATASET_OPTIONS.get(driver) if first else None, layer_options=options,
            layer_metadata=metadata if driver == "GPKG" else None,
        )  # fmt: skip


def shapefile_fields(columns) -> dict[str, str]:
    """Column name -> dBASE field name of at most 10 characters, unique (``name_2`` style when cut)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for column in columns:
        name = str(column)[:SHAPEFILE_NAME]
        n = 1
        while name.lower() in taken:
            n += 1
            suffix = f"_{n}"
            name = str(column)[: SHAPEFILE_NAME - len(suffix)] + suffix
        taken.add(name.lower())
        names[column] = name
    return names


def _write_shapefile(objects: gpd.GeoDataFrame, path: Path) -> None:
    """A Shapefile is several files: write them into a temporary folder beside ``path``, then move each."""
    columns = [c for c in objects.columns if c != objects.geometry.name]
    renamed = objects.rename(columns=shapefile_fields(columns))
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}-"))
    try:
        with atomic.faults(path, probing=True):
            with warnings.catch_warnings():  # pixel coordinates have no CRS, and that is known
                warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
                renamed.to_file(
                    folder / path.name, driver="ESRI Shapefile", engine="pyogrio", promote_to_multi=True,
                    layer_options=LAYER_OPTIONS["ESRI Shapefile"],
                )  # fmt: skip
            written = sorted(folder.iterdir(), key=lambda p: p.suffix.lower() == ".shp")  # the .shp last
            for stale in SHAPEFILE_PARTS:  # sidecars of a replaced Shapefile (indexes) would not match it
                old = path.with_suffix(stale)
                if old.exists() and not (folder / old.name).exists():
                    old.unlink()
            for part in written:
                atomic.fsync_file(part)
            for part in written:
                os.replace(part, path.parent / part.name)
            atomic.fsync_dir(path.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def add_style(gpkg: Path, layer: str, chosen: style.Style) -> None:
    """Store ``chosen`` as the default style of ``layer`` in the GeoPackage's ``layer_styles`` table.

    The table is the one QGIS itself creates (OGC / QGIS convention), registered in gpkg_contents
    as an attributes table, so GDAL lists it and QGIS applies the style when the layer is opened.
    """
    with closing(sqlite3.connect(gpkg)) as db, db:  # commit, then close
        (geometry,) = db.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
        ).fetchone()
        db.execute(
            """CREATE TABLE IF NOT EXISTS layer_styles (
                id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
                f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256),
                f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
                useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
                update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""
        )
        db.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, last_change) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', strftime('%Y-%m-%dT%H:%M:%fZ','now'))"
        )
        db.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui) "
            "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', '')",
            (layer, geometry, chosen.name, chosen.qml, chosen.description),
        )


def _pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise OutputError(
            "GeoParquet output needs pyarrow: pip install 'geosam[parquet]' (or pip install pyarrow)"
        ) from None
