"""`geosam segment` as a new user runs it, on single tiles of different content: objects, masks, time.

    python benchmarks/content.py                          # six tiles of ../shared/data
    python benchmarks/content.py --tiles drone water --recall --json content.json
    python benchmarks/content.py --tiles drone naip --repeats 3   # in turn, median seconds

Each tile is written as a GeoTIFF (georeferencing, nodata and alpha kept) to a temporary folder and
segmented by a fresh `geosam segment TILE.tif -o TILE.gpkg --tile-size 1024`. Per tile, from the run
report beside the output:
  objects       objects written
  masks funnel  prompts, masks, confident, stable, distinct (report["masks"])
  model s       the run's seconds in the model; wall s: the run's own; command s: the whole command,
                timed around the process; fixed s = command s - model s, what the user waits for
                besides the model (start-up, imports, model load, reading, writing)
With --recall, geosam's automatic mode against the plain 32×32 grid (benchmarks/automatic.py) on the
tile as the command reads it: the share of the grid's masks (grid) that geosam's match at IoU >= 0.8.
With --repeats N the tiles run in turn N times and each time column is the tile's median (a shared
machine's load moves between runs; compare tiles by the ratio of their medians).
Not part of the test run; times only compare within one run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from automatic import DATA, plain_grid, recall, tile_source
from rasterio.windows import Window
from startup import timed

SIZE = 1024  # --tile-size: every tile here is one tile of the command's grid
FUNNEL = ["prompts", "masks", "confident", "stable", "distinct"]
SECONDS = ["model_s", "wall_s", "command_s", "fixed_s"]
Source = Callable[[Path], tuple[Path, Window | None]]  # folder -> the file holding a tile, its window


def write(path: Path, data: np.ndarray, src: rasterio.DatasetReader, transform: Affine) -> Path:
    """``data`` (bands, H, W) as a GeoTIFF with ``src``'s CRS, dtype, nodata and band meanings (alpha)."""
    profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
    profile.update(width=data.shape[2], height=data.shape[1], transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.colorinterp = src.colorinterp
        dst.write(data)
    return path


def drone(folder: Path) -> tuple[Path, Window]:
    """The drone orthophoto mirrored into a 2×2 mosaic (alpha kept) and its centre SIZE² window."""
    with rasterio.open(DATA / "pix4d_alpha_nodata.tif") as src:
        data = src.read()
        data = np.concatenate([data, data[:, :, ::-1]], 2)
        data = np.concatenate([data, data[:, ::-1]], 1)
        path = write(folder / "drone-mosaic.tif", data, src, src.transform)
    _, h, w = data.shape
    return path, Window((w - SIZE) // 2, (h - SIZE) // 2, SIZE, SIZE)


TILES: dict[str, tuple[Source, str]] = {  # name: (its source, what it is)
    "drone": (drone, "dense fields: pix4d drone orthophoto 0.35 m, mirrored 2×2, centre 1024², alpha nodata"),
    "pan1": (lambda _: (DATA / "pan1.tif", None), "urban: Rotterdam, panchromatic 0.5 m uint16, 600²"),
    "pan3": (lambda _: (DATA / "pan3.tif", None), "urban: Rotterdam halls and tanks, 0.5 m, 600², top black"),
    "naip": (lambda folder: tile_source("naip", folder), "fields/prairie: NAIP 5 m, a 1024² window of a mosaic"),
    "peru": (lambda _: (DATA / "landsat_peru" / "2020.tif", None),
             "forest/river: Landsat 2020, ~90 m, 697×377, bands 1-3 (SWIR1, NIR, red: the default)"),
    "water": (lambda _: (DATA / "RGB.byte.tif", Window(64, 416, 192, 192)),
              "water: open sea of the Landsat 300 m crop, 192² (row 416, col 64), a few small clouds"),
}  # fmt: skip


def make_tile(name: str, folder: Path) -> Path:
    """The named tile as a GeoTIFF of its own in ``folder``."""
    source, window = TILES[name][0](folder)
    with rasterio.open(source) as src:
        transform = src.transform if window is None else src.window_transform(window)
        return write(folder / f"{name}.tif", src.read(window=window), src, transform)


def segment(tile: Path) -> dict:
    """The command on ``tile``: objects, masks funnel and seconds."""
    out = tile.with_suffix(".gpkg")
    seconds, report = timed(
        ["segment", str(tile), "-o", str(out), "--overwrite", "--tile-size", str(SIZE)], out
    )
    with rasterio.open(tile) as ds:
        px = f"{ds.width}×{ds.height}"
    funnel = {key: report["masks"][key] for key in FUNNEL}
    return {"px": px, "objects": report["objects"], **funnel, "model_s": report["model_s"],
            "wall_s": report["wall_s"], "command_s": seconds, "fixed_s": seconds - report["model_s"]}  # fmt: skip


def automatic_recall(model, tile: Path) -> tuple[float, int]:
    """Recall of geosam's automatic mode against the plain grid on the pixels the command reads, and the
    plain grid's mask count."""
    import torch

    from geosam.georef import open_scene
    from geosam.models import AutomaticParams
    from geosam.models.automatic import generate
    from geosam.tiling import TileGrid, read_tile

    scene = open_scene(tile)
    image = read_tile(scene, TileGrid(scene.width, scene.height, size=SIZE).tile(0, 0), SIZE)
    embedding = model.embed(image.image)
    with torch.inference_mode():
        masks = generate(model, image.image, image.valid, AutomaticParams(), embedding)
    reference = plain_grid(model, embedding, image.valid)
    return recall(reference, masks.masks), len(reference)


def table(rows: list[dict]) -> None:
    """Print the rows."""
    print(f"{'tile':<6} {'px':>9} {'objects':>7} {'prompts':>7} {'masks':>6} {'confid.':>7} {'stable':>6} "
          f"{'distinct':>8} {'model s':>7} {'wall s':>6} {'command s':>9} {'fixed s':>7} {'recall':>6} {'grid':>4}")  # fmt: skip
    for r in rows:
        rec, grid = (f"{r['recall']:.3f}", r["grid_masks"]) if "recall" in r else ("-", "-")
        print(f"{r['tile']:<6} {r['px']:>9} {r['objects']:>7} {r['prompts']:>7} {r['masks']:>6} "
              f"{r['confident']:>7} {r['stable']:>6} {r['distinct']:>8} {r['model_s']:>7.1f} {r['wall_s']:>6.1f} "
              f"{r['command_s']:>9.1f} {r['fixed_s']:>7.1f} {rec:>6} {grid:>4}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", nargs="+", choices=list(TILES), default=list(TILES))
    parser.add_argument("--recall", action="store_true", help="also geosam's recall against the plain grid")
    parser.add_argument(
        "--repeats", type=int, default=1, help="run the tiles in turn this many times (medians)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    model = None
    if args.recall:
        from geosam.models import ModelSpec, load_model

        model = load_model(ModelSpec("mobile_sam", backend="torch"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tiles = {name: make_tile(name, Path(tmp)) for name in dict.fromkeys(args.tiles)}
        runs: dict[str, list[dict]] = {name: [] for name in tiles}
        for repeat in range(args.repeats):
            for name, tile in tiles.items():
                runs[name].append(segment(tile))
                print(f"done {name} ({repeat + 1} of {args.repeats})", file=sys.stderr)
        for name, tile in tiles.items():
            row = {"tile": name, **runs[name][0], "runs": [{k: r[k] for k in SECONDS} for r in runs[name]]}
            row.update({k: float(np.median([r[k] for r in runs[name]])) for k in SECONDS})
            if model is not None:
                row["recall"], row["grid_masks"] = automatic_recall(model, tile)
            rows.append(row)
    print(f"mobile_sam, --tile-size {SIZE}, {os.cpu_count()} cores, median of {args.repeats} run(s) a tile")
    table(rows)
    if args.json:
        meta = {"cores": os.cpu_count(), "tile_size": SIZE, "tiles": {t: TILES[t][1] for t in args.tiles}}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
