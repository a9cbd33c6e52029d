"""``geosam evaluate``: predicted polygons scored against reference ones, SpaceNet's way."""

from __future__ import annotations

from pathlib import Path

import click

from geosam.cli.options import group_options
from geosam.settings import Evaluation

_PATH = click.Path(dir_okay=False, path_type=str)


@click.command("evaluate")
@click.argument("pred", type=_PATH)
@click.argument("ref", type=_PATH)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report (JSON) here, and the outcomes beside it as OUT.gpkg unless --outcomes names a file.",
)  # fmt: skip
@click.option(
    "--outcomes", type=click.Path(dir_okay=False, path_type=Path),
    help="Write every true positive, false positive and miss here (.gpkg: styled for QGIS; .geojson, "
    ".parquet, .shp) [default: beside the report].",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace the report and outcomes if they exist.")
@group_options(Evaluation)
@click.option(
    "--aoi", type=_PATH,
    help="Evaluate only within these polygons (a vector file) [default: where the bounding boxes of PRED "
    "and REF overlap].",
)  # fmt: skip
@click.pass_context
def command(
    ctx: click.Context, pred: str, ref: str, output: Path | None, outcomes: Path | None, overwrite: bool,
    iou: float, class_field: str | None, size_bins: tuple[float, ...], aoi: str | None,
) -> None:  # fmt: skip
    """Score the polygons of PRED against those of REF: precision, recall, F1, mean IoU.

    A prediction and a reference object match one to one when their IoU is at least --iou (SpaceNet's
    building metric), in descending IoU. Scores are given overall, by size bin and by class; PRED is
    reprojected to REF's CRS, and both are clipped to where they overlap or to --aoi. The table goes
    to stdout; -o writes the report as JSON and the outcomes as a GeoPackage for QGIS. PRED, REF and
    --aoi are vector files, or one layer of a file as 'FILE|layername=NAME' (quoted in the shell).
    """
    from geosam import output as outputs
    from geosam.evaluation import evaluate, vector_source

    if output is not None:
        outcomes = outcomes or output.with_suffix(".gpkg")
    inputs = {
        Path(vector_source(path)[0]).resolve(): name
        for path, name in ((pred, "PRED"), (ref, "REF"), (aoi, "--aoi"))
        if path
    }
    for path in (output, outcomes):  # before "exists: --overwrite", which would not help here
        if path is not None and path.resolve() in inputs:
            raise click.UsageError(
                f"{path} is the input {inputs[path.resolve()]}; write the results to another file"
            )
    if output is not None:
        outputs.check_output(output, overwrite, formats={".json": "JSON"})
    if outcomes is not None:
        outputs.check_output(outcomes, overwrite)
    result = evaluate(pred, ref, iou=iou, class_field=class_field, aoi=aoi, size_bins=size_bins)
    click.echo(result.summary())
    written = []
    if outcomes is not None:
        result.write_outcomes(outcomes, overwrite=overwrite)
        written.append(str(outcomes))
    if output is not None:
        result.write_report(output, overwrite=overwrite)
        written.append(str(output))
    if written and not ctx.obj["quiet"]:
        click.echo(f"written to {', '.join(written)}", err=True)
