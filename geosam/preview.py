"""A quick look without GIS: the objects' outlines over a downsampled read of the scene, as a PNG."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS

from geosam import style
from geosam.errors import OutputError
from geosam.georef import Scene, reader, to_uint8
from geosam.settings import EXECUTION

PREVIEW_SIZE = EXECUTION.preview_size  # longest side of a preview, in pixels


@dataclass(frozen=True)
class Overview:
    """A decimated read of a scene as the model sees it, with its georeferencing."""

    image: np.ndarray  # uint8 (H, W, 3)
    valid: np.ndarray  # bool (H, W)
    transform: Affine  # of the overview's pixels, in the scene's CRS
    crs: CRS | None

    @property
    def rgba(self) -> np.ndarray:
        """The image with an alpha channel: nodata transparent."""
        return np.dstack([self.image, np.where(self.valid, 255, 0).astype(np.uint8)])

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top), as matplotlib's ``imshow(extent=...)`` wants it."""
        h, w = self.valid.shape
        (x0, y0), (x1, y1) = self.transform @ (0, 0), self.transform @ (w, h)
        return min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)


def overview(scene: Scene, size: int = PREVIEW_SIZE) -> Overview:
    """The scene at most ``size`` pixels on its longest side: one decimated read (overviews where the
    file has them), with the scene's band plan and stretch, never the whole scene at full resolution.

    Args:
        scene: The scene, from ``open_scene``.
        size: The longest side, in pixels; the scene is never enlarged (default: the settings'
            preview size).

    Returns:
        An ``Overview``: ``image`` (uint8 RGB, H × W × 3), ``valid`` (bool, H × W), ``transform`` (its
            pixels to the scene's CRS) and ``crs``; ``rgba`` (nodata transparent) and ``extent`` (for
            matplotlib's ``imshow``) are ready to plot.

    Raises:
        rasterio.errors.RasterioIOError: The raster can no longer be read.
    """
    factor = max(1.0, max(scene.width, scene.height) / size)
    width, height = max(1, round(scene.width / factor)), max(1, round(scene.height / factor))
    with reader(scene) as ds:
        bands = list(scene.bands)
        data = ds.read(bands, out_shape=(len(bands), height, width))
        valid = (ds.read_masks(bands, out_shape=(len(bands), height, width)) > 0).all(axis=0)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    rgb = to_uint8(data, scene.stretch)
    if len(rgb) == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    transform = scene.transform @ Affine.scale(scene.width / width, scene.height / height)
    return Overview(rgb.transpose(1, 2, 0).copy(), valid, transform, scene.crs)


def render(objects: gpd.GeoDataFrame, scene: Scene, size: int = PREVIEW_SIZE) -> np.ndarray:
    """RGBA (H, W, 4) uint8: the scene (nodata transparent) with outlines coloured by score."""
    Image, ImageDraw = _pillow()
    view = overview(scene, size)
    rgba = view.rgba
    picture = Image.fromarray(rgba, "RGBA")
    if len(objects):
        if objects.crs is not None and scene.crs is not None and objects.crs != scene.crs:
            objects = objects.to_crs(scene.crs)
        scores = objects["score"].to_numpy() if "score" in objects else np.ones(len(objects))
        colour = style.class_of(scores, style.classes(scores))
        inverse = ~view.transform
        matrix = np.array([[inverse.a, inverse.d], [inverse.b, inverse.e]])
        pixels = shapely.transform(
            objects.geometry.to_numpy(), lambda xy: xy @ matrix + (inverse.c, inverse.f)
        )
        width = max(2, round(max(rgba.shape[:2]) / 400))
        order = np.argsort(scores, kind="stable")  # the best objects drawn last, on top
        rings = [(i, ring) for i in order for ring in _rings(pixels[i])]
        draw = ImageDraw.Draw(picture)
        for _, ring in rings:  # a dark halo under every outline, so it reads over bright and dark ground
            draw.line(ring, fill=(0, 0, 0, 255), width=width + 2, joint="curve")
        for i, ring in rings:
            draw.line(ring, fill=(*style.PALETTE[colour[i]], 255), width=width, joint="curve")
    return np.asarray(picture)


def write_preview(
    objects: gpd.GeoDataFrame,
    scene: Scene,
    path: str | Path,
    size: int = PREVIEW_SIZE,
    overwrite: bool = False,
) -> Path:
    """Write ``render(objects, scene, size)`` as a PNG, atomically; return the path.

    The image is ``overview(scene, size)`` with the objects' outlines drawn over it, coloured by
    score (best drawn last, on top); objects in another CRS are reprojected to the scene's.

    Args:
        objects: The objects, e.g. what ``geosam.segment`` returns; without a ``score`` column all
            get one colour.
        scene: The scene they were found in, from ``open_scene``.
        path: The PNG file to write.
        size: The image's longest side, in pixels (default: the settings' preview size).
        overwrite: Replace an existing file at ``path``.

    Returns:
        ``path``, as a Path.

    Raises:
        OutputError: ``path`` does not end in .png, exists (without ``overwrite``), its folder does
            not exist or is not writable, or Pillow is not installed. Nothing is written then.
    """
    path = Path(path)
    check_preview(path, overwrite)
    Image, _ = _pillow()
    # 256 colours are plenty for a quick look and make the file about 3 times smaller
    picture = Image.fromarray(render(objects, scene, size), "RGBA").quantize(
        256, method=Image.Quantize.FASTOCTREE
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    os.close(fd)
    os.unlink(tmp)  # created anew, with the user's usual permissions rather than mkstemp's 0600
    try:
        picture.save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_preview(path: Path, overwrite: bool) -> None:
    """Fail before any work if the preview cannot be written."""
    from geosam.output import check_output

    check_output(Path(path), overwrite, formats={".png": "PNG"})
    _pillow()


def _rings(geometry: shapely.Geometry) -> list[list[tuple[float, float]]]:
    polygons = getattr(geometry, "geoms", [geometry])
    return [
        [tuple(xy) for xy in np.asarray(ring.coords)]
        for polygon in polygons
        if not polygon.is_empty
        for ring in (polygon.exterior, *polygon.interiors)
    ]


def _pillow():
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise OutputError(
            "--preview needs Pillow: pip install 'geosam[preview]' (or pip install Pillow)"
        ) from None
    return Image, ImageDraw
