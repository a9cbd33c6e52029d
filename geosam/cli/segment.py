"""``geosam segment``: every object of a scene, through the Dask cluster, resumable."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import click

from geosam.cli.options import (
    automatic_options,
    check_keep_raw,
    check_tiling,
    class_options,
    cluster_options,
    execution_options,
    filter_options,
    model_options,
    model_spec,
    option,
    outline_options,
    output_options,
    read_options,
    runtime_options,
    scene_argument,
    tiling_options,
)
from geosam.cli.progress import Tiles
from geosam.settings import Execution


@click.command("segment")
@scene_argument
@output_options(
    "Output file, format by extension: .gpkg (GeoPackage, styled for QGIS), .geojson (WGS84), "
    ".parquet (GeoParquet), .shp (Shapefile).",
    overwrite="Replace the outputs if they exist.",
)
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a quick-look PNG: outlines coloured by score over the downsampled scene.",
)
@option(Execution, "preview_size")
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write object ids as a label raster on the scene's grid (Cloud-Optimized GeoTIFF, .tif).",
)
@model_options
@read_options
@tiling_options
@automatic_options
@filter_options
@class_options
@outline_options
@cluster_options
@runtime_options
@execution_options
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder keeping finished tiles, so that a rerun resumes [default: OUT.geosam-work beside the output].",
)
@click.option("--keep-work", is_flag=True, help="Keep the work folder after the output is written.")
@option(Execution, "retries")
@click.option(
    "--allow-partial", is_flag=True, help="Write the output even if some tiles failed (they are listed)."
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run report (JSON) [default: OUT.report.json beside the output].",
)
@click.pass_context
def command(ctx: click.Context, scene: str, output: Path, overwrite: bool, preview: Path | None,
            preview_size: int, labels: Path | None, model: str, checkpoint: Path | None, architecture: str | None,
            offline: bool, tile_size: int, overlap: int, points_per_side: int, points_per_batch: int, pred_iou_thresh: float,
            stability_thresh: float, device: str, backend: str | None, precision: str, work_dir: Path | None,
            keep_work: bool, allow_partial: bool, report_path: Path | None, **options: Any) -> None:  # fmt: skip
    """Segment every object in SCENE and write them as polygons (GeoPackage, GeoJSON, GeoParquet, .shp).

    Finished tiles are kept in a work folder: if the run is interrupted, the same command again
    segments only the tiles not finished yet. A run report (JSON) is written beside the output.
    """
    from geosam.errors import TileError
    from geosam.georef import open_scene
    from geosam.resume import WorkDir, default_work_dir, output_lock
    from geosam.scene_run import segmented

    started = time.monotonic()
    check_tiling(tile_size, overlap)
    _check_outputs(output, overwrite, preview, labels, bool(options.get("examples")))
    check_keep_raw(output, options["keep_raw"])
    work_dir = work_dir or default_work_dir(output)
    report_path = report_path or output.with_name(f"{output.stem}.report.json")
    spec = model_spec(
        model, device, checkpoint, architecture, offline, backend, precision, points_per_side=points_per_side,
        points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_thresh,
    )  # fmt: skip
    reads = {
        k: options.pop(k)
        for k in ("bands", "nodata", "percentiles", "stretch_8bit", "resolution", "pixel_coordinates")
    }
    plan = open_scene(scene, **reads)
    # held until the output is written: a second run on this output or work folder is refused
    with output_lock(output), WorkDir(work_dir, "").lock(), contextlib.ExitStack() as stack:
        with Tiles(ctx, "learning") as learning, Tiles(ctx, "segment") as bar:
            try:
                result = stack.enter_context(segmented(
                    scene, model=spec, tile_size=tile_size, overlap=overlap, on_start=bar.start,
                    on_tile=lambda result: bar.update(1), on_learn=learning.step, work_dir=work_dir,
                    allow_partial=allow_partial, parameters=dict(ctx.params), **reads, **options,
                ))  # fmt: skip
            except TileError as exc:
                if exc.report is not None:
                    exc.report.write(report_path)
                raise type(exc)(f"{exc}; report: {report_path}", exc.report) from None
        report = result.report
        report.output = str(output)
        report.class_model = _class_model_file(output, options)
        report.finish(time.monotonic() - started)
        written = _write(result, output, overwrite, (preview, preview_size, labels), plan, work_dir)
        if options.get("examples") and result.classes is not None:  # learnt here: kept for other scenes
            written.append(str(result.classes.save(class_model_path(output))))
        stack.close()  # the run's object store goes before its work folder
        if not keep_work:
            WorkDir(work_dir, report.run_key or "").remove()
            report.work_dir = None
        report.write(report_path)
    if not ctx.obj["quiet"]:
        click.echo(report.summary(), err=True)
        if report.failed:
            click.echo(f"{len(report.failed)} tiles failed and were left out (--allow-partial)", err=True)
        click.echo(f"{report.objects} objects written to {', '.join(written)}", err=True)


def _write(
    result: Any, output: Path, overwrite: bool, extras: tuple[Path | None, int, Path | None], plan: Any,
    work_dir: Path,
) -> list[str]:  # fmt: skip
    """Write the output a batch at a time, then the extras (``extras``: preview path, its size, labels
    path), which need every object at once; the paths written."""
    from geosam import output as outputs
    from geosam.errors import OutputError

    preview, preview_size, labels = extras
    try:
        outputs.write(result.layer(), output, overwrite=overwrite, report=result.report)
    except OutputError as exc:
        raise OutputError(f"{exc}; finished tiles are kept in {work_dir}") from None
    written = [str(output)]
    frame = result.frame() if preview is not None or labels is not None else None
    if preview is not None:
        from geosam.preview import write_preview

        written.append(str(write_preview(frame, plan, preview, size=preview_size, overwrite=overwrite)))
    if labels is not None:
        from geosam.labels import write_labels

        written.append(str(write_labels(frame, plan, labels, overwrite=overwrite)))
    return written


def _check_outputs(
    output: Path, overwrite: bool, preview: Path | None, labels: Path | None, learn: bool
) -> None:
    """Fail before any work where an output cannot be written (``learn``: the class model file too)."""
    from geosam import output as outputs

    outputs.check_output(output, overwrite)
    if learn:
        outputs.check_output(class_model_path(output), overwrite, formats={".json": "JSON"})
    if preview is not None:
        from geosam.preview import check_preview

        check_preview(preview, overwrite)
    if labels is not None:
        outputs.check_output(labels, overwrite, formats={".tif": "COG", ".tiff": "COG"})


def _class_model_file(output: Path, options: dict[str, Any]) -> str | None:
    """The run's class model file: learnt from --examples (written beside the output), or --class-model."""
    if options.get("examples"):
        return str(class_model_path(output))
    return str(options["class_model"]) if options.get("class_model") else None


def class_model_path(output: Path) -> Path:
    """Where a run with --examples keeps its class model: OUT.classes.json."""
    return output.with_name(f"{output.stem}.classes.json")
