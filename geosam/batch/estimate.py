"""What a pipeline run would do, before it does it: work and time per scene, and the dry run's text."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from geosam.batch import records
from geosam.batch.config import Pipeline
from geosam.batch.plan import Plan, SceneJob, checked, cluster_choice
from geosam.georef import Scene
from geosam.tiling import TileGrid

# Estimated time, from MobileSAM on this project's 2-core development CPU (one single-threaded worker):
# the image encoder takes about 2.5 s per 1024-px model input (a tile or a prompt window), the mask
# decoder (geosam's low-rank form) about 0.03 s per decoded prompt (automatic mode decodes up to
# points_per_side² per tile).
ENCODE_S = 2.5
DECODE_S = 0.03
STATUS_TEXT = {"todo": "to run", "finished": "done, skipped", "stale": "exists, other settings"}


def estimate(
    plan: Plan, scene: Scene, job: SceneJob, prompts: int | None, parallel: int = 1
) -> tuple[int, float]:
    """(tiles or prompt groups, estimated seconds) for one scene (see ENCODE_S and DECODE_S).

    Tiles run ``parallel`` at a time; prompt mode runs in this process, one window after another.
    """
    pipeline = plan.pipeline
    if job.prompts is None:
        tiles = len(TileGrid(scene.width, scene.height, pipeline.tiling.tile_size, pipeline.tiling.overlap))
        return tiles, math.ceil(tiles / parallel) * (ENCODE_S + DECODE_S * pipeline.model.points_per_side**2)
    count = prompts or 0
    windows = math.ceil(scene.width / 1024) * math.ceil(scene.height / 1024)
    return count, ENCODE_S * min(count, windows) + DECODE_S * count


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def dry_run(
    pipeline: Pipeline,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    model: Any = None,
    overwrite: bool = False,
) -> str:
    """The plan as text: scenes, size, CRS, tiles, an estimated time and what a run would do."""
    from geosam.cluster import default_workers

    ready = checked(pipeline, model)
    the_plan, scenes, groups, source = ready.plan, ready.scenes, ready.prompts, ready.source
    workers, scheduler = cluster_choice(pipeline, workers, scheduler)
    if not any(job.prompts is None for job in the_plan.jobs):
        cluster, parallel = "none: prompt mode runs in this process", 1
    elif scheduler:
        cluster, parallel = f"the Dask scheduler at {scheduler} (estimate for one worker)", 1
    elif workers == 0:
        cluster, parallel = "this process (no Dask)", 1
    else:
        n = workers or default_workers(getattr(source, "device", "cpu"))
        cluster, parallel = f"a local Dask cluster of {plural(n, 'worker')}", os.cpu_count() or 1  # all cores
    rows, total, todo_total = [], 0.0, 0.0
    for job in the_plan.jobs:
        scene = scenes[job.name]
        prompts = groups[job.name].inside if job.name in groups else None
        count, seconds = estimate(the_plan, scene, job, prompts, parallel)
        state = records.state(job.output, job.record, ready.keys[job.name])
        if state == "stale" and (overwrite or the_plan.merged is not None):
            state = "todo"  # parts of a merged output are the pipeline's own: replaced without asking
        total += seconds
        todo_total += seconds if state == "todo" else 0.0
        crs = scene.crs.to_string() if scene.crs else "none"
        work = plural(count, "tile") if job.prompts is None else plural(count, "prompt")
        rows.append(
            (job.name, f"{scene.width} × {scene.height}", crs, job.mode, work, duration(seconds), state)
        )
    heads = ("scene", "size", "crs", "mode", "work")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    m, t = pipeline.model, pipeline.tiling
    model = f"{m.name} on {m.device}"
    if any(job.prompts is None for job in the_plan.jobs):
        model += f"; automatic mode: {m.points_per_side}×{m.points_per_side} points per {t.tile_size}-px tile, overlap {t.overlap} px"
    if the_plan.merged is not None:
        output = f"{the_plan.merged} (one GeoPackage; layers {', '.join(dict.fromkeys(j.layer for j in the_plan.jobs))}; a 'scene' field)"
    else:
        output = f"{Path(pipeline.resolve(pipeline.output.path))}/SCENE.gpkg (one GeoPackage per scene)"
    lines = [
        f"pipeline: {pipeline.source}",
        f"model:    {model}",
        f"cluster:  {cluster}",
        f"output:   {output}",
        "",
        "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)) + "  estimate  status",
    ]
    for r in rows:
        lines.append(
            "  ".join(v.ljust(w) for v, w in zip(r[:5], widths, strict=True))
            + f"  {r[5]:>8}  {STATUS_TEXT[r[6]]}"
        )
    todo = sum(r[6] == "todo" for r in rows)
    stale = sum(r[6] == "stale" for r in rows)
    lines += [
        "",
        f"{plural(len(rows), 'scene')}: {todo} to run, {len(rows) - todo - stale} finished earlier"
        + (f", {stale} with outputs from other settings (pass --overwrite to replace them)" if stale else ""),
        f"estimated time: {duration(todo_total)} (all scenes: {duration(total)})",
        (
            f"(estimates: {ENCODE_S:g} s per 1024-px tile or prompt window for the image encoder and "
            f"{DECODE_S:g} s per decoded prompt, measured with MobileSAM on one worker of a 2-core CPU; "
            "tiles all nodata take no time)"
        ),
    ]
    return "\n".join(lines)
