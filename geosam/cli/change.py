"""``geosam change`` (two dates compared) and ``geosam track`` (objects followed through a series)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geosam.cli.options import (
    automatic_options,
    check_tiling,
    class_options,
    cluster_options,
    execution_options,
    filter_options,
    group_options,
    model_options,
    model_spec,
    option,
    options,
    outline_options,
    output_options,
    runtime_options,
    tiling_options,
)
from geosam.cli.progress import Tiles
from geosam.settings import Change, Execution, Read

MODEL_KEYS = (
    "model",
    "device",
    "checkpoint",
    "architecture",
    "offline",
    "backend",
    "precision",
)  # model_spec's order
AUTOMATIC_KEYS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_thresh")

shared_options = options(
    model_options,
    group_options(Read, "bands", "nodata", "percentiles", "resolution"),
    tiling_options,
    automatic_options,
    filter_options,
    class_options,
    outline_options,
    cluster_options,
    runtime_options,
    execution_options,
    group_options(Change),
    click.option(
        "--work-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder keeping each date's finished tiles, so that a rerun resumes [default: OUT.geosam-work "
        "beside the output].",
    ),
    click.option("--keep-work", is_flag=True, help="Keep the work folder after the output is written."),
    option(Execution, "retries"),
    click.option(
        "--report",
        "report_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Run report (JSON) [default: OUT.report.json beside the output].",
    ),
)


@click.command("change")
@click.argument("before", type=click.Path(dir_okay=False, path_type=str))
@click.argument("after", type=click.Path(dir_okay=False, path_type=str))
@output_options(
    "Output GeoPackage (.gpkg): layers changes, before, after and changed_area.",
    overwrite="Replace the outputs if they exist.",
)
@shared_options
@click.pass_context
def change_command(
    ctx: click.Context, before: str, after: str, output: Path, overwrite: bool, **params: Any
) -> None:
    """Objects of two dates of a place, matched: same, changed, appeared, disappeared, split, merged.

    Both scenes are segmented as `geosam segment` does, with the same model and settings, on the
    BEFORE scene's grid over the area both cover (AFTER is warped onto it where its grid or CRS
    differ) and with one stretch for both. Every date's finished tiles are kept in a work folder:
    the same command again resumes. A run report (JSON) is written beside the output.
    """
    from geosam.timeseries import change, write_change

    def run(work_dir: Path, on_date: Callable, settings: dict[str, Any]) -> Any:
        result = change(before, after, work_dir=work_dir, on_date=on_date, **settings)
        return result.report, lambda: write_change(result, output, overwrite)

    _run(ctx, output, overwrite, params, run)


@click.command("track")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@output_options(
    "Output GeoPackage (.gpkg): layer tracks, one feature per object and date.",
    overwrite="Replace the outputs if they exist.",
)
@click.option(
    "--dates",
    metavar="DATE,...",
    help="The scenes' dates (YYYY-MM-DD or YYYY), in the order given [default: the dates in their names "
    "(YYYYMMDD, YYYY-MM-DD, YYYY), else their TIFF date tags].",
)
@shared_options
@click.pass_context
def track_command(ctx: click.Context, scenes: tuple[str, ...], output: Path, overwrite: bool, dates: str | None,
                  **params: Any) -> None:  # fmt: skip
    """Objects of a time series (two or more SCENES of a place) as tracks through time.

    The scenes are ordered by date and segmented as `geosam change` does, each date matched with
    the next: every object gets a track id, kept while it stays the same or changes; births,
    deaths, splits and merges start and end tracks. One layer holds every date's objects with a
    date field, styled so that QGIS's temporal controller plays it.
    """
    from geosam.timeseries import track, write_tracks

    given = [d.strip() for d in dates.split(",")] if dates else None

    def run(work_dir: Path, on_date: Callable, settings: dict[str, Any]) -> Any:
        frame, report = track(scenes, dates=given, work_dir=work_dir, on_date=on_date, **settings)
        return report, lambda: write_tracks(frame, output, overwrite)

    _run(ctx, output, overwrite, params, run)


def _run(ctx: click.Context, output: Path, overwrite: bool, params: dict[str, Any], run: Callable) -> None:
    """Check the outputs, hold them, run, write; the work folder removed unless kept; a summary."""
    from geosam import output as outputs
    from geosam.resume import WorkDir, default_work_dir, output_lock

    started = time.monotonic()
    check_tiling(params["tile_size"], params["overlap"])
    outputs.check_output(output, overwrite, formats={".gpkg": "GPKG"})
    work_dir = params.pop("work_dir") or default_work_dir(output)
    keep_work = params.pop("keep_work")
    report_path = params.pop("report_path") or output.with_name(f"{output.stem}.report.json")
    model = [params.pop(k) for k in MODEL_KEYS]
    automatic = {k: params.pop(k) for k in AUTOMATIC_KEYS}
    automatic["stability_score_thresh"] = automatic.pop("stability_thresh")
    spec = model_spec(*model, **automatic)

    with contextlib.ExitStack() as bars:

        def on_date(i: int, path: str) -> tuple[Callable[[int], None], Callable[[Any], None]]:
            bars.close()  # the previous date's bar
            if not ctx.obj["quiet"]:
                click.echo(f"date {i + 1}: segmenting {path}", err=True)
            bar = bars.enter_context(Tiles(ctx, f"date {i + 1}"))
            return bar.start, lambda result: bar.update(1)

        with output_lock(output), WorkDir(work_dir, "").lock():
            report, write = run(work_dir, on_date, {"model": spec, **params})
            bars.close()
            report.output = str(output)
            write()
            if not keep_work:
                WorkDir(work_dir, "").remove()
            report.wall_s = round(time.monotonic() - started, 3)
            report.write(report_path)
    if not ctx.obj["quiet"]:
        click.echo(report.summary(), err=True)
        click.echo(f"written to {output}; report: {report_path}", err=True)
