"""``geosam segment``: every object of a scene, through the Dask cluster, resumable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from geosam.cli.options import (
    automatic_options,
    check_tiling,
    cluster_options,
    execution_options,
    filter_options,
    model_options,
    model_spec,
    option,
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
    from geosam import output as outputs
    from geosam.errors import TileError
    from geosam.georef import open_scene
    from geosam.resume import WorkDir, default_work_dir
    from geosam.scene_run import segment_scene
    from geosam.tiling import TileGrid

    started = time.monotonic()
    check_tiling(tile_size, overlap)
    outputs.check_output(output, overwrite)
    if preview is not None:
        from geosam.preview import check_preview

        check_preview(preview, overwrite)
    if labels is not None:
        outputs.check_output(labels, overwrite, formats={".tif": "COG", ".tiff": "COG"})
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
    total = len(TileGrid(plan.width, plan.height, tile_size, overlap))
    with Tiles(ctx, total, "segment") as bar:
        try:
            frame, report = segment_scene(
                scene, model=spec, tile_size=tile_size, overlap=overlap, on_tile=lambda result: bar.update(1),
                work_dir=work_dir, allow_partial=allow_partial, parameters=dict(ctx.params), **reads, **options,
            )  # fmt: skip
        except TileError as exc:
            if exc.report is not None:
                exc.report.write(report_path)
            raise type(exc)(f"{exc}; report: {report_path}", exc.report) from None
    report.output = str(output)
    report.finish(time.monotonic() - started)
    outputs.write(frame, output, overwrite=overwrite, report=report)
    written = [str(output)]
    if preview is not None:
        from geosam.preview import write_preview

        written.append(str(write_preview(frame, plan, preview, size=preview_size, overwrite=overwrite)))
    if labels is not None:
        from geosam.labels import write_labels

        written.append(str(write_labels(frame, plan, labels, overwrite=overwrite)))
    if not keep_work:
        WorkDir(work_dir, report.run_key or "").remove()
        report.work_dir = None
    report.write(report_path)
    if not ctx.obj["quiet"]:
        click.echo(report.summary(), err=True)
        if report.failed:
            click.echo(f"{len(report.failed)} tiles failed and were left out (--allow-partial)", err=True)
        click.echo(f"{len(frame)} objects written to {', '.join(written)}", err=True)
