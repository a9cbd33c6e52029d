"""``geosam run``: a pipeline file, the same job over a batch of scenes."""

from __future__ import annotations

from pathlib import Path

import click

from geosam.cli.options import option
from geosam.cli.progress import SceneBars, event
from geosam.settings import Cluster, Model


@click.command("run")
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Show the plan (scenes, tiles, estimated time) and run nothing."
)
@click.option("--schema", is_flag=True, help="Print the pipeline format as JSON Schema and exit.")
@option(
    Cluster,
    "workers",
    help="Local Dask worker processes; 0 runs tiles in this process [default: the pipeline's].",
)
@option(Cluster, "scheduler", help="Address of an existing Dask scheduler [default: the pipeline's].")
@option(Model, "offline", help="Never download a model that is not installed [default: the pipeline's].")
@click.option("--overwrite", is_flag=True, help="Replace outputs left by other runs or settings.")
@click.pass_context
def command(ctx, pipeline, dry_run, schema, workers, scheduler, offline, overwrite) -> None:
    """Run the pipeline file PIPELINE (YAML or TOML): the same job over many scenes.

    All scenes run through one Dask cluster; a scene finished by an earlier run with the same
    settings is skipped, so an interrupted run picks up where it stopped. One summary at the end.
    """
    import json

    from geosam.batch import config

    if schema:
        click.echo(json.dumps(config.json_schema(), indent=2))
        return
    if pipeline is None:
        raise click.UsageError("give a PIPELINE file (or --schema)")
    from geosam.batch import estimate, run

    loaded = config.load(pipeline)
    if dry_run:
        click.echo(estimate.dry_run(loaded, workers=workers, scheduler=scheduler, overwrite=overwrite))
        return
    bars = SceneBars(ctx)

    def on_scene(outcome) -> None:
        bars.close(outcome.job)
        event(ctx, "scene", name=outcome.job.name, status=outcome.status, objects=outcome.objects,
              output=outcome.job.output, message=outcome.message)  # fmt: skip
        if not ctx.obj["quiet"]:
            what = {"skipped": "finished earlier, skipped", "failed": f"failed: {outcome.message}"}.get(
                outcome.status, f"{outcome.objects} objects in {estimate.duration(outcome.seconds)}"
            )
            click.echo(f"{outcome.job.name}: {what}", err=True)

    summary = run.run(loaded, overwrite=overwrite, workers=workers, scheduler=scheduler, offline=offline,
                      on_scene=on_scene, on_start=bars.start, on_tile=bars.tile, on_learn=bars.learn)  # fmt: skip
    merged = summary.plan.merged
    written = [merged] if merged is not None and merged.exists() else [
        o.job.output for o in summary.outcomes if o.status != "failed" and merged is None
    ]  # fmt: skip
    event(ctx, "written", paths=written)
    click.echo(summary.table())
    if summary.failed:
        first = summary.failed[0]
        raise config.PipelineError(
            f"{len(summary.failed)} of {len(summary.outcomes)} scenes failed ({first.job.name}: {first.message}); "
            "run again to retry them: finished scenes are skipped"
        )
