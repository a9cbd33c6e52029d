"""What a scene's pixel size means for the model: the ground a tile covers, and advice where pixels are
far finer or coarser than SAM-family models segment typical objects at.

The model sees every tile resized to ``MODEL_INPUT`` px, so one pixel of its input covers
``ground pixel × tile size / MODEL_INPUT`` metres. Objects come out best at roughly 32 to 512 px of
that input (see docs/guide/parameters.md): under about 10 px SAM rarely finds them (its masks are
decoded at a quarter of the input's size), above half a tile they are cut by seams or dropped as the
whole tile. The objects analysts map most (tree crowns, buildings, fields, ponds: about 5 to 300 m)
then sit between FINEST_M and COARSEST_M per input pixel: at 0.1 m a 50 m building is already half a
tile, at 30 m a 300 m field is 10 px. Outside that range ``advice`` names a ``--resolution`` (and a
``--tile-size`` where one works) that brings the model's input back to its edge.
"""

from __future__ import annotations

import math

from geosam.georef import Scene, pixel_area_m2
from geosam.settings import MODEL, TILING, Tiling, field

MODEL_INPUT = 1024  # px: the longest side SAM-family encoders resize every tile to
FINEST_M = 0.1  # m per pixel of the model's input: finer, objects over 50 m fill half a tile
COARSEST_M = 30.0  # m per pixel of the model's input: coarser, objects under 300 m are under 10 px
SMALLEST_PX = 10  # objects smaller than this many pixels of the model's input are rarely found
SLACK = 1.05  # pixels this little past the range (a grid resampled to the advised size may be) pass
_SIZE = field(Tiling, "tile_size").metadata


def ground_pixel_m(scene: Scene) -> float | None:
    """The side, in metres on the ground, of the scene grid's mean pixel; None without a CRS."""
    area = pixel_area_m2(scene)
    return None if area is None else math.sqrt(area)


def footprint(scene: Scene, tile_size: int = TILING.tile_size) -> str | None:
    """How much ground one tile covers, e.g. ``512 m × 512 m``; None without a CRS."""
    pixel = ground_pixel_m(scene)
    return None if pixel is None else f"{length(pixel * tile_size)} × {length(pixel * tile_size)}"


def advice(
    scene: Scene, tile_size: int = TILING.tile_size, overlap: int = TILING.overlap,
    points_per_side: int = MODEL.points_per_side,
) -> str | None:  # fmt: skip
    """One line of advice when the model would see the scene's pixels far finer than FINEST_M or coarser
    than COARSEST_M, naming a ``--resolution`` (in the scene's CRS units) and, where a valid one exists,
    a ``--tile-size``; None when the pixel size suits typical objects or the scene has no CRS."""
    pixel = ground_pixel_m(scene)
    if pixel is None:
        return None
    seen = pixel * tile_size / MODEL_INPUT
    if FINEST_M / SLACK <= seen <= COARSEST_M * SLACK:
        return None
    fine = seen < FINEST_M
    target = FINEST_M if fine else COARSEST_M
    units = scene.pixel_size[0] / pixel  # CRS units per metre
    resolution = f"--resolution {target * MODEL_INPUT / tile_size * units:.3g}"
    rounding = math.ceil if fine else math.floor  # to a multiple of 64 px on the range's side
    tiles = (
        rounding(tile_size * target / seen / 64) * 64
    )  # a tile size that shows the model ``target`` pixels
    if _SIZE["ge"] <= tiles <= _SIZE["le"] and tiles > overlap:
        resolution += f" (or --tile-size {tiles})"
    if fine:
        return (
            f"pixels of {length(pixel)}: a {tile_size}-px tile covers only {length(pixel * tile_size)}, so "
            f"objects larger than about {length(pixel * tile_size / 2)} fill tiles and come out cut or not at "
            f"all; for such objects try {resolution}"
        )
    return (
        f"pixels of {length(pixel)}: objects smaller than about {length(seen * SMALLEST_PX)} are too small "
        f"for the model, and its prompt points lie {length(pixel * tile_size / points_per_side)} apart; for "
        f"smaller objects try {resolution}, which shows the model the scene enlarged (more tiles)"
    )


def length(value: float) -> str:
    """A length for people: 0.02 m, 7.3 m, 512 m, 2.9 km."""
    if value >= 10_000:
        return f"{value / 1000:.0f} km"
    if value >= 1000:
        return f"{value / 1000:.1f} km"
    return f"{value:.2g} m" if value < 10 else f"{value:.0f} m"
