from __future__ import annotations

import numpy as np
import shapely
from affine import Affine

from geosam.vectorize import mask_to_geometry, tidy, to_map


def test_mask_outline_is_pixel_exact_with_holes():
    mask = np.zeros((40, 50), bool)
    mask[5:25, 10:30] = True
    mask[10:15, 15:20] = False  # a hole
    mask[30:35, 40:45] = True  # a second part
    geometry = mask_to_geometry(mask, (100, 200))
    assert geometry.geom_type == "MultiPolygon" and geometry.is_valid
    assert geometry.area == mask.sum()
    big = max(geometry.geoms, key=lambda g: g.area)
    assert len(big.interiors) == 1
    assert big.bounds == (110.0, 205.0, 130.0, 225.0)


def test_empty_mask_gives_empty_geometry():
    assert mask_to_geometry(np.zeros((8, 8), bool), (0, 0)).is_empty


def test_to_map_applies_the_affine_transform():
    transform = Affine(0.5, 0, 300000.0, 0, -0.5, 5000000.0)
    square = shapely.box(10, 20, 30, 40)
    (mapped,) = to_map(np.array([square]), transform)
    assert mapped.bounds == (300005.0, 4999980.0, 300015.0, 4999990.0)
    assert mapped.area == square.area * 0.25


def test_tidy_simplifies_and_keeps_validity():
    mask = np.zeros((64, 64), bool)
    yy, xx = np.mgrid[:64, :64]
    mask[(yy - 32) ** 2 + (xx - 32) ** 2 < 400] = True
    exact = mask_to_geometry(mask, (0, 0))
    (simple,) = tidy(np.array([exact]), 1.0)
    assert simple.is_valid
    assert len(shapely.get_coordinates(simple)) < len(shapely.get_coordinates(exact))
    assert abs(simple.area - exact.area) / exact.area < 0.05
