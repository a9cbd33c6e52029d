"""Several dates of a place on one grid: the first date's pixels over the area all dates cover.

A date on another grid or CRS is warped onto that grid (bilinear) through a VRT file that its
tiles are then read from, as any scene's; so is a date cut to the shared area. Footprints are
compared in the first date's CRS; dates that overlap too little are refused before any work.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_geom

from geosam.errors import InputError, SceneNotFoundError, reason
from geosam.georef import is_remote


@dataclass(frozen=True)
class Grid:
    """The grid the dates are compared on: the first date's pixels over the area all of them cover."""

    crs: CRS
    transform: Affine
    width: int
    height: int
    overlap: float  # the shared area as a share of the smallest date's footprint


@dataclass(frozen=True)
class Footprint:
    """One date's raster as found: its grid and its footprint in the first date's CRS."""

    path: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    outline: shapely.Geometry


def footprints(paths: Sequence[str]) -> list[Footprint]:
    """Each date's grid and footprint (in the first date's CRS); an InputError for one without a CRS."""
    found: list[Footprint] = []
    for path in paths:
        if not is_remote(path) and not Path(path).exists():
            raise SceneNotFoundError(f"{path}: no such file; check the path")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as ds:
                    crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
        except RasterioIOError as exc:
            raise InputError(f"{path}: not a readable raster ({reason(exc)})") from exc
        if crs is None or transform == Affine.identity():
            raise InputError(f"{path}: the raster has no georeferencing; dates are compared on the map")
        box = shapely.box(*rasterio.transform.array_bounds(height, width, transform))
        first = found[0].crs if found else crs
        outline = shapely.geometry.shape(transform_geom(crs, first, box))
        found.append(Footprint(path, crs, transform, width, height, outline))
    return found


def common_grid(dates: Sequence[Footprint], min_overlap: float) -> Grid:
    """The first date's grid cut to the area every date covers; an InputError when that area is less
    than ``min_overlap`` of the smallest footprint."""
    shared = shapely.intersection_all([d.outline for d in dates])
    smallest = min(d.outline.area for d in dates)
    share = shared.area / smallest if smallest > 0 else 0.0
    names = " and ".join(Path(d.path).name for d in dates[:3]) + (" ..." if len(dates) > 3 else "")
    if share < min_overlap:
        raise InputError(
            f"{names} overlap on {100 * share:.0f}% of the smaller footprint, less than --min-overlap "
            f"{100 * min_overlap:.0f}%: choose scenes of the same place"
        )
    first = dates[0]
    inverse = ~first.transform
    west, south, east, north = shared.bounds
    cols, rows = zip(
        *(inverse @ xy for xy in ((west, north), (east, south), (west, south), (east, north))), strict=True
    )
    # whole pixels of the first grid inside the shared area (a hair of tolerance for float noise)
    x0, y0 = max(0, math.ceil(min(cols) - 1e-6)), max(0, math.ceil(min(rows) - 1e-6))
    x1, y1 = min(first.width, math.floor(max(cols) + 1e-6)), min(first.height, math.floor(max(rows) + 1e-6))
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"{names} share no whole pixel; choose scenes of the same place")
    transform = first.transform @ Affine.translation(x0, y0)
    return Grid(first.crs, transform, x1 - x0, y1 - y0, share)


def on_grid(date: Footprint, grid: Grid) -> bool:
    """Whether a date's own pixels are the grid's: it is read as it is."""
    return (
        date.crs == grid.crs
        and date.transform.almost_equals(grid.transform)
        and (date.width, date.height) == (grid.width, grid.height)
    )


def warp_to(date: Footprint, grid: Grid, vrt: Path) -> str:
    """``date`` on ``grid``: its own path when it is on it, else a VRT file at ``vrt`` warping it there.

    The VRT is written only where its text differs from the file already there, so that an identical
    rerun keeps the file (and the work folder's key, which names its state).
    """
    if on_grid(date, grid):
        return date.path
    with rasterio.open(date.path) as ds:
        with WarpedVRT(
            ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
            resampling=Resampling.bilinear, add_alpha=ds.nodata is None and ColorInterp.alpha not in ds.colorinterp,
        ) as warped:  # fmt: skip
            tmp = vrt.with_name(f".{vrt.name}.tmp")
            rasterio.shutil.copy(warped, tmp, driver="VRT")
    text = tmp.read_text()
    if vrt.exists() and vrt.read_text() == text:
        tmp.unlink()
    else:
        tmp.replace(vrt)
    return str(vrt)


def describe(dates: Sequence[Footprint], grid: Grid) -> list[str]:
    """What was done to bring each date onto the grid, one line each, for the report."""
    lines = []
    for date in dates:
        if on_grid(date, grid):
            lines.append(f"{date.path}: read as it is")
        elif date.crs != grid.crs:
            lines.append(f"{date.path}: reprojected from {_name(date.crs)} onto the first date's grid")
        elif not _same_pixels(date.transform, grid.transform):
            lines.append(f"{date.path}: resampled onto the first date's grid (other pixels)")
        else:
            lines.append(f"{date.path}: cut to the area all dates cover")
    return lines


def _name(crs: CRS) -> str:
    """A CRS's EPSG code where it has one, else its name (not a page of WKT)."""
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else ProjCRS.from_wkt(crs.to_wkt()).name


def _same_pixels(a: Affine, b: Affine) -> bool:
    """Same pixel size and orientation, and origins a whole number of pixels apart."""
    if not all(math.isclose(p, q, rel_tol=1e-9) for p, q in zip(a[:2] + a[3:5], b[:2] + b[3:5], strict=True)):
        return False
    col, row = ~a @ (b.c, b.f)
    return abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6
