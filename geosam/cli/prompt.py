"""``geosam prompt``: the objects at point and box prompts, in this process (no Dask)."""

from __future__ import annotations

from pathlib import Path

import click

from geosam.cli.options import (
    check_keep_raw,
    model_options,
    model_spec,
    option,
    outline_options,
    output_options,
    prompt_file_options,
    read_options,
    runtime_options,
    scene_argument,
)
from geosam.settings import Prompts


def _crs_option(ctx, param, value: str | None):
    if value is None:
        return None
    from geosam.prompts import PromptError, parse_crs

    try:
        return parse_crs(value)
    except PromptError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("prompt")
@scene_argument
@output_options("Output GeoPackage (.gpkg).", overwrite="Replace the output if it exists.")
@click.option(
    "--prompts",
    "prompt_file",
    type=click.Path(dir_okay=False, path_type=str),
    help="Vector file of prompts: points (positive/negative) and polygons (boxes), any CRS.",
)
@prompt_file_options
@click.option(
    "--point",
    "points",
    multiple=True,
    metavar="X,Y[,ID]",
    help="Positive point; repeat. Points with the same ID are one object.",
)
@click.option(
    "--negative-point",
    "negative_points",
    multiple=True,
    metavar="X,Y[,ID]",
    help="Negative point (outside the object) of object ID; repeat.",
)
@click.option(
    "--box",
    "boxes",
    multiple=True,
    metavar="XMIN,YMIN,XMAX,YMAX[,ID]",
    help="Box around one object; repeat. With an ID it combines with that object's points.",
)
@click.option(
    "--prompt-crs",
    callback=_crs_option,
    metavar="CRS",
    help="CRS of --point/--box coordinates, e.g. EPSG:4326 (X=longitude) [default: the scene's].",
)
@model_options
@read_options
@runtime_options
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Embedding cache folder [default: $GEOSAM_CACHE_DIR or the user cache].",
)
@option(Prompts, "cache")
@outline_options
@click.pass_context
def command(ctx, scene, output, overwrite, prompt_file, layer, id_field, label_field, points, negative_points,
            boxes, prompt_crs, model, checkpoint, architecture, offline, bands, nodata, percentiles, stretch_8bit, resolution,
            pixel_coordinates, device, backend, precision, cache_dir, cache, outline, fill_holes, flat, keep_raw) -> None:  # fmt: skip
    """Segment the objects at point and box prompts in SCENE and write them to a GeoPackage.

    Prompts come from a vector file (--prompts) or the command line (--point, --box), in map
    coordinates. Each object is answered on its own window around it; window embeddings are cached,
    so asking again on the same scene runs only the decoder. Runs in this process (no Dask).
    """
    from geosam import output as outputs
    from geosam.cache import EmbeddingCache
    from geosam.prompts import PromptError, command_line_groups, read_prompts
    from geosam.session import Session

    inline = bool(points or negative_points or boxes)
    if prompt_file and inline:
        raise click.UsageError("give --prompts FILE or --point/--negative-point/--box, not both")
    if not prompt_file and not inline:
        raise click.UsageError("no prompts: give --prompts FILE, --point X,Y or --box XMIN,YMIN,XMAX,YMAX")
    if inline and (id_field or label_field or layer):
        raise click.UsageError("--id-field, --label-field and --layer apply to --prompts FILE only")
    if prompt_crs is not None and prompt_file:
        raise click.UsageError("--prompt-crs applies to --point/--box; a prompt file carries its own CRS")
    if inline:
        try:
            groups, crs = command_line_groups(points, negative_points, boxes), prompt_crs
        except PromptError as exc:
            raise click.UsageError(str(exc)) from None
    else:  # read before the model loads: a bad prompt file fails at once
        groups, crs = read_prompts(prompt_file, layer=layer, id_field=id_field, label_field=label_field)
    outputs.check_output(output, overwrite)
    check_keep_raw(output, keep_raw)
    store = EmbeddingCache(cache_dir) if cache else False
    session = Session(
        scene, model_spec(model, device, checkpoint, architecture, offline, backend, precision), cache=store, bands=bands,
        percentiles=percentiles, stretch_8bit=stretch_8bit, resolution=resolution, pixel_coordinates=pixel_coordinates,
        nodata=nodata,
    )  # fmt: skip
    frame = session.predict(
        prompts=groups, crs=crs, outline=outline, fill_holes=fill_holes, flat=flat, keep_raw=keep_raw
    )
    skipped = frame.attrs.get("skipped", [])
    if len(frame) == 0 and skipped:
        raise PromptError(
            f"no prompt could be answered ({'; '.join(map(str, skipped[:3]))}{'; ...' if len(skipped) > 3 else ''}); "
            "check the prompts' CRS (--prompt-crs) and that they lie on valid pixels of the scene"
        )
    outputs.write(frame, output, overwrite=overwrite)
    if not ctx.obj["quiet"]:
        click.echo(f"{len(frame)} objects written to {output}; {len(skipped)} prompts skipped", err=True)
