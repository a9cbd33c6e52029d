"""Work folder benchmark: what safe, durable tile files cost.

1. Encoding and decoding one tile's pieces: geosam.tilefile (JSON, WKB, raw arrays) against pickle
   (what format 2 used), per tile, with the file sizes.
2. Writing tile files: ``atomic.write_bytes`` (fsync of the file before the rename, of the folder
   after) against the same write without the fsyncs, per file, in ``--dir`` (default: a temporary
   folder; point it at the file system your work folders live on).

The pieces are a real run's: the reference segmenter on a seeded 700×600 scene, 128-pixel tiles.

Run from the repository root:

    python benchmarks/workdir.py [--files 300] [--dir DIR] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import tempfile
import time
from pathlib import Path

from geosam import atomic, tilefile
from geosam.resume import WorkDir
from geosam.scene_run import segment_scene
from geosam.seams import Piece
from geosam.testing import ReferenceModel, make_scene
from geosam.tiling import TileGrid


def tiles(folder: Path) -> list[list[Piece]]:
    """Every tile's pieces from a real run's work folder."""
    scene = make_scene(folder, seed=3, width=700, height=600, max_size=96, objects=80)
    work = folder / "work"
    _, report = segment_scene(
        scene.path,
        model=ReferenceModel(str(scene.labels)),
        tile_size=128,
        overlap=16,
        workers=0,
        work_dir=work,
    )
    stored = WorkDir(work, report.run_key or "")
    grid = TileGrid(700, 600, 128, 16)
    return [stored.load(tile)[0] for tile in grid]  # type: ignore[index]


def per_call_ms(fn, items: list, repeat: int = 5) -> float:
    """Median over ``repeat`` passes of the mean milliseconds per item."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        times.append((time.perf_counter() - start) * 1000 / len(items))
    return statistics.median(times)


def plain_write(path: Path, data: bytes) -> None:
    """``atomic.write_bytes`` without its fsyncs: what format 2 did."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def codec_rows(pieces: list[list[Piece]], label: str) -> dict[str, float]:
    """Encoding and decoding times and sizes of these tiles' files, tile files against pickle."""
    meta = {"key": "k", "row": 0, "col": 0, "segmented": True, "data_pixels": 0, "funnel": None}
    files = [tilefile.dumps(meta, p, Piece) for p in pieces]
    pickles = [pickle.dumps((3, "k", 0, 0, p, True, 0), protocol=pickle.HIGHEST_PROTOCOL) for p in pieces]
    return {
        f"tilefile encode ms/tile{label}": per_call_ms(lambda p: tilefile.dumps(meta, p, Piece), pieces),
        f"pickle encode ms/tile{label}": per_call_ms(
            lambda p: pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL), pieces
        ),
        f"tilefile decode ms/tile{label}": per_call_ms(lambda b: tilefile.loads(b, Piece), files),
        f"pickle decode ms/tile{label}": per_call_ms(pickle.loads, pickles),
        f"tilefile bytes/tile{label}": statistics.mean(len(b) for b in files),
        f"pickle bytes/tile{label}": statistics.mean(len(b) for b in pickles),
        f"pieces/tile{label}": statistics.mean(len(p) for p in pieces),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="tile files written per row")
    parser.add_argument("--dir", type=Path, help="folder to write tile files in (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        pieces = tiles(Path(scratch))
        every = [p for tile in pieces for p in tile]
        rows: dict[str, float] = {}
        # the run's tiles as they are, and their pieces 50 to a tile (a real model's count on aerial imagery)
        for label, group in (
            ("", pieces),
            (" (50 pieces)", [every[i : i + 50] for i in range(0, len(every) - 49, 50)]),
        ):
            rows.update(codec_rows(group, label))
        folder = Path(tempfile.mkdtemp(dir=args.dir, prefix="geosam-fsync-"))
        try:
            meta = {"key": "k", "row": 0, "col": 0, "segmented": True, "data_pixels": 0, "funnel": None}
            files = [tilefile.dumps(meta, p, Piece) for p in pieces]
            data = [files[i % len(files)] for i in range(args.files)]
            for name, write in (("write, no fsync", plain_write), ("write + fsync", atomic.write_bytes)):
                start = time.perf_counter()
                for i, blob in enumerate(data):
                    write(folder / f"{i}.tile", blob)
                rows[f"{name} ms/file"] = (time.perf_counter() - start) * 1000 / len(data)
        finally:
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    print(
        f"work folder: {len(pieces)} tiles of a real run; {args.files} files written in {args.dir or 'a temp dir'}"
    )
    for name, value in rows.items():
        print(f"{name:>28} {value:10.3f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": platform.platform(), "dir": str(args.dir), "files": args.files, **rows}, indent=1
            )
        )


if __name__ == "__main__":
    main()
