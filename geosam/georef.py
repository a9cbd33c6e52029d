"""A scene opened once: georeferencing, the band plan, validity and one scene-wide stretch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod, Transformer
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioIOError

from geosam.errors import InputError, SceneNotFoundError

STRETCH_SAMPLE = 1024  # longest side, in pixels, of the decimated read that the stretch is computed on


@dataclass(frozen=True)
class Scene:
    """Everything a worker needs to read any window of a raster the same way."""

    path: str
    width: int
    height: int
    crs: CRS | None
    transform: Affine
    bands: tuple[int, ...]  # 1-based band indexes read as gray (1) or red, green, blue (3)
    stretch: tuple[tuple[float, float], ...] | None  # per band (low, high) mapped to 0..255

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the scene's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)

    @property
    def pixel_size(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)


def open_scene(
    path: str | Path,
    bands: tuple[int, ...] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    pixel_coordinates: bool = False,
) -> Scene:
    """Open a raster once and plan how every tile of it is read.

    ``bands`` picks 1 or 3 bands (1-based); by default RGB(A) and RGBN scenes give red, green, blue
    and single-band scenes give gray. Non-8-bit data get one stretch for the whole scene, from the
    ``percentiles`` of its valid pixels in a decimated read. A raster without georeferencing is
    refused unless ``pixel_coordinates`` is true.
    """
    path = str(path)
    if "://" not in path and not path.startswith("/vsi") and not Path(path).exists():
        raise SceneNotFoundError(f"{path}: no such file")
    try:
        with rasterio.open(path) as ds:
            return _plan(ds, path, bands, percentiles, pixel_coordinates)
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({_first_line(exc)})") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _plan(ds, path, bands, percentiles, pixel_coordinates) -> Scene:
    if ds.width == 0 or ds.height == 0:
        raise InputError(f"{path}: the raster has no pixels")
    georeferenced = ds.crs is not None and ds.transform != Affine.identity()
    if not georeferenced and not pixel_coordinates:
        raise InputError(
            f"{path}: the raster has no georeferencing (CRS and geotransform); "
            "georeference it first, or pass --pixel-coordinates to work in pixel units"
        )
    chosen = _choose_bands(ds, bands, path)
    stretch = None if all(ds.dtypes[b - 1] == "uint8" for b in chosen) else _stretch(ds, chosen, percentiles)
    return Scene(
        path=path,
        width=ds.width,
        height=ds.height,
        crs=ds.crs if georeferenced else None,
        transform=ds.transform if georeferenced else Affine.identity(),
        bands=chosen,
        stretch=stretch,
    )


def _choose_bands(ds, bands, path) -> tuple[int, ...]:
    if bands is not None:
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if len(bands) not in (1, 3):
            raise InputError(f"choose 1 or 3 bands, not {len(bands)}")
        if bad:
            raise InputError(f"{path} has {ds.count} band(s); band {bad[0]} does not exist")
        return tuple(bands)
    colour = [b for b in range(1, ds.count + 1) if ds.colorinterp[b - 1] != ColorInterp.alpha]
    if len(colour) == 1:
        return (colour[0],)
    if len(colour) == 2:
        raise InputError(f"{path} has 2 bands: choose one or three with --bands")
    by_interp = {ds.colorinterp[b - 1]: b for b in colour}
    rgb = [by_interp.get(c) for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
    return tuple(rgb) if None not in rgb else tuple(colour[:3])


def _stretch(ds, bands, percentiles) -> tuple[tuple[float, float], ...]:
    factor = max(1.0, max(ds.width, ds.height) / STRETCH_SAMPLE)
    shape = (len(bands), max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
    sample = ds.read(list(bands), out_shape=shape, masked=True)
    valid = ~np.ma.getmaskarray(sample).any(axis=0) & np.isfinite(sample.data).all(axis=0)
    if not valid.any():
        raise InputError(f"{ds.name}: every pixel is nodata")
    limits = []
    for band in sample.data:
        low, high = np.percentile(band[valid], percentiles)
        limits.append((float(low), float(high) if high > low else float(low) + 1.0))
    return tuple(limits)


def to_uint8(data: np.ndarray, stretch: tuple[tuple[float, float], ...] | None) -> np.ndarray:
    """Bands (B, H, W) to uint8 with the scene's stretch (8-bit data pass through)."""
    if stretch is None:
        return data.astype(np.uint8, copy=False)
    low = np.array([s[0] for s in stretch], np.float64)[:, None, None]
    high = np.array([s[1] for s in stretch], np.float64)[:, None, None]
    scaled = (np.nan_to_num(data.astype(np.float64)) - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


_GEOD = Geod(ellps="WGS84")


def area_m2(geometries: np.ndarray, crs: CRS | None) -> np.ndarray:
    """Areas in square metres: planar in projected CRSs, geodesic in geographic and Mercator ones.

    Without a CRS (pixel coordinates) the area is not defined and NaN is returned.
    """
    if crs is None:
        return np.full(len(geometries), np.nan)
    proj = ProjCRS.from_user_input(crs.to_wkt())
    mercator = proj.is_projected and "mercator" in (proj.coordinate_operation.method_name or "").lower()
    if proj.is_projected and not mercator:
        return shapely.area(geometries) * proj.axis_info[0].unit_conversion_factor**2
    to_lonlat = Transformer.from_crs(proj, proj.geodetic_crs, always_xy=True)
    lonlat = shapely.transform(geometries, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    return np.array([abs(_GEOD.geometry_area_perimeter(g)[0]) for g in lonlat])
