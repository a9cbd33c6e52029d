"""`geosam change` on the Landsat series of the Ucayali river (../shared/data/landsat_peru): what it finds
and what matching costs beside segmenting.

    python benchmarks/change.py                              # 1985 against 2020
    python benchmarks/change.py --dates 2000 2010 --png change.png --json change.json

Runs `segment` on the first date alone, then `change` on the pair, both with the same settings: the
river crosses the whole scene, so its ground is kept (--keep-background), each date is a planar
partition (--flat: a reach is one object, not nested in the flood plain's) and the 90 m pixels are read
at 45 m (--resolution 0.0004°). Prints the time of each date against `segment` alone, the matching's
share, and the count per status; `--png` draws both dates' objects by status and the changed area.
Not part of the test run; times only compare within one run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SERIES = ROOT / ".." / "shared" / "data" / "landsat_peru"
SETTINGS = {"flat": True, "keep_background": True, "resolution": 0.0004}
LARGE = 0.2  # objects over this share of the scene are drawn as outlines, so that the rest shows


def measure(first: Path, second: Path, work: Path) -> tuple[dict, object]:
    """Seconds of `segment` on ``first`` alone (before and after `change`: the first pays for loading)
    and of `change` on the pair; the change result."""
    from geosam.scene_run import segment_scene
    from geosam.timeseries import change

    alone = []
    for step in ("segment", "change", "segment"):
        started = time.perf_counter()
        if step == "change":
            result = change(first, second, work_dir=work, **SETTINGS)
        else:
            segment_scene(first, **SETTINGS)
            alone.append(round(time.perf_counter() - started, 1))
    report = result.report
    row = {"segment_s": alone, "date_s": report.segment_s, "match_s": report.match_s,
           "match_share": report.match_s / sum(report.segment_s), "statuses": report.statuses,
           "objects": [len(result.before), len(result.after)],
           "changed_area_km2": report.changed_area_km2}  # fmt: skip
    return row, result


def draw(result, first: Path, second: Path, png: Path) -> None:
    """Both dates' objects filled by status over their images, and the ground gained and lost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    import shapely
    from matplotlib.patches import Patch
    from rasterio.plot import plotting_extent
    from shapely.geometry import box

    from geosam.style import AREA_KINDS, STATUSES

    colour = {name: tuple(c / 255 for c in rgb) for name, _, rgb in STATUSES + AREA_KINDS}
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = ((first, result.before, "status"), (second, result.after, "status"),
              (second, result.changed_area, "kind"))  # fmt: skip
    for ax, (path, frame, field) in zip(axes, panels, strict=True):
        with rasterio.open(path) as src:
            ax.imshow(src.read([1, 2, 3]).transpose(1, 2, 0) // 2, extent=plotting_extent(src))
        areas = shapely.area(frame.geometry.values)  # in the CRS's units: only compared
        large = areas > LARGE * box(*frame.total_bounds).area  # outlined only: the ground
        for value, group in frame[~large].groupby(field):
            group.plot(ax=ax, color=colour[value], alpha=0.6, edgecolor=colour[value], linewidth=0.6)
        for value, group in frame[large].groupby(field):
            group.boundary.plot(ax=ax, color=colour[value], linewidth=1.2)
        what = (
            "changed area: ground gained, lost" if field == "kind" else f"{path.stem}: {len(frame)} objects"
        )
        ax.set_title(what)
        ax.set_axis_off()
    handles = [Patch(color=colour[name], label=label) for name, label, _ in STATUSES]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(png, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dates", nargs=2, default=["1985", "2020"], metavar="YEAR")
    parser.add_argument("--png", type=Path, help="draw the result here")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    first, second = (SERIES / f"{year}.tif" for year in args.dates)
    with tempfile.TemporaryDirectory() as folder:
        row, result = measure(first, second, Path(folder) / "work")
    print(f"{first.stem} / {second.stem} with {SETTINGS}")
    print(f"segment {first.stem} alone: {row['segment_s']} s; in change: {row['date_s']} s; "
          f"matching {row['match_s']} s ({row['match_share']:.1%} of segmenting)")  # fmt: skip
    print(f"objects {row['objects']}; statuses {row['statuses']}; changed km² {row['changed_area_km2']}")
    if args.png:
        draw(result, first, second, args.png)
    if args.json:
        args.json.write_text(json.dumps({"dates": args.dates, "settings": SETTINGS, **row}, indent=2))


if __name__ == "__main__":
    main()
