"""The quick-look PNG: a decimated read of the scene with outlines where the objects are."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from PIL import Image

from geosam import style
from geosam.errors import OutputError
from geosam.georef import open_scene
from geosam.preview import overview, render, write_preview

from .rasters import ORIGIN, squares, write
from .test_outputs import objects


def test_overview_is_decimated_and_georeferenced(tmp_path):
    scene = open_scene(write(tmp_path / "s.tif", squares(600, 900)))
    view = overview(scene, size=300)
    assert view.image.shape == (200, 300, 3) and view.valid.all()
    assert view.transform == ORIGIN @ Affine.scale(3, 3)
    assert view.extent == pytest.approx((ORIGIN.c, ORIGIN.c + 1800, ORIGIN.f - 1200, ORIGIN.f))


def test_outlines_are_drawn_where_the_objects_are(tmp_path):
    scene = open_scene(write(tmp_path / "s.tif", np.full((1, 400, 400), 100, np.uint8)))
    x0, y0 = ORIGIN.c, ORIGIN.f
    frame = objects(1).set_geometry([shapely.box(x0 + 200, y0 - 600, x0 + 600, y0 - 200)], crs=scene.crs)
    picture = render(frame, scene, size=200)  # 4 m preview pixels: the box is x, y 50..150
    assert picture.shape == (200, 200, 4)
    ink = (picture[..., :3] != 100).any(axis=2)
    ys, xs = np.nonzero(ink)
    assert abs(xs.min() - 50) <= 3 and abs(xs.max() - 150) <= 3 and abs(ys.min() - 50) <= 3
    assert not ink[100, 100] and not ink[10, 10], "outlines only: inside and outside keep the image"
    scores = frame["score"].to_numpy()
    colour = style.PALETTE[style.class_of(scores, style.classes(scores))[0]]  # the QGIS style's colour
    assert (picture[52:148, 50, :3] == colour).all(axis=1).any()


def test_nodata_is_transparent(tmp_path):
    data = squares(200, 200)
    data[:, :, :100] = 0
    scene = open_scene(write(tmp_path / "s.tif", data, nodata=0))
    picture = render(objects(0), scene)
    assert (picture[:, :95, 3] == 0).all() and (picture[:, 105:, 3] == 255).all()


def test_write_preview_is_a_png_and_refuses_to_overwrite(tmp_path):
    scene = open_scene(write(tmp_path / "s.tif", squares(300, 300)))
    path = write_preview(objects(3), scene, tmp_path / "p.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (300, 300)
    with pytest.raises(OutputError, match="--overwrite"):
        write_preview(objects(3), scene, path)
    with pytest.raises(OutputError, match="unsupported output format"):
        write_preview(objects(3), scene, tmp_path / "p.jpg")
