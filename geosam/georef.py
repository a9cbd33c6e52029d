"""A scene opened once: georeferencing, the band plan, validity and one scene-wide stretch."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod, Transformer
from rasterio.crs import CRS
from rasterio.dtypes import dtype_rev, typename_fwd
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geosam import heap
from geosam.errors import InputError, SceneNotFoundError, reason
from geosam.settings import READ

log = logging.getLogger(__name__)

STRETCH_SAMPLE = 1024  # longest side, in pixels, of the decimated read that the stretch is computed on
SAMPLE_WINDOWS = 16  # without overviews, the stretch reads SAMPLE_WINDOWS² windows spread over the scene
SCAN_PIXELS = 1 << 22  # pixels per read while searching a scene that looks all-nodata for a valid pixel
MAX_PIXELS = 1 << 34  # a resampled grid larger than this is a mistake, not a scene
# A value that fills this share of a scene's valid pixels, in areas that reach its border, with no nodata
# declared: most likely a collar or a blank part the file does not flag (pan2/pan3 of the samples: a third);
# warned about once per scene and value. Real ground of one exact value over a tenth of a scene is rare
# (saturated cloud or snow, clipped water), and the warning only suggests --nodata.
FILL_SHARE = 0.1
_warned: set[tuple[str, str]] = set()  # (scene, what): said once per process
_GDAL_TYPES = {name: typename_fwd[code] for name, code in dtype_rev.items()}  # "uint16": "UInt16"


@dataclass(frozen=True)
class Scene:
    """Everything a worker needs to read any window of a raster the same way.

    ``width``, ``height`` and ``transform`` describe the grid the tiles are cut from: the file's own,
    or, when ``resampling`` is set, a grid of another pixel size that reads are warped onto.
    ``open_scene`` makes one.

    Attributes:
        path: The raster's path or GDAL URL, as given.
        width: Columns of the grid, in pixels.
        height: Rows of the grid, in pixels.
        crs: The scene's CRS; None for a raster without georeferencing (pixel coordinates).
        transform: Grid pixel to map coordinates (the identity without georeferencing).
        bands: 1-based band indexes read as gray (1) or red, green, blue (3).
        stretch: Per band, the (low, high) values mapped to 0..255; None reads 8-bit data as is.
        resampling: A rasterio Resampling name when the grid is not the file's; None reads the
            file's own pixels.
        nodata: The value read as nodata in every band, in place of the file's own nodata value,
            mask or alpha band; None keeps the file's.
    """

    path: str
    width: int
    height: int
    crs: CRS | None
    transform: Affine
    bands: tuple[int, ...]  # 1-based band indexes read as gray (1) or red, green, blue (3)
    stretch: tuple[tuple[float, float], ...] | None  # per band (low, high) mapped to 0..255
    resampling: str | None = None  # a rasterio Resampling name when the grid is not the file's
    nodata: float | None = None  # declared nodata in every band, over the file's own validity

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the scene's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)

    @property
    def pixel_size(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)


@contextmanager
def reader(scene: Scene) -> Iterator[DatasetReader | WarpedVRT]:
    """The scene's raster on the scene's grid: the file itself (with the scene's nodata declared), or a
    WarpedVRT onto the resampled grid."""
    with _quiet(), _opened(scene.path, scene.nodata) as ds:
        if scene.resampling is None:
            yield ds
            return
        with WarpedVRT(
            ds, crs=ds.crs, transform=scene.transform, width=scene.width, height=scene.height,
            resampling=Resampling[scene.resampling], add_alpha=ColorInterp.alpha not in ds.colorinterp,
        ) as vrt:  # fmt: skip
            yield vrt


@contextmanager
def _quiet() -> Iterator[None]:
    """rasterio's warnings that each read would repeat: a raster without georeferencing (checked when the
    scene is opened), and a nodata value that shadows an alpha band (GDAL's rule: the nodata value
    decides; ``open_scene`` says so once, and ``--nodata`` replaces both)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.simplefilter("ignore", NodataShadowWarning)
        yield


@contextmanager
def _opened(path: str, nodata: float | None) -> Iterator[DatasetReader]:
    """The raster at ``path``; with ``nodata``, through a VRT that declares it nodata in every band."""
    with rasterio.open(path) as ds:
        if nodata is None:
            yield ds
            return
        with rasterio.open(_nodata_vrt(ds, nodata)) as vrt:
            yield vrt


def _nodata_vrt(ds: DatasetReader, nodata: float) -> str:
    """A VRT (XML) of ``ds``, band for band, with ``nodata`` as every band's nodata value but alpha bands'.

    GDAL then masks those pixels just as a value declared in the file: in reads, in their masks, in
    averaged and overview reads and in warping. A band's nodata value takes precedence over the file's
    mask and alpha band, which --nodata thus replaces.
    """
    from rasterio._path import _parse_path  # the GDAL path rasterio.open read (https:// -> /vsicurl/https://)

    source = escape(_parse_path(ds.name).as_vsi())
    georeferencing = f"<SRS>{escape(ds.crs.to_wkt())}</SRS>" if ds.crs is not None else ""
    if ds.transform != Affine.identity():
        georeferencing += f"<GeoTransform>{', '.join(repr(v) for v in ds.transform.to_gdal())}</GeoTransform>"
    bands = []
    for b, (kind, dtype, description) in enumerate(
        zip(ds.colorinterp, ds.dtypes, ds.descriptions, strict=True), 1
    ):
        value = "" if kind == ColorInterp.alpha else f"<NoDataValue>{float(nodata)!r}</NoDataValue>"
        bands.append(
            f'<VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{b}"><ColorInterp>{kind.name}</ColorInterp>'
            f"<Description>{escape(description or '')}</Description>{value}<SimpleSource>"
            f'<SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
            "</SimpleSource></VRTRasterBand>"
        )
    return f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}">{georeferencing}{"".join(bands)}</VRTDataset>'


def is_remote(path: str) -> bool:
    """A URL or GDAL virtual path (``/vsi...``): nothing on this machine's disk to look for."""
    return "://" in path or path.startswith("/vsi")


def open_scene(
    path: str | Path,
    bands: tuple[int | str, ...] | None = READ.bands,
    percentiles: tuple[float, float] = READ.percentiles,
    stretch_8bit: bool = READ.stretch_8bit,
    resolution: float | None = READ.resolution,
    pixel_coordinates: bool = READ.pixel_coordinates,
    nodata: float | None = READ.nodata,
    stretch: tuple[tuple[float, float], ...] | None = None,
) -> Scene:
    """Open a raster once and plan how every tile of it is read.

    ``bands`` picks 1 or 3 bands by 1-based index or by band description / colour name (``"nir"``).
    By default: gray for one band, the bands marked red, green, blue where there are such, else
    bands 1,2,3 of a 3- or 4-band (RGB, RGBN) scene; more bands must be chosen. Data that are not
    8-bit (and 8-bit data with ``stretch_8bit``) get one stretch for the whole scene, from the
    ``percentiles`` of the valid pixels of a sample. ``resolution`` (CRS units per pixel) resamples
    every read onto a grid of that pixel size. A raster without georeferencing is refused unless
    ``pixel_coordinates`` is true. ``nodata`` declares pixels of that value in any band read invalid,
    in place of the file's own nodata value, mask or alpha band. ``stretch`` fixes the stretch of every
    band read, 8-bit data too (e.g. one shared by several dates, see ``joint_stretch``).

    Only a sample of the scene is read here; tiles are read later, each on its own.

    Args:
        path: Any GDAL raster path or URL (``/vsi...``, ``https://...``).
        bands: 1 or 3 bands, each a 1-based index or a band description / colour name
            (default: chosen as above).
        percentiles: (low, high) percentiles of the valid pixels stretched to 0..255, with
            ``0 <= low < high <= 100`` (default: the settings' percentiles).
        stretch_8bit: Stretch 8-bit data too; otherwise they are read as is.
        resolution: Pixel size to resample reads to, in the CRS's units (default: the file's own).
        pixel_coordinates: Accept a raster without georeferencing; its polygons are then in pixels.
        nodata: The nodata value of every band (default: the file's nodata, mask or alpha).
        stretch: Per band read, the (low, high) values mapped to 0..255, in place of the percentiles'.

    Returns:
        The scene: its grid, CRS, band plan and stretch, all a worker needs to read any window.

    Raises:
        SceneNotFoundError: ``path`` is a local path that does not exist.
        InputError: The raster cannot be read or has no pixels, no valid pixel, or no georeferencing
            (without ``pixel_coordinates``); the bands cannot be chosen or do not exist; the
            percentiles or resolution are out of range; ``nodata`` is not a value of the data type.
    """
    path = str(path)
    if not is_remote(path) and not Path(path).exists():
        raise SceneNotFoundError(f"{path}: no such file; check the path")
    low, high = percentiles
    if not 0 <= low < high <= 100:
        raise InputError(f"percentiles {low:g},{high:g}: use 0 <= LOW < HIGH <= 100")
    if resolution is not None and not resolution > 0:
        raise InputError(f"resolution {resolution:g}: give a positive pixel size in the scene's CRS units")
    try:
        with _quiet(), _opened(path, nodata) as ds:
            scene = _plan(ds, path, bands, percentiles, stretch_8bit, resolution, pixel_coordinates, nodata)
            if stretch is not None:
                scene = replace(scene, stretch=_check_stretch(stretch, len(scene.bands), path))
    except RasterioIOError as exc:
        raise InputError(
            f"{path}: not a readable raster ({reason(exc)}); "
            "check that it is a complete GeoTIFF or other GDAL raster"
        ) from exc
    # The sample's reads filled GDAL's block cache (whole blocks, up to 5% of RAM), freed on closing.
    heap.give_back()
    return scene


def _plan(ds, path, bands, percentiles, stretch_8bit, resolution, pixel_coordinates, nodata) -> Scene:
    if ds.width == 0 or ds.height == 0:
        raise InputError(f"{path}: the raster has no pixels")
    georeferenced = ds.crs is not None and ds.transform != Affine.identity()
    if not georeferenced and not pixel_coordinates:
        raise InputError(
            f"{path}: the raster has no georeferencing (CRS and geotransform); "
            "georeference it first, or pass --pixel-coordinates to work in pixel units"
        )
    chosen = _choose_bands(ds, bands, path)
    if nodata is not None:
        _check_nodata(nodata, {ds.dtypes[b - 1] for b in chosen}, path)
    sample = _sample(ds, chosen)
    if nodata is None and all(ds.mask_flag_enums[b - 1] == [MaskFlags.all_valid] for b in chosen):
        _warn_fill(path, sample)
    if nodata is None and ds.nodata is not None and ColorInterp.alpha in ds.colorinterp:
        _warn_once(
            path, "alpha", "%s: a nodata value (%g) and an alpha band: the nodata value decides which pixels "
            "are valid, as GDAL reads the file (--nodata sets another value)", path, ds.nodata,
        )  # fmt: skip
    if sample.mask.all():  # the sample missed every valid pixel, or there are none
        strip = _valid_strip(ds, chosen)
        if strip is None:
            raise InputError(f"{path}: every pixel is nodata or masked; there is nothing to segment")
        sample = strip
    eight_bit = all(ds.dtypes[b - 1] == "uint8" for b in chosen)
    stretch = None if eight_bit and not stretch_8bit else _stretch(sample, percentiles)
    width, height, transform, resampling = ds.width, ds.height, ds.transform, None
    if resolution is not None:
        if not georeferenced:
            raise InputError(f"{path}: --resolution needs a georeferenced raster")
        width, height, transform, resampling = _resample(ds, resolution, path)
    return Scene(
        path=path,
        width=width,
        height=height,
        crs=ds.crs if georeferenced else None,
        transform=transform if georeferenced else Affine.identity(),
        bands=chosen,
        stretch=stretch,
        resampling=resampling,
        nodata=nodata,
    )


def _check_stretch(
    stretch: tuple[tuple[float, float], ...], bands: int, path: str
) -> tuple[tuple[float, float], ...]:
    """A fixed stretch of one (low, high) per band read, low below high, as a tuple of float pairs."""
    pairs = tuple((float(low), float(high)) for low, high in stretch)
    if len(pairs) != bands or any(not low < high for low, high in pairs):
        raise InputError(f"{path}: give one (low, high) stretch per band read ({bands}), low below high")
    return pairs


def _check_nodata(nodata: float, dtypes: set[str], path: str) -> None:
    """Fail on a nodata value that no pixel of these data types can have (it would mask nothing)."""
    for dtype in sorted(dtypes):
        if np.dtype(dtype).kind in "iu":
            info = np.iinfo(dtype)
            if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
                raise InputError(
                    f"{path}: --nodata {nodata:g} is not a {dtype} value; give an integer from {info.min} to {info.max}"
                )


def _resample(ds, resolution: float, path: str) -> tuple[int, int, Affine, str]:
    """The grid of ``resolution``-sized pixels over the scene, and how to resample onto it."""
    fx, fy = (
        resolution / math.hypot(ds.transform.a, ds.transform.d),
        resolution / math.hypot(ds.transform.b, ds.transform.e),
    )
    width, height = max(1, round(ds.width / fx)), max(1, round(ds.height / fy))
    if width * height > MAX_PIXELS or (width == 1 and height == 1):
        raise InputError(
            f"{path}: --resolution {resolution:g} gives a {width} × {height} px grid; "
            f"give a pixel size in the CRS units of the scene ({_units(ds.crs)})"
        )
    transform = ds.transform @ Affine.scale(ds.width / width, ds.height / height)
    return width, height, transform, "average" if fx > 1 or fy > 1 else "bilinear"


def _units(crs: CRS) -> str:
    return ProjCRS.from_user_input(crs.to_wkt()).axis_info[0].unit_name


def _choose_bands(ds, bands, path) -> tuple[int, ...]:
    if bands is not None:
        if len(bands) not in (1, 3):
            raise InputError(f"choose 1 or 3 bands with --bands, not {len(bands)}")
        return tuple(_band_index(ds, b, path) for b in bands)
    colour = [b for b in range(1, ds.count + 1) if ds.colorinterp[b - 1] != ColorInterp.alpha]
    if len(colour) == 1:
        return (colour[0],)
    red, green, blue = (_find_band(ds, name, colour) for name in ("red", "green", "blue"))
    if red is not None and green is not None and blue is not None:
        return (red, green, blue)
    if len(colour) in (3, 4):
        return tuple(colour[:3])
    raise InputError(
        f"{path} has {len(colour)} bands and none marked red, green, blue: "
        f"choose 1 or 3 with --bands, e.g. -b 3,2,1 (bands: {_band_list(ds)})"
    )


def _band_index(ds, band: int | str, path: str) -> int:
    """A 1-based band index from an index or a band's description or colour name."""
    if isinstance(band, str) and band.strip().isdigit():
        band = int(band)
    if isinstance(band, int):
        if not 1 <= band <= ds.count:
            raise InputError(f"{path} has {ds.count} band(s); band {band} does not exist")
        return band
    found = _find_band(ds, band, range(1, ds.count + 1))
    if found is None:
        raise InputError(f"{path} has no band named {band!r}; bands: {_band_list(ds)}")
    return found


def _find_band(ds, name: str, among) -> int | None:
    """The first band whose description, else colour interpretation, is ``name`` (any case)."""
    name = name.strip().lower()
    for label in (
        lambda b: (ds.descriptions[b - 1] or "").strip().lower(),
        lambda b: ds.colorinterp[b - 1].name,
    ):
        for b in among:
            if label(b) == name:
                return b
    return None


def _band_list(ds) -> str:
    return ", ".join(
        f"{b} {ds.descriptions[b - 1] or ds.colorinterp[b - 1].name}" for b in range(1, ds.count + 1)
    )


def _sample(ds, bands) -> np.ma.MaskedArray:
    """A cheap, scene-wide sample of the bands, masked where any band is invalid: (B, h, w).

    A decimated read where the scene is small or has overviews (GDAL then reads those); otherwise
    SAMPLE_WINDOWS² small windows spread evenly over the scene, so big scenes are never read whole,
    side by side as they lie in the scene (a coarse picture of it, with the scene's border as its own).
    """
    if max(ds.width, ds.height) <= STRETCH_SAMPLE or ds.overviews(bands[0]):
        factor = max(1.0, max(ds.width, ds.height) / STRETCH_SAMPLE)
        shape = (len(bands), max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
        return _masked(ds.read(list(bands), out_shape=shape, masked=True))
    w, h = min(STRETCH_SAMPLE // SAMPLE_WINDOWS, ds.width), min(STRETCH_SAMPLE // SAMPLE_WINDOWS, ds.height)
    xs = np.linspace(0, ds.width - w, SAMPLE_WINDOWS).round().astype(int)
    ys = np.linspace(0, ds.height - h, SAMPLE_WINDOWS).round().astype(int)
    rows = [[_masked(ds.read(list(bands), window=Window(x, y, w, h), masked=True)) for x in xs] for y in ys]
    return np.ma.masked_array(
        np.concatenate([np.concatenate([r.data for r in row], axis=2) for row in rows], axis=1),
        np.concatenate([np.concatenate([r.mask for r in row], axis=2) for row in rows], axis=1),
    )


def _warn_fill(path: str, sample: np.ma.MaskedArray) -> None:
    """Warn (once per scene and value) when ``border_fill`` finds a value the scene should declare nodata."""
    found = border_fill(sample)
    if found is not None:
        value, share = found
        _warn_once(
            path, f"fill {value!r}",
            "%s: %.0f%% of the pixels are %g in a block at the border and no nodata value is declared; "
            "pass --nodata %g (a pipeline file's read: {nodata: %g}) if they are not data",
            path, 100 * share, value, value, value,
        )  # fmt: skip


def _warn_once(path: str, what: str, message: str, *args: object) -> None:
    """``log.warning(message, *args)`` the first time this process says ``what`` about the scene ``path``."""
    if (path, what) not in _warned:
        _warned.add((path, what))
        log.warning(message, *args)


def border_fill(sample: np.ma.MaskedArray) -> tuple[float, float] | None:
    """A value, the same in every band, whose areas that touch the sample's border hold at least
    FILL_SHARE of its valid pixels: (value, share), the largest such share; None when there is none.

    ``sample`` (B, h, w) is the scene's as ``open_scene`` reads it: decimated, or its windows in place.
    The candidates are the three values most frequent on the sample's border.
    """
    data, valid = sample.data, ~np.ma.getmaskarray(sample)[0]
    same = valid & (data == data[:1]).all(axis=0)
    border = np.ones(same.shape, bool)
    border[1:-1, 1:-1] = False
    values, counts = np.unique(data[0][border & same], return_counts=True)
    found, total = None, max(int(valid.sum()), 1)
    for value in values[np.argsort(counts)[::-1][:3]]:
        area = same & (data[0] == value)
        if area.sum() < FILL_SHARE * total:  # too few pixels of it anywhere
            continue
        from scipy import ndimage  # here: only for such a value (workers import this module, never this)

        labels, _ = ndimage.label(area)
        touching = np.unique(labels[border])
        share = np.isin(labels, touching[touching > 0]).sum() / total
        if share >= FILL_SHARE and (found is None or share > found[1]):
            found = (float(value), float(share))
    return found


def _valid_strip(ds, bands) -> np.ma.MaskedArray | None:
    """The first strip of about SCAN_PIXELS pixels with a valid pixel; None when there is none."""
    rows = max(1, SCAN_PIXELS // ds.width)
    for y in range(0, ds.height, rows):
        strip = _masked(
            ds.read(list(bands), window=Window(0, y, ds.width, min(rows, ds.height - y)), masked=True)
        )
        if not strip.mask.all():
            return strip
    return None


def _masked(data: np.ma.MaskedArray) -> np.ma.MaskedArray:
    """Bands masked together: a pixel is valid only where every band is valid and finite."""
    invalid = np.ma.getmaskarray(data).any(axis=0) | ~np.isfinite(data.data).all(axis=0)
    return np.ma.masked_array(data.data, np.repeat(invalid[None], len(data), axis=0))


def _stretch(sample: np.ma.MaskedArray, percentiles) -> tuple[tuple[float, float], ...]:
    """Per band, the ``percentiles`` of the sample's valid pixels: the range mapped to 0..255."""
    valid = ~np.ma.getmaskarray(sample)[0]
    limits = []
    for band in sample.data:
        low, high = np.percentile(band[valid].astype(np.float64), percentiles)
        limits.append((float(low), float(high) if high > low else float(low) + 1.0))
    return tuple(limits)


def joint_stretch(
    scenes: list[Scene], percentiles: tuple[float, float] = READ.percentiles, how: str = "matched"
) -> list[tuple[tuple[float, float], ...]]:
    """One stretch for scenes on one grid (dates of a place), from samples of the pixels valid in all.

    ``matched``: each scene's own ``percentiles`` over that shared area, so that a gain or an offset
    between the scenes cancels out; ``joint``: the percentiles of all the samples pooled, the same
    stretch for every scene, which then compares values as they are.
    """
    samples = []
    for scene in scenes:
        with reader(scene) as ds:
            samples.append(_sample(ds, scene.bands))
    shared = ~np.any([np.ma.getmaskarray(s)[0] for s in samples], axis=0)
    if not shared.any():
        raise InputError("the scenes share no valid pixel; there is nothing to compare")
    shared_only = [np.ma.masked_array(s.data, np.broadcast_to(~shared, s.shape)) for s in samples]
    if how == "joint":
        pooled = np.ma.concatenate(shared_only, axis=2)
        return [_stretch(pooled, percentiles)] * len(scenes)
    return [_stretch(s, percentiles) for s in shared_only]


def to_uint8(data: np.ndarray, stretch: tuple[tuple[float, float], ...] | None) -> np.ndarray:
    """Bands (B, H, W) to uint8 with the scene's stretch (8-bit data pass through)."""
    if stretch is None:
        return data.astype(np.uint8, copy=False)
    low = np.array([s[0] for s in stretch], np.float64)[:, None, None]
    high = np.array([s[1] for s in stretch], np.float64)[:, None, None]
    scaled = (np.nan_to_num(data.astype(np.float64)) - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


_GEOD = Geod(ellps="WGS84")


def planar(crs: ProjCRS) -> bool:
    """Whether planar areas in ``crs`` are true areas: a projected CRS, not a Mercator one."""
    operation = crs.coordinate_operation if crs.is_projected else None  # a projected CRS's conversion
    method = (operation.method_name or "").lower() if operation is not None else ""
    mercator = method.startswith("mercator") or "pseudo mercator" in method  # not Transverse Mercator
    return bool(crs.is_projected) and not mercator


def pixel_area_m2(scene: Scene) -> float | None:
    """The mean area of one pixel of the scene's grid, in m² (geodesic where ``area_m2`` is); None without
    a CRS."""
    if scene.crs is None:
        return None
    total = area_m2(np.array([shapely.box(*scene.bounds)]), scene.crs)[0]
    return float(total) / (scene.width * scene.height)


def area_m2(geometries: np.ndarray, crs: CRS | None) -> np.ndarray:
    """Areas in square metres: planar in projected CRSs, geodesic in geographic and Mercator ones.

    Without a CRS (pixel coordinates) the area is not defined and NaN is returned.
    """
    if crs is None:
        return np.full(len(geometries), np.nan)
    proj = ProjCRS.from_user_input(crs.to_wkt())
    if planar(proj):
        return shapely.area(geometries) * proj.axis_info[0].unit_conversion_factor ** 2
    to_lonlat = Transformer.from_crs(proj, proj.geodetic_crs, always_xy=True)
    lonlat = shapely.transform(
        geometries, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))
    )
    return np.array([abs(_GEOD.geometry_area_perimeter(g)[0]) for g in lonlat])


def distance_m(a: np.ndarray, b: np.ndarray, crs: CRS | None) -> np.ndarray:
    """Distances between points in metres: planar in projected CRSs, geodesic in geographic and Mercator
    ones (the units of ``area_m2``); NaN without a CRS."""
    if crs is None:
        return np.full(len(a), np.nan)
    proj = ProjCRS.from_user_input(crs.to_wkt())
    ax, ay, bx, by = shapely.get_x(a), shapely.get_y(a), shapely.get_x(b), shapely.get_y(b)
    if planar(proj):
        return np.hypot(bx - ax, by - ay) * proj.axis_info[0].unit_conversion_factor
    to_lonlat = Transformer.from_crs(proj, proj.geodetic_crs, always_xy=True)
    (lon_a, lat_a), (lon_b, lat_b) = to_lonlat.transform(ax, ay), to_lonlat.transform(bx, by)
    return np.asarray(_GEOD.inv(lon_a, lat_a, lon_b, lat_b)[2], np.float64)
