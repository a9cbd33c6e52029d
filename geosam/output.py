"""Writing results as vector files: atomically, so a failed run never leaves a partial file at the output path.

Formats by extension: GeoPackage (with a default QGIS style), GeoJSON (RFC 7946, WGS84), GeoParquet
and Shapefile (a set of files, field names of at most 10 characters).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import shapely

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


@dataclass(frozen=True)
class Batches:
    """A layer that comes a batch at a time (``geosam.objectstore.ObjectStore.ordered``): ``frames``, at
    least one (an empty one gives the layer its fields), and the ``scores`` its style is drawn from
    (only their range counts: ``geosam.style.classes``; their lowest and highest will do)."""

    frames: Iterable[gpd.GeoDataFrame]
    scores: np.ndarray | None = None


Layer = Union["gpd.GeoDataFrame", Batches]


def write(
    objects: Layer,
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
        objects: The objects, e.g. what ``geosam.segment`` returns, or ``Batches`` of them (written one
            after the other, never all in memory).
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
    layers: Mapping[str, Layer],
    path: Path,
    overwrite: bool = False,
    metadata: Mapping[str, dict[str, str] | None] | None = None,
    styles: Mapping[str, style.Style] | None = None,
) -> None:
    """Write named layers (frames or ``Batches``) to one new file beside ``path``, then move it into place
    in one step.

    Readers see the old file or the complete new one, never a file with some of the layers.
    Several layers need a GeoPackage; ``metadata`` and ``styles`` (per layer) are kept in GeoPackages,
    where a layer with a ``score`` field and no style of its own gets outlines coloured by score.
    A ``RAW_GEOMETRY`` column becomes a layer NAME_raw of its own (id and the pixel outline).
    """
    path = Path(path)
    driver = check_output(path, overwrite)
    batches = {name: _batches(layer, whole=driver == "GeoJSON") for name, layer in layers.items()}
    count = len(layers) + sum(RAW_GEOMETRY in first.columns for first, _ in batches.values())
    if count > 1 and driver != "GPKG":
        raise OutputError(f"{path}: {count} layers need a GeoPackage; name the output *.gpkg")
    if driver == "ESRI Shapefile":
        _write_shapefile(next(iter(batches.values()))[1].frames, path)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    os.unlink(tmp)  # the writer creates the file itself
    try:
        with atomic.faults(path, probing=True):  # tmp is still there
            if driver == "Parquet":
                _write_parquet(next(iter(batches.values()))[1].frames, tmp)
            else:
                _write_batches({name: b for name, (_, b) in batches.items()}, tmp, driver, metadata or {})
            if driver == "GPKG":
                for layer, (_, b) in batches.items():
                    chosen = (styles or {}).get(layer)
                    if chosen is None and b.scores is not None:
                        chosen = style.Style(STYLE_NAME, STYLE_DESCRIPTION, style.qml(b.scores))
                    if chosen is not None:
                        add_style(Path(tmp), layer, chosen)
            atomic.publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _batches(layer: Layer, whole: bool = False) -> tuple[gpd.GeoDataFrame, Batches]:
    """``layer``'s first frame, to look at before writing, and the layer as batches (that frame first);
    ``whole``: as one frame (GDAL's GeoJSON driver reorders features appended to a file)."""
    if not isinstance(layer, Batches):
        return layer, Batches([layer], layer["score"].to_numpy() if "score" in layer.columns else None)
    frames = iter(layer.frames)
    first = next(frames)
    if whole:
        import pandas as pd

        first = pd.concat([first, *frames], ignore_index=True)
        return first, Batches([first], layer.scores)
    return first, Batches(itertools.chain([first], frames), layer.scores)


def _write_batches(
    layers: Mapping[str, Batches], tmp: str, driver: str, metadata: Mapping[str, dict[str, str] | None]
) -> None:
    """Each layer a batch at a time (the first creates it, with its ``metadata``), and each batch's
    ``RAW_GEOMETRY`` into layer NAME_raw."""
    for i, (layer, batches) in enumerate(layers.items()):
        for j, frame in enumerate(batches.frames):
            objects, raw = _split_raw(frame)
            _write_layer(
                objects, tmp, driver, layer, i == 0 and j == 0, j > 0, metadata.get(layer) if j == 0 else None
            )
            if raw is not None:
                _write_layer(raw, tmp, driver, f"{layer}_raw", False, j > 0, None)


def _split_raw(objects: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None]:
    """The objects less their ``RAW_GEOMETRY`` column, and that column as a frame of its own (id and the pixel
    outline; None without the column)."""
    if RAW_GEOMETRY not in objects.columns:
        return objects, None
    import geopandas as gpd

    ids = {"id": objects["id"].to_numpy()} if "id" in objects.columns else {}
    raw = gpd.GeoDataFrame(ids, geometry=objects[RAW_GEOMETRY].to_numpy(), crs=objects.crs)
    return objects.drop(columns=RAW_GEOMETRY), raw


def _write_layer(
    objects: gpd.GeoDataFrame, tmp: str, driver: str, layer: str | None, first: bool, append: bool,
    metadata: dict[str, str] | None,
) -> None:  # fmt: skip
    options = LAYER_OPTIONS.get(driver)
    if driver == "GeoJSON" and objects.crs is None:  # pixel coordinates: RFC 7946 needs a CRS
        options = {}
    with warnings.catch_warnings():  # pixel coordinates have no CRS, and that is known
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        objects.to_file(
            tmp, driver=driver, layer=layer, engine="pyogrio", promote_to_multi=True, mode="a" if append else "w",
            dataset_options=DATASET_OPTIONS.get(driver) if first else None,
            layer_options=None if append else options,
            layer_metadata=metadata if driver == "GPKG" and not append else None,
        )  # fmt: skip


def _write_parquet(frames: Iterable[gpd.GeoDataFrame], tmp: str) -> None:
    """GeoParquet, a row group a batch: the schema and the ``geo`` metadata (GeoParquet 1.0.0, WKB) of
    the first frame."""
    import pandas as pd  # here: workers import this module's neighbours and never need it
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, schema = None, None
    try:
        for frame in frames:
            name = frame.geometry.name
            table = pa.Table.from_pandas(
                pd.DataFrame(frame.drop(columns=name)).assign(**{name: shapely.to_wkb(frame.geometry.values)}),
                schema=schema, preserve_index=False,
            )  # fmt: skip
            if writer is None:
                crs = frame.crs.to_json_dict() if frame.crs is not None else None
                geo = {"version": "1.0.0", "primary_column": name,
                       "columns": {name: {"encoding": "WKB", "geometry_types": [], "crs": crs}}}  # fmt: skip
                schema = table.schema.with_metadata(
                    {**(table.schema.metadata or {}), b"geo": json.dumps(geo)}
                )
                table = table.replace_schema_metadata(schema.metadata)
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


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


def _write_shapefile(frames: Iterable[gpd.GeoDataFrame], path: Path) -> None:
    """A Shapefile is several files: write them into a temporary folder beside ``path``, then move each."""
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}-"))
    try:
        with atomic.faults(path, probing=True):
            for j, objects in enumerate(frames):
                columns = [c for c in objects.columns if c != objects.geometry.name]
                _write_layer(objects.rename(columns=shapefile_fields(columns)), str(folder / path.name),
                             "ESRI Shapefile", None, j == 0, j > 0, None)  # fmt: skip
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
