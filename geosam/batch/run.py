"""Running a pipeline: check everything before any work, then one scene at a time through one Dask
cluster, skipping scenes finished by an earlier run of the same settings (``geosam.batch.records``).

A merged output is made from per-scene parts kept in ``NAME.parts/`` beside it, so that it, too,
resumes scene by scene.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

from geosam import output
from geosam._version import __version__
from geosam.batch import records
from geosam.batch.config import OVER_TIME, Pipeline
from geosam.batch.estimate import duration
from geosam.batch.plan import (
    Checked,
    Plan,
    SceneJob,
    ScenePrompts,
    checked,
    classes_options,
    cluster_choice,
    read_options,
)
from geosam.errors import GeosamError, reason
from geosam.georef import Scene, area_m2

log = logging.getLogger(__name__)


@dataclass
class SceneOutcome:
    job: SceneJob
    status: str  # 'done' (run now), 'skipped' (finished earlier), 'failed'
    objects: int = 0
    seconds: float = 0.0
    message: str = ""  # why it failed; why it has no objects
    skipped_prompts: int = 0


@dataclass
class Summary:
    plan: Plan
    outcomes: list[SceneOutcome] = field(default_factory=list)
    seconds: float = 0.0
    merged_written: bool = False

    @property
    def failed(self) -> list[SceneOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def table(self) -> str:
        width = max([5, *(len(o.job.name) for o in self.outcomes)])
        lines = [f"{'scene':<{width}}  {'status':<8}  {'objects':>7}  {'time':>9}  note"]
        for o in self.outcomes:
            note = o.message or (f"{o.skipped_prompts} prompts skipped" if o.skipped_prompts else "")
            objects = "" if o.status == "failed" else str(o.objects)
            seconds = "" if o.status == "skipped" else duration(o.seconds)
            lines.append(f"{o.job.name:<{width}}  {o.status:<8}  {objects:>7}  {seconds:>9}  {note}".rstrip())
        counts = {s: sum(o.status == s for o in self.outcomes) for s in ("done", "skipped", "failed")}
        total = sum(o.objects for o in self.outcomes if o.status != "failed")
        where = self.plan.merged or Path(self.plan.pipeline.resolve(self.plan.pipeline.output.path))
        lines.append(
            f"{len(self.outcomes)} scenes: {counts['done']} done, {counts['skipped']} skipped (finished earlier), "
            f"{counts['failed']} failed; {total} objects in {where}; {duration(self.seconds)}"
        )
        return "\n".join(lines)


def run(
    pipeline: Pipeline,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    offline: bool = False,
    model: Any = None,
    on_scene: Callable[[SceneOutcome], None] | None = None,
    on_start: Callable[[SceneJob, int], None] | None = None,
    on_tile: Callable[[SceneJob], None] | None = None,
    on_learn: Callable[[SceneJob, int, int], None] | None = None,
) -> Summary:
    """Run every scene not finished before; return what happened to each.

    Everything is checked first (inputs, scenes, prompt files, outputs, the model); then scenes run
    one after another, their tiles on one Dask cluster: a local one of ``workers`` processes, the
    scheduler at ``scheduler``, or the pipeline's cluster. A scene that fails is reported in the
    summary and the others go on; its next run retries it. ``offline`` forbids downloading the model
    whatever the pipeline's ``model.offline``. ``model`` replaces the pipeline's model
    (a model source with ``check``/``load``; tests use stand-ins). ``on_start(job, total)`` is called
    with a scene's tile count before its first tile, ``on_tile(job)`` as each tile finishes, and
    ``on_learn(job, done, total)`` as the tiles of a ``classes.examples`` file are learnt from (progress).
    """
    started = time.perf_counter()
    if offline:
        pipeline = dataclasses.replace(pipeline, model=dataclasses.replace(pipeline.model, offline=True))
    ready = checked(pipeline, model)
    if pipeline.output.mode in OVER_TIME:
        workers, scheduler = cluster_choice(pipeline, workers, scheduler)
        return _over_time(ready, overwrite, workers, scheduler, on_scene, started)
    the_plan, scenes, groups, source, keys = ready.plan, ready.scenes, ready.prompts, ready.source, ready.keys
    states = {job.name: records.state(job.output, job.record, keys[job.name]) for job in the_plan.jobs}
    _check_outputs(the_plan, states, keys, overwrite)
    todo = [job for job in the_plan.jobs if states[job.name] != "finished"]
    if todo:
        source.check()
    workers, scheduler = cluster_choice(pipeline, workers, scheduler)
    automatic = [job for job in todo if job.prompts is None]
    summary = Summary(the_plan)
    loaded: list[Any] = []  # the prompt-mode model, loaded on first use
    with (
        _client(workers, scheduler, getattr(source, "device", "cpu"))
        if automatic and not (workers == 0 and not scheduler)
        else nullcontext() as client
    ):
        address = client.scheduler.address if client is not None else None
        for job in the_plan.jobs:
            if states[job.name] == "finished":
                record = records.read(job.record) or {}
                outcome = SceneOutcome(job, "skipped", int(record.get("objects", 0)))
            else:
                outcome = _run_scene(the_plan, job, scenes[job.name], groups.get(job.name), source, loaded,
                                     keys[job.name], scheduler is None, address, (on_start, on_tile, on_learn))  # fmt: skip
            summary.outcomes.append(outcome)
            if on_scene is not None:
                on_scene(outcome)
    if the_plan.merged is not None and not summary.failed:
        summary.merged_written = _merge(the_plan, the_plan.merged, keys)
    summary.seconds = time.perf_counter() - started
    return summary


def _over_time(
    ready: Checked, overwrite: bool, workers: int | None, scheduler: str | None,
    on_scene: Callable[[SceneOutcome], None] | None, started: float,
) -> Summary:  # fmt: skip
    """output.mode change or track: the scenes as dates of one place, one GeoPackage (``geosam.timeseries``)."""
    from geosam.resume import default_work_dir
    from geosam.timeseries import ChangeReport, change, track, write_change, write_tracks

    p, jobs = ready.plan.pipeline, ready.plan.jobs
    out = Path(p.resolve(p.output.path))
    if p.output.mode == "change" and len(jobs) != 2:
        raise p.fail(
            [f"inputs: output.mode change compares two scenes, not {len(jobs)}; track follows a series"]
        )
    output.check_output(out, overwrite, formats={".gpkg": "GPKG"})
    reads = {k: v for k, v in read_options(p).items() if k not in ("stretch_8bit", "pixel_coordinates")}
    options = {
        "model": ready.source, "tile_size": p.tiling.tile_size, "overlap": p.tiling.overlap,
        "prompt_rounds": p.tiling.prompt_rounds, "min_area": p.filters.min_area, "simplify": p.filters.simplify,
        "keep_background": p.filters.keep_background, **classes_options(p), **dataclasses.asdict(p.outlines),
        **reads, **dataclasses.asdict(p.change), "workers": workers, "scheduler": scheduler,
        "work_dir": default_work_dir(out),
    }  # fmt: skip
    paths = [job.path for job in jobs]
    if p.output.mode == "change":
        result = change(*paths, **options)
        report = typing.cast(ChangeReport, result.report)  # change() always reports
        write_change(result, out, overwrite)
    else:
        frame, report = track(paths, **options)
        write_tracks(frame, out, overwrite)
    summary = Summary(ready.plan)
    for job, run_report, seconds in zip(jobs, report.runs, report.segment_s, strict=True):
        summary.outcomes.append(SceneOutcome(job, "done", int(run_report["objects"]), seconds))
        if on_scene is not None:
            on_scene(summary.outcomes[-1])
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def _client(workers: int | None, scheduler: str | None, device: str) -> Iterator[Any]:
    from geosam.cluster import dask_client

    with dask_client(workers, scheduler, device) as client:
        yield client


def _check_outputs(plan: Plan, states: dict[str, str], keys: dict[str, str], overwrite: bool) -> None:
    """Fail before any work where an output cannot be written, or exists and may not be replaced."""
    pipeline = plan.pipeline
    merged = plan.merged
    if merged is not None:
        _make_folder(pipeline, merged.with_name(f"{merged.stem}.parts"))
        output.check_output(merged, overwrite=True)  # writable
        record = records.read(records.record_path(merged))
        current = record is not None and record.get("key") == _merged_key(plan, keys)
        if merged.exists() and not current and not overwrite:
            raise pipeline.fail(
                [
                    f"output.path: {plan.merged} exists from another run or other settings: pass --overwrite to replace it"
                ]
            )
        return
    folder = Path(pipeline.resolve(pipeline.output.path))
    _make_folder(pipeline, folder)
    stale = [job.output for job in plan.jobs if states[job.name] == "stale"]
    if stale and not overwrite:
        names = ", ".join(p.name for p in stale[:5]) + (
            f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        )
        raise pipeline.fail(
            [f"{folder}: {names} exist from another run or other settings: pass --overwrite to replace them"]
        )
    if plan.jobs:
        output.check_output(plan.jobs[0].output, overwrite=True)


def _make_folder(pipeline: Pipeline, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise pipeline.fail([f"output.path: cannot create the folder {folder} ({reason(exc)})"]) from None


def _run_scene(plan, job, scene, groups, source, loaded, key, local, address, progress) -> SceneOutcome:
    started = time.perf_counter()
    try:
        if job.prompts is None:
            (found, kept, advice), skipped = _automatic(plan, job, source, local, address, progress), 0
        else:
            frame, skipped = _prompted(plan, scene, groups, source, loaded)
            found, advice = len(frame), []
            frame = _filter(plan.pipeline, frame, scene)
            output.write(frame, job.output, overwrite=True)
            kept = len(frame)
    except GeosamError as exc:
        log.debug("scene %s failed", job.name, exc_info=True)
        return SceneOutcome(job, "failed", seconds=time.perf_counter() - started, message=str(exc))
    seconds = time.perf_counter() - started
    records.write(job.record, {
        "key": key, "scene": job.path, "objects": kept, "seconds": round(seconds, 3),
        "geosam": __version__, "pipeline": plan.pipeline.source, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })  # fmt: skip
    note = "; ".join(advice) if not found else f"{found} objects, none passed the filters" if not kept else ""
    return SceneOutcome(job, "done", kept, seconds, note, skipped_prompts=skipped)


def _automatic(plan, job, source, local, address, progress) -> tuple[int, int, list[str]]:
    """Segment the scene, its tiles on the cluster at ``address`` (``local``: the one this run started,
    whose workers share the cores) or in this process, and write the objects that pass the score filter
    a batch at a time (``progress``: ``run``'s ``on_start``, ``on_tile`` and ``on_learn``); objects found
    and kept, and the run's advice."""
    from geosam.scene_run import segmented

    p = plan.pipeline
    on_start, on_tile, on_learn = progress
    with segmented(
        job.path, model=source, tile_size=p.tiling.tile_size, overlap=p.tiling.overlap,
        prompt_rounds=p.tiling.prompt_rounds,
        min_area=p.filters.min_area, simplify=p.filters.simplify, keep_background=p.filters.keep_background,
        **classes_options(p),
        **dataclasses.asdict(p.outlines),
        workers=0 if address is None else None, scheduler=address, threads=0 if local else None,
        on_start=(lambda total: on_start(job, total)) if on_start else None,
        on_tile=(lambda result: on_tile(job)) if on_tile else None,
        on_learn=(lambda done, total: on_learn(job, done, total)) if on_learn else None, **read_options(p),
    ) as result:  # fmt: skip
        kept, scores = result.store.scores(at_least=p.filters.min_score)
        output.write(
            output.Batches(_scored(result.batches(), p.filters.min_score), scores), job.output, overwrite=True
        )
        return result.store.staged, kept, result.report.advice


def _scored(batches: Iterator[gpd.GeoDataFrame], min_score: float) -> Iterator[gpd.GeoDataFrame]:
    """The batches' objects scored at least ``min_score``, numbered again from 1 (the first batch always,
    empty or not: it makes the layer)."""
    count = 0
    for i, batch in enumerate(batches):
        batch = batch[batch["score"] >= min_score].reset_index(drop=True)
        if i and not len(batch):
            continue
        batch["id"] = np.arange(count + 1, count + len(batch) + 1, dtype=np.int64)
        count += len(batch)
        yield batch


def _prompted(
    plan: Plan, scene: Scene, prompts: ScenePrompts, source: Any, loaded: list
) -> tuple[gpd.GeoDataFrame, int]:
    from geosam.session import Session

    if not loaded:
        loaded.append(source.load())
    session = Session(scene, loaded[0], cache=plan.pipeline.prompts.cache)
    frame = session.predict(
        prompts=prompts.groups, crs=prompts.crs, **dataclasses.asdict(plan.pipeline.outlines)
    )
    return frame, len(frame.attrs.get("skipped", []))


def _filter(pipeline: Pipeline, frame: gpd.GeoDataFrame, scene: Scene) -> gpd.GeoDataFrame:
    """Prompt mode's filters: simplify (pixels, in map units), score and area."""
    f = pipeline.filters
    frame = frame.copy()
    frame.attrs = {}
    if f.simplify > 0 and len(frame):
        geometry = np.asarray(frame.geometry.values, dtype=object)
        import shapely

        frame = frame.set_geometry(
            shapely.make_valid(
                shapely.simplify(geometry, f.simplify * scene.pixel_size[0], preserve_topology=True)
            ),
            crs=frame.crs,
        )
        frame["area_m2"] = (
            area_m2(np.asarray(frame.geometry.values, dtype=object), scene.crs) if scene.crs else frame.area
        )
    keep = (frame["score"] >= f.min_score) & (frame["area_m2"] >= f.min_area)
    return frame[keep].reset_index(drop=True)


def _merged_key(plan: Plan, keys: dict[str, str]) -> str:
    return records.merged_key([(j.name, j.layer, keys[j.name]) for j in plan.jobs])


def _merge(plan: Plan, merged: Path, keys: dict[str, str]) -> bool:
    """Write the merged GeoPackage from the parts, unless it is already current; True if written. Each
    layer is read and written a part's batch at a time, with a ``scene`` field and in the CRS of its
    first part that has one."""
    import pyogrio

    key = _merged_key(plan, keys)
    record = records.read(records.record_path(merged))
    if merged.exists() and record is not None and record.get("key") == key:
        return False
    layers: dict[str, list[SceneJob]] = {}
    for job in plan.jobs:
        layers.setdefault(job.layer, []).append(job)
    batches = {}
    for layer, jobs in layers.items():
        infos = [pyogrio.read_info(job.output, layer=output.LAYER) for job in jobs]
        crss = [info["crs"] for info in infos]
        crs = next((c for c in crss if c is not None), None)
        if crs is not None and None in crss:
            raise plan.pipeline.fail([f"output: layer {layer!r} mixes scenes with and without a CRS"])
        scored = all("score" in info["fields"] for info in infos)
        counts = [info["features"] for info in infos]
        batches[layer] = output.Batches(_parts(jobs, counts, crs), _score_range(jobs) if scored else None)
    output.write_layers(batches, merged, overwrite=True)
    records.write(
        records.record_path(merged),
        {"key": key, "scenes": [j.name for j in plan.jobs], "geosam": __version__},
    )
    return True


def _parts(jobs: list[SceneJob], counts: list[int], crs: str | None) -> Iterator[gpd.GeoDataFrame]:
    """The scenes' objects (``counts`` of them) a batch at a time, each with its ``scene`` and in ``crs``
    (an empty frame for none: it makes the layer)."""
    import pyogrio

    from geosam.objectstore import CHUNK

    yielded = False
    for job, total in zip(jobs, counts, strict=True):
        for first in range(0, max(total, 1), CHUNK):
            part = pyogrio.read_dataframe(
                job.output, layer=output.LAYER, skip_features=first, max_features=CHUNK
            )
            if yielded and not len(part):
                continue
            part.insert(0, "scene", job.name)
            yield part.to_crs(crs) if crs is not None and part.crs != crs else part
            yielded = True


def _score_range(jobs: list[SceneJob]) -> np.ndarray:
    """The lowest and highest score of the scenes' objects (what the layer's style is drawn from)."""
    import pyogrio

    ranges: list[float] = []
    for job in jobs:
        found = pyogrio.read_dataframe(
            job.output,
            sql=f'SELECT min(score) AS low, max(score) AS high FROM "{output.LAYER}"',
            read_geometry=False,
        )
        ranges.extend(v for v in found.iloc[0] if v is not None and np.isfinite(v))
    return np.array([min(ranges), max(ranges)]) if ranges else np.zeros(0)
