"""The ``geosam`` command line: a click group with rio-style options."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import click

from geosam import __version__
from geosam.errors import GeosamError

log = logging.getLogger("geosam")


class Group(click.Group):
    """Turns geosam's errors into one-line messages and exit code 1 (tracebacks only with -v)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GeosamError as exc:
            self._fail(ctx, str(exc))
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for a CLI
            self._fail(ctx, f"unexpected {type(exc).__name__}: {exc} (rerun with -v for details)")

    @staticmethod
    def _fail(ctx: click.Context, message: str) -> None:
        if logging.getLogger("geosam").isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        click.echo(f"Error: {message}", err=True)
        ctx.exit(1)


def _bands(ctx, param, value: str | None) -> tuple[int | str, ...] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",")]
    if "" in names:
        raise click.BadParameter("give 1-based band indexes or band names separated by commas, e.g. 3,2,1")
    return tuple(int(v) if v.isdigit() else v for v in names)


def _percentiles(ctx, param, value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give LOW,HIGH, e.g. 2,98") from None
    if not 0 <= low < high <= 100:
        raise click.BadParameter(f"{value}: use 0 <= LOW < HIGH <= 100")
    return low, high


def _tiling(size: int, overlap: int) -> None:
    from geosam.errors import InputError
    from geosam.tiling import check_tiling

    try:
        check_tiling(size, overlap)
    except InputError as exc:
        raise click.UsageError(str(exc)) from None


def read_options(command):
    """The options that plan how a scene is read, shared by ``segment`` and ``info``."""
    options = [
        click.option("-b", "--bands", callback=_bands,
                     help="Bands read as gray (1) or R,G,B (3), by index or band name, e.g. 3,2,1 or nir,red,green."
                     " [default: RGB bands; 1,2,3 of 3- or 4-band scenes; gray for 1 band]"),
        click.option("--percentiles", default="2,98", show_default=True, callback=_percentiles,
                     help="LOW,HIGH percentiles of the scene's valid pixels stretched to 0..255 (not 8-bit data)."),
        click.option("--stretch-8bit", is_flag=True, help="Stretch 8-bit data too (they are read as is by default)."),
        click.option("--resolution", type=click.FloatRange(0, min_open=True),
                     help="Resample reads to this pixel size, in the scene's CRS units (metres for UTM)."),
        click.option("--pixel-coordinates", is_flag=True,
                     help="Accept a raster without georeferencing; polygons are then in pixel units."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def model_options(command):
    """-m/--model and --checkpoint/--architecture, shared by ``segment`` and ``prompt``."""
    options = [
        click.option("-m", "--model", default="mobile_sam", show_default=True,
                     help="Installed model name (a label for the output with --checkpoint)."),
        click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Load this SAM state dict (.pt/.pth) instead of an installed model."),
        click.option("--architecture", type=click.Choice(["vit_t", "vit_b", "vit_l", "vit_h"]),
                     help="Architecture of --checkpoint [default: detected from its weights]."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _model_spec(model: str, device: str, checkpoint: Path | None, architecture: str | None,
                backend: str | None, precision: str, **params):  # fmt: skip
    from geosam.models import AutomaticParams, ModelSpec

    if architecture is not None and checkpoint is None:
        raise click.UsageError("--architecture applies to --checkpoint PATH only")
    return ModelSpec(
        model, device, AutomaticParams(**params), checkpoint=checkpoint, architecture=architecture,
        backend=backend, precision=precision,
    )  # fmt: skip


def backend_option(command):
    """``--backend`` and ``--precision``, shared by ``segment`` and ``prompt``."""
    command = click.option(
        "--precision",
        type=click.Choice(["fp32", "fp16", "bf16"]),
        default="fp32",
        show_default=True,
        help="Image encoder precision; fp16/bf16 (GPUs; bf16 also recent CPUs) run on torch.",
    )(command)
    return click.option(
        "--backend",
        type=click.Choice(["torch", "onnx"]),
        help="Runtime of the network: torch, or onnx (ONNX Runtime, the model exported once beside its"
        " checkpoint) [default: torch, measured faster on CPU; ONNX-only models: onnx].",
    )(command)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geosam")
@click.option("-v", "--verbose", count=True, help="More detail (repeat for debug output and tracebacks).")
@click.option("-q", "--quiet", count=True, help="Less output (no progress bar).")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: int) -> None:
    """Segment objects in GeoTIFF scenes with Segment Anything models, as georeferenced polygons."""
    level = max(logging.WARNING - 10 * verbose + 10 * quiet, logging.DEBUG)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    dask_level = logging.INFO if verbose >= 2 else logging.ERROR  # Dask's own chatter only with -vv
    for name, floor in (("geosam", level), ("distributed", dask_level)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(floor)
        logger.propagate = False
    ctx.obj = {"quiet": quiet > 0}


@main.command()
@click.argument("scene", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file, format by extension: .gpkg (GeoPackage, styled for QGIS), .geojson (WGS84), "
    ".parquet (GeoParquet), .shp (Shapefile).",
)
@click.option("--overwrite", is_flag=True, help="Replace the outputs if they exist.")
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a quick-look PNG: outlines coloured by score over the downsampled scene.",
)
@click.option(
    "--preview-size",
    default=1024,
    show_default=True,
    type=click.IntRange(16, 8192),
    help="Longest side of the --preview image, in pixels (the scene is never enlarged).",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write object ids as a label raster on the scene's grid (Cloud-Optimized GeoTIFF, .tif).",
)
@model_options
@read_options
@click.option("--tile-size", default=1024, show_default=True, type=int, help="Tile size in pixels.")
@click.option(
    "--overlap",
    default=128,
    show_default=True,
    type=int,
    help="Overlap between tiles in pixels; objects smaller than this are never cut.",
)
@click.option(
    "--points-per-side",
    default=32,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Automatic mode: prompt grid is N×N points per tile (fewer is faster).",
)
@click.option(
    "--points-per-batch",
    default=16,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Prompts decoded per model call.",
)
@click.option(
    "--pred-iou-thresh",
    default=0.88,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Drop masks whose predicted IoU is below this.",
)
@click.option(
    "--stability-thresh",
    default=0.92,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Drop masks whose stability score is below this.",
)
@click.option(
    "--min-area",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Drop objects smaller than this many m² (pixels² without a CRS).",
)
@click.option(
    "--simplify",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Simplify outlines by this many pixels (0 keeps exact pixel edges).",
)
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(1),
    help="Local Dask worker processes [default: 1 on the CPU, cores with a GPU].",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run on an existing Dask cluster: scheduler address (tcp://host:8786) or scheduler file (.json)"
    " [default: $DASK_SCHEDULER_ADDRESS / Dask's scheduler-address setting, else a local cluster].",
)
@click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, mps.")
@backend_option
@click.option(
    "--tiles-per-task",
    type=click.IntRange(min=1),
    help="Tiles per task, embedded in one encoder call [default: 4 on a GPU, 1 on CPU].",
)
@click.option(
    "--prompt-rounds",
    default=3,
    show_default=True,
    type=click.IntRange(0, 10),
    help="Rounds of point prompts to tiles that missed an object their neighbour saw run into them (0: none).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder keeping finished tiles, so that a rerun resumes [default: OUT.geosam-work beside the output].",
)
@click.option("--keep-work", is_flag=True, help="Keep the work folder after the output is written.")
@click.option(
    "--retries",
    default=2,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Tries more for a tile that fails, before it is reported as failed.",
)
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
def segment(ctx, scene, output, overwrite, preview, preview_size, labels, model, checkpoint, architecture,
            bands, percentiles, stretch_8bit, resolution, pixel_coordinates, tile_size, overlap, points_per_side,
            points_per_batch, pred_iou_thresh, stability_thresh, min_area, simplify, workers, scheduler,
            device, backend, precision, tiles_per_task, prompt_rounds, work_dir, keep_work, retries,
            allow_partial, report_path) -> None:  # fmt: skip
    """Segment every object in SCENE and write them as polygons (GeoPackage, GeoJSON, GeoParquet, .shp).

    Finished tiles are kept in a work folder: if the run is interrupted, the same command again
    segments only the tiles not finished yet. A run report (JSON) is written beside the output.
    """
    import time

    from tqdm import tqdm

    from geosam import io
    from geosam.errors import TileError
    from geosam.georef import open_scene
    from geosam.pipeline import run
    from geosam.resume import WorkDir, default_work_dir
    from geosam.tiling import TileGrid

    started = time.monotonic()
    _tiling(tile_size, overlap)
    io.check_output(output, overwrite)
    if preview is not None:
        from geosam.preview import check_preview

        check_preview(preview, overwrite)
    if labels is not None:
        io.check_output(labels, overwrite, formats={".tif": "COG", ".tiff": "COG"})
    work_dir = work_dir or default_work_dir(output)
    report_path = report_path or output.with_name(f"{output.stem}.report.json")
    spec = _model_spec(
        model, device, checkpoint, architecture, backend, precision, points_per_side=points_per_side,
        points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_thresh,
    )  # fmt: skip
    reads = {"bands": bands, "percentiles": percentiles, "stretch_8bit": stretch_8bit,
             "resolution": resolution, "pixel_coordinates": pixel_coordinates}  # fmt: skip
    plan = open_scene(scene, **reads)
    total = len(TileGrid(plan.width, plan.height, tile_size, overlap))
    with tqdm(
        total=total,
        unit="tile",
        desc="segment",
        file=sys.stderr,
        leave=False,
        disable=True if ctx.obj["quiet"] else None,
    ) as bar:  # None: a bar only on a terminal
        try:
            frame, report = run(
                scene, model=spec, tile_size=tile_size, overlap=overlap, min_area=min_area, simplify=simplify,
                workers=workers, scheduler=scheduler, on_tile=lambda result: bar.update(1), work_dir=work_dir,
                retries=retries, allow_partial=allow_partial, parameters=dict(ctx.params), **reads,
                tiles_per_task=tiles_per_task, prompt_rounds=prompt_rounds,
            )  # fmt: skip
        except TileError as exc:
            if exc.report is not None:
                exc.report.write(report_path)
            raise type(exc)(f"{exc}; report: {report_path}", exc.report) from None
    report.output = str(output)
    report.finish(time.monotonic() - started)
    io.write(frame, output, overwrite=overwrite, report=report)
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


def _crs_option(ctx, param, value: str | None):
    if value is None:
        return None
    from geosam.prompts import PromptError, parse_crs

    try:
        return parse_crs(value)
    except PromptError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("scene", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output GeoPackage (.gpkg).",
)
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@click.option(
    "--prompts",
    "prompt_file",
    type=click.Path(dir_okay=False, path_type=str),
    help="Vector file of prompts: points (positive/negative) and polygons (boxes), any CRS.",
)
@click.option("--layer", help="Layer of the prompt file [default: the first].")
@click.option("--id-field", help="Field grouping prompt features into one object [default: one object each].")
@click.option(
    "--label-field",
    help="Field marking points positive (1, true, fg) or negative (0, false, bg) [default: 'label' if present].",
)
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
@click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, mps.")
@backend_option
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Embedding cache folder [default: $GEOSAM_CACHE_DIR or the user cache].",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor store embeddings on disk.")
@click.pass_context
def prompt(ctx, scene, output, overwrite, prompt_file, layer, id_field, label_field, points, negative_points,
           boxes, prompt_crs, model, checkpoint, architecture, bands, percentiles, stretch_8bit, resolution,
           pixel_coordinates, device, backend, precision, cache_dir, no_cache) -> None:  # fmt: skip
    """Segment the objects at point and box prompts in SCENE and write them to a GeoPackage.

    Prompts come from a vector file (--prompts) or the command line (--point, --box), in map
    coordinates. Each object is answered on its own window around it; window embeddings are cached,
    so asking again on the same scene runs only the decoder. Runs in this process (no Dask).
    """
    from geosam import io
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
    io.check_output(output, overwrite)
    cache = False if no_cache else EmbeddingCache(cache_dir)
    session = Session(
        scene, _model_spec(model, device, checkpoint, architecture, backend, precision), cache=cache, bands=bands,
        percentiles=percentiles, stretch_8bit=stretch_8bit, resolution=resolution, pixel_coordinates=pixel_coordinates,
    )  # fmt: skip
    frame = session.predict(prompts=groups, crs=crs)
    skipped = frame.attrs.get("skipped", [])
    if len(frame) == 0 and skipped:
        raise PromptError(
            f"no prompt could be answered ({'; '.join(map(str, skipped[:3]))}{'; ...' if len(skipped) > 3 else ''}); "
            "check the prompts' CRS (--prompt-crs) and that they lie on valid pixels of the scene"
        )
    io.write(frame, output, overwrite=overwrite)
    if not ctx.obj["quiet"]:
        click.echo(f"{len(frame)} objects written to {output}; {len(skipped)} prompts skipped", err=True)


@main.command("run")
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Show the plan (scenes, tiles, estimated time) and run nothing."
)
@click.option("--schema", is_flag=True, help="Print the pipeline format as JSON Schema and exit.")
@click.option(
    "-w", "--workers", type=click.IntRange(0), help="Local Dask worker processes [default: the pipeline's]."
)
@click.option(
    "--scheduler", metavar="ADDR", help="Address of an existing Dask scheduler [default: the pipeline's]."
)
@click.option("--overwrite", is_flag=True, help="Replace outputs left by other runs or settings.")
@click.pass_context
def run_pipeline(ctx, pipeline, dry_run, schema, workers, scheduler, overwrite) -> None:
    """Run the pipeline file PIPELINE (YAML or TOML): the same job over many scenes.

    All scenes run through one Dask cluster; a scene finished by an earlier run with the same
    settings is skipped, so an interrupted run picks up where it stopped. One summary at the end.
    """
    import json

    from geosam import runconfig

    if schema:
        click.echo(json.dumps(runconfig.json_schema(), indent=2))
        return
    if pipeline is None:
        raise click.UsageError("give a PIPELINE file (or --schema)")
    from geosam import runner

    config = runconfig.load(pipeline)
    if dry_run:
        click.echo(runner.dry_run(config, workers=workers, scheduler=scheduler, overwrite=overwrite))
        return
    from tqdm import tqdm

    quiet = ctx.obj["quiet"]
    bars: dict[str, tqdm] = {}

    def on_tile(job, total: int) -> None:
        if job.name not in bars:
            bars[job.name] = tqdm(total=total, unit="tile", desc=job.name, file=sys.stderr, leave=False,
                                  disable=True if quiet else None)  # fmt: skip
        bars[job.name].update(1)

    def on_scene(outcome) -> None:
        bar = bars.pop(outcome.job.name, None)
        if bar is not None:
            bar.close()
        if not quiet:
            what = {"skipped": "finished earlier, skipped", "failed": f"failed: {outcome.message}"}.get(
                outcome.status, f"{outcome.objects} objects in {runner.duration(outcome.seconds)}"
            )
            click.echo(f"{outcome.job.name}: {what}", err=True)

    summary = runner.run(config, overwrite=overwrite, workers=workers, scheduler=scheduler, on_scene=on_scene,
                         on_tile=on_tile)  # fmt: skip
    click.echo(summary.table())
    if summary.failed:
        first = summary.failed[0]
        raise runconfig.PipelineError(
            f"{len(summary.failed)} of {len(summary.outcomes)} scenes failed ({first.job.name}: {first.message}); "
            "run again to retry them: finished scenes are skipped"
        )


@main.group()
def models() -> None:
    """Install and list model checkpoints."""


@models.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy is installed.")
@click.pass_context
def models_fetch(ctx, names: tuple[str, ...], force: bool) -> None:
    """Download and verify checkpoints NAMES (default: mobile_sam) into the model cache."""
    from tqdm import tqdm

    from geosam.models import DEFAULT_MODEL, weights

    for name in names or (DEFAULT_MODEL,):
        with tqdm(unit="B", unit_scale=True, desc=name, disable=ctx.obj["quiet"], file=sys.stderr) as bar:

            def progress(done: int, total: int | None) -> None:
                bar.total = total
                bar.update(done - bar.n)

            path = weights.fetch(name, force=force, progress=progress, log=log.info)
        click.echo(f"{name}: {path}")


@models.command("export")
@click.argument("name")
@click.option("--force", is_flag=True, help="Export again even if a current export exists.")
@click.option(
    "--verify",
    "scenes",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Compare ONNX Runtime with torch on the first tile of this scene (repeatable); exit 1 if they differ.",
)
def models_export(name: str, force: bool, scenes: tuple[Path, ...]) -> None:
    """Export model NAME to ONNX (image encoder, prompt decoder) beside its checkpoint, for --backend onnx."""
    from geosam.errors import ModelError
    from geosam.models import ModelSpec, export_model, load_model
    from geosam.models.onnx import verify

    exported = export_model(name, force=force)
    click.echo(f"{name}: {exported.encoder}\n{name}: {exported.decoder}")
    if scenes:
        from geosam.georef import open_scene
        from geosam.tiling import TileGrid, read_tile

        images = []
        for path in scenes:
            scene = open_scene(path)
            grid = TileGrid(scene.width, scene.height, 1024, 128)
            images.append(read_tile(scene, next(iter(grid)), grid.size).image)
        torch_model, onnx_model = (load_model(ModelSpec(name, backend=b)) for b in ("torch", "onnx"))
        result = verify(torch_model, onnx_model, images)
        click.echo(f"verified: {result.describe()}")
        if not result.passed:
            raise ModelError(f"the ONNX export of {name!r} differs from torch: export it again with --force")


@models.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def models_import(file: Path) -> None:
    """Install a model file FILE obtained elsewhere (recognised and verified by its sha256)."""
    from geosam.models import weights

    click.echo(f"installed {weights.import_file(file)}")


@models.command("list")
def models_list() -> None:
    """Show known models, whether they are installed, where, and where they came from."""
    from geosam.models import weights

    click.echo(f"cache: {weights.cache_dir()}")
    for row in weights.list_models():
        where = f"{row.path}\n    source: {row.source}" if row.path else "not installed"
        click.echo(f"{row.name}  [{row.architecture}; {row.licence}]\n    {where}")


@main.command()
@click.argument("scene", type=click.Path(dir_okay=False, path_type=str))
@read_options
@click.option("--tile-size", default=1024, show_default=True, type=int)
@click.option("--overlap", default=128, show_default=True, type=int)
def info(scene, bands, percentiles, stretch_8bit, resolution, pixel_coordinates, tile_size, overlap) -> None:
    """Show how geosam reads SCENE: size, CRS, bands, stretch and tiling."""
    from geosam.georef import open_scene
    from geosam.tiling import TileGrid

    _tiling(tile_size, overlap)
    plan = open_scene(
        scene, bands=bands, percentiles=percentiles, stretch_8bit=stretch_8bit, resolution=resolution,
        pixel_coordinates=pixel_coordinates,
    )  # fmt: skip
    grid = TileGrid(plan.width, plan.height, tile_size, overlap)
    click.echo(f"scene:     {plan.path}")
    click.echo(f"size:      {plan.width} × {plan.height} px")
    click.echo(f"crs:       {plan.crs.to_string() if plan.crs else 'none (pixel coordinates)'}")
    click.echo(f"pixel:     {plan.pixel_size[0]:g} × {plan.pixel_size[1]:g}")
    click.echo(f"bounds:    {', '.join(f'{v:.3f}' for v in plan.bounds)}")
    click.echo(f"bands:     {','.join(map(str, plan.bands))}")
    click.echo(f"stretch:   {'none (8-bit)' if plan.stretch is None else plan.stretch}")
    click.echo(f"resampled: {plan.resampling or 'no'}")
    click.echo(
        f"tiles:     {len(grid)} ({grid.shape[0]} × {grid.shape[1]}) of {tile_size} px, overlap {overlap}"
    )


if __name__ == "__main__":
    main()
