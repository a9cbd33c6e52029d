"""Running a pipeline: plan the scenes, check everything before any work, then one scene at a time
through one Dask cluster, skipping scenes finished by an earlier run of the same settings.

Per-scene resume: each scene's GeoPackage has a small JSON record beside it (``SCENE.run.json``)
holding the run key, a hash of everything that decides the result: the scene file's identity
(path, size, modification time), the read plan, model (name, device, settings, checkpoint sha256),
tiling or prompts (and the prompt file's identity) and filters. A scene whose output exists with a
matching record is not redone. A merged output is made from per-scene parts kept in ``NAME.parts/``
beside it, so that it, too, resumes scene by scene.
"""

from __future__ import annotations

import dataclasses
import glob as globbing
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

from geosam import __version__, io
from geosam.errors import GeosamError, reason
from geosam.georef import Scene, area_m2, open_scene
from geosam.runconfig import Input, Pipeline
from geosam.tiling import TileGrid

log = logging.getLogger(__name__)

# Estimated time, from MobileSAM on this project's 2-core development CPU (one single-threaded worker):
# the image encoder takes about 2.5 s per 1024-px model input (a tile or a prompt window), the mask
# decoder (geosam's low-rank form) about 0.03 s per decoded prompt (automatic mode decodes up to
# points_per_side² per tile).
ENCODE_S = 2.5
DECODE_S = 0.03

_UNSAFE = re.compile(r"[^\w.-]|^\.")  # scene names become file names
STATUS_TEXT = {"todo": "to run", "done": "done, skipped", "stale": "exists, other settings"}


@dataclass(frozen=True)
class SceneJob:
    """One scene of a pipeline and where its result goes."""

    name: str
    path: str  # as given to open_scene
    origin: str  # the input entry it came from, e.g. 'inputs[0].glob'
    layer: str  # merged output: the layer it goes to
    prompts: str | None  # prompt file (prompt mode), or None (automatic mode)
    output: Path  # its GeoPackage: the result (per_scene) or a part of the merged file
    record: Path  # the JSON record of the run that made ``output``

    @property
    def mode(self) -> str:
        return "prompts" if self.prompts else "automatic"


@dataclass(frozen=True)
class Plan:
    pipeline: Pipeline
    jobs: tuple[SceneJob, ...]
    merged: Path | None  # the merged GeoPackage, or None for per-scene outputs

    @property
    def merged_record(self) -> Path | None:
        return None if self.merged is None else _record_path(self.merged)


@dataclass
class SceneOutcome:
    job: SceneJob
    status: str  # 'done' (run now), 'skipped' (finished earlier), 'failed'
    objects: int = 0
    seconds: float = 0.0
    message: str = ""
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


# ---- planning ------------------------------------------------------------------------------------


def plan(pipeline: Pipeline) -> Plan:
    """The scenes of a pipeline and their outputs; PipelineError lists every missing input at once."""
    problems: list[str] = []
    found: list[tuple[str, str, Input, str]] = []  # (name, path, entry, origin)
    for i, entry in enumerate(pipeline.entries):
        origin = f"inputs[{i}]" + ("" if isinstance(pipeline.inputs[i], str) else f".{entry.kind}")
        for name, path in _expand(pipeline, entry, origin, problems):
            found.append((name, path, entry, origin))
    merged = None
    if pipeline.output.mode == "merged":
        merged = Path(pipeline.resolve(pipeline.output.path))
        folder = merged.with_name(f"{merged.stem}.parts")
    else:
        folder = Path(pipeline.resolve(pipeline.output.path))
    jobs, seen = [], {}
    for name, path, entry, origin in found:
        if name in seen:
            problems.append(
                f"{origin}: scene name '{name}' ({path}) is also the name of {seen[name]}; "
                "scene names (file stems) must be unique: give the inputs a name, or split the pipeline"
            )
            continue
        seen[name] = path
        if _UNSAFE.search(name):
            problems.append(f"{origin}: scene name {name!r}: use letters, digits, '.', '-' and '_' only")
            continue
        prompts = entry.prompts or pipeline.prompts.file
        if prompts is not None:
            where = f"{origin.split('.')[0]}.prompts" if entry.prompts else "prompts.file"
            prompts = pipeline.resolve(prompts.replace("{scene}", name))
            if "://" not in prompts and not prompts.startswith("/vsi") and not Path(prompts).is_file():
                problems.append(f"{where}: {prompts} (scene {name}): no such prompt file")
        output = folder / f"{name}.gpkg"
        layer = entry.layer or pipeline.output.layer
        jobs.append(SceneJob(name, path, origin, layer, prompts, output, _record_path(output)))
    if problems:
        raise pipeline.fail(problems)
    return Plan(pipeline, tuple(jobs), merged)


def _expand(pipeline: Pipeline, entry: Input, origin: str, problems: list[str]) -> list[tuple[str, str]]:
    """(scene name, raster path) pairs of one input entry; problems for what is missing."""
    value = pipeline.resolve(entry.value)
    remote = "://" in value or value.startswith("/vsi")
    if entry.kind == "path":
        if not remote and not Path(value).exists():
            problems.append(f"{origin}: {value}: no such file")
            return []
        return [(entry.name or _stem(value), value)]
    if entry.kind == "glob":
        paths = sorted(p for p in globbing.glob(value, recursive=True) if Path(p).is_file())
        if not paths:
            problems.append(f"{origin}: {value!r} matches no file")
        return [(_stem(p), p) for p in paths]
    if not Path(value).is_file():
        problems.append(f"{origin}: {value}: no such file")
        return []
    if entry.kind == "list":
        return _list_file(Path(value), origin, problems)
    return _stac_item(Path(value), entry, origin, problems)


def _list_file(path: Path, origin: str, problems: list[str]) -> list[tuple[str, str]]:
    scenes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        remote = "://" in line or line.startswith("/vsi")
        scene = line if remote or Path(line).is_absolute() else str(path.parent / line)
        if not remote and not Path(scene).exists():
            problems.append(f"{origin}: {path} line {number}: {scene}: no such file")
            continue
        scenes.append((_stem(scene), scene))
    if not scenes and not problems:
        problems.append(f"{origin}: {path} lists no scene")
    return scenes


def _stac_item(path: Path, entry: Input, origin: str, problems: list[str]) -> list[tuple[str, str]]:
    try:
        item = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{origin}: {path}: not a readable STAC item ({exc})")
        return []
    assets = item.get("assets") if isinstance(item, dict) else None
    if not isinstance(assets, dict) or item.get("type") != "Feature":
        problems.append(f"{origin}: {path}: not a STAC item (a GeoJSON Feature with assets)")
        return []
    key = entry.asset
    if key is None:
        rasters = [k for k, a in assets.items() if "tiff" in str(a.get("type", "")).lower()]
        key = "visual" if "visual" in assets else (rasters[0] if rasters else None)
        if key is None:
            problems.append(
                f"{origin}: {path}: no GeoTIFF asset; name one with asset (assets: {', '.join(assets)})"
            )
            return []
    if key not in assets:
        problems.append(f"{origin}.asset: {path} has no asset {key!r}; assets: {', '.join(assets)}")
        return []
    href = str(assets[key].get("href", ""))
    href = href.removeprefix("file://")
    remote = "://" in href or href.startswith("/vsi")
    scene = href if remote or Path(href).is_absolute() else str(path.parent / href)
    if not remote and not Path(scene).exists():
        problems.append(f"{origin}: {path} asset {key!r}: {scene}: no such file")
        return []
    return [(entry.name or str(item.get("id") or path.stem), scene)]


def _stem(path: str) -> str:
    name = Path(path.split("?", 1)[0]).name
    if name.startswith("."):
        name = name.lstrip(".")
    for suffix in (".tif", ".tiff", ".vrt", ".jp2", ".img"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def _record_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.run.json")


def _read_options(pipeline: Pipeline) -> dict[str, Any]:
    r = pipeline.read
    return {"bands": r.bands, "percentiles": r.percentiles, "stretch_8bit": r.stretch_8bit,
            "resolution": r.resolution, "pixel_coordinates": r.pixel_coordinates}  # fmt: skip


def open_scenes(plan: Plan) -> dict[str, Scene]:
    """Every scene opened (georeferencing, bands, stretch): every problem listed before any work."""
    scenes, problems = {}, []
    for job in plan.jobs:
        try:
            scenes[job.name] = open_scene(job.path, **_read_options(plan.pipeline))
        except GeosamError as exc:
            problems.append(f"scene {job.name}: {exc}")
    if problems:
        raise plan.pipeline.fail(problems)
    return scenes


def read_groups(plan: Plan, scenes: dict[str, Scene]) -> dict[str, tuple[list, Any]]:
    """Prompt groups of each prompt-mode scene, reprojected to its CRS; each file read once."""
    from geosam.prompts import PromptError, read_prompts, reproject

    p = plan.pipeline.prompts
    files: dict[str, Any] = {}
    out, problems = {}, []
    for job in plan.jobs:
        if job.prompts is None:
            continue
        try:
            if job.prompts not in files:
                files[job.prompts] = read_prompts(
                    job.prompts, layer=p.layer, id_field=p.id_field, label_field=p.label_field
                )
            groups, crs = files[job.prompts]
            scene = scenes[job.name]
            inside = reproject(groups, crs, scene.crs) if scene.crs is not None else groups
        except PromptError as exc:
            problems.append(f"scene {job.name}: {exc}")
            continue
        west, south, east, north = scene.bounds
        count = sum(
            1
            for g in inside
            if not (g.bounds[2] < west or g.bounds[0] > east or g.bounds[3] < south or g.bounds[1] > north)
        )
        out[job.name] = (groups, crs, count)
    if problems:
        raise plan.pipeline.fail(problems)
    return out


# ---- run keys ------------------------------------------------------------------------------------


def _identity(path: str) -> dict[str, Any]:
    if "://" in path or path.startswith("/vsi"):
        return {"path": path}
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_identity(source: Any) -> dict[str, Any]:
    """What identifies the model: its spec and, for a known checkpoint, the checkpoint's sha256."""
    identity: dict[str, Any] = {"model": repr(source)}
    try:
        from geosam.models.weights import known

        identity["sha256"] = known(source.name).sha256
    except GeosamError:
        pass
    return identity


def run_key(plan: Plan, job: SceneJob, model: dict[str, Any]) -> str:
    """A hash of everything that decides a scene's result."""
    p = plan.pipeline
    parts: dict[str, Any] = {
        "scene": _identity(job.path),
        "read": dataclasses.asdict(p.read),
        "model": model,
        "filters": dataclasses.asdict(p.filters),
    }
    if job.prompts is None:
        parts["tiling"] = dataclasses.asdict(p.tiling)
    else:
        settings = dataclasses.asdict(p.prompts)
        settings.pop("cache")  # where embeddings are kept does not change the result
        parts["prompts"] = {**settings, "file": _identity(job.prompts)}
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(path: Path, record: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def status(output: Path, record: Path, key: str) -> str:
    """'done' (output exists, made with this key), 'stale' (exists otherwise) or 'todo'."""
    if not output.exists():
        return "todo"
    found = _read_record(record)
    return "done" if found is not None and found.get("key") == key else "stale"


def _merged_key(keys: dict[str, str], plan: Plan) -> str:
    layers = [(j.name, j.layer, keys[j.name]) for j in plan.jobs]
    return hashlib.sha256(json.dumps(layers).encode()).hexdigest()


# ---- estimates and the dry run -------------------------------------------------------------------


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


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _cluster(pipeline: Pipeline, workers: int | None, scheduler: str | None) -> tuple[int | None, str | None]:
    """The cluster to use: command-line choices over the pipeline's."""
    if scheduler:
        return None, scheduler
    if workers is not None:
        return workers, None
    return pipeline.cluster.workers, pipeline.cluster.scheduler


def dry_run(
    pipeline: Pipeline,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    model: Any = None,
    overwrite: bool = False,
) -> str:
    """The plan as text: scenes, size, CRS, tiles, an estimated time and what a run would do."""
    from geosam.pipeline import default_workers

    the_plan = plan(pipeline)
    scenes = open_scenes(the_plan)
    groups = read_groups(the_plan, scenes)
    source = model if model is not None else _model_spec(pipeline)
    identity = model_identity(source)
    workers, scheduler = _cluster(pipeline, workers, scheduler)
    if not any(job.prompts is None for job in the_plan.jobs):
        cluster, parallel = "none: prompt mode runs in this process", 1
    elif scheduler:
        cluster, parallel = f"the Dask scheduler at {scheduler} (estimate for one worker)", 1
    elif workers == 0:
        cluster, parallel = "this process (no Dask)", 1
    else:
        n = workers or default_workers(getattr(source, "device", "cpu"))
        cluster, parallel = f"a local Dask cluster of {_n(n, 'worker')}", os.cpu_count() or 1  # all cores
    rows, total, todo_total = [], 0.0, 0.0
    for job in the_plan.jobs:
        scene = scenes[job.name]
        prompts = groups[job.name][2] if job.name in groups else None
        count, seconds = estimate(the_plan, scene, job, prompts, parallel)
        state = status(job.output, job.record, run_key(the_plan, job, identity))
        if state == "stale" and (overwrite or the_plan.merged is not None):
            state = "todo"  # parts of a merged output are the pipeline's own: replaced without asking
        total += seconds
        todo_total += seconds if state == "todo" else 0.0
        crs = scene.crs.to_string() if scene.crs else "none"
        work = _n(count, "tile") if job.prompts is None else _n(count, "prompt")
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
        "  ".join(h.ljust(w) for h, w in zip(heads, widths)) + "  estimate  status",
    ]
    for r in rows:
        lines.append(
            "  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + f"  {r[5]:>8}  {STATUS_TEXT[r[6]]}"
        )
    todo = sum(r[6] == "todo" for r in rows)
    stale = sum(r[6] == "stale" for r in rows)
    lines += [
        "",
        f"{_n(len(rows), 'scene')}: {todo} to run, {len(rows) - todo - stale} finished earlier"
        + (f", {stale} with outputs from other settings (pass --overwrite to replace them)" if stale else ""),
        f"estimated time: {duration(todo_total)} (all scenes: {duration(total)})",
        (
            f"(estimates: {ENCODE_S:g} s per 1024-px tile or prompt window for the image encoder and "
            f"{DECODE_S:g} s per decoded prompt, measured with MobileSAM on one worker of a 2-core CPU; "
            "tiles all nodata take no time)"
        ),
    ]
    return "\n".join(lines)


# ---- running -------------------------------------------------------------------------------------


def _model_spec(pipeline: Pipeline):
    from geosam.models import AutomaticParams, ModelSpec

    m = pipeline.model
    params = AutomaticParams(
        points_per_side=m.points_per_side,
        points_per_batch=m.points_per_batch,
        pred_iou_thresh=m.pred_iou_thresh,
        stability_score_thresh=m.stability_thresh,
    )
    return ModelSpec(
        m.name, m.device, params, checkpoint=m.checkpoint and pipeline.base / m.checkpoint, architecture=m.architecture,
        backend=m.backend, precision=m.precision,
    )  # fmt: skip


def run(
    pipeline: Pipeline,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    model: Any = None,
    on_scene: Callable[[SceneOutcome], None] | None = None,
    on_tile: Callable[[SceneJob, int], None] | None = None,
) -> Summary:
    """Run every scene not finished before; return what happened to each.

    Everything is checked first (inputs, scenes, prompt files, outputs, the model); then scenes run
    one after another, their tiles on one Dask cluster: a local one of ``workers`` processes, the
    scheduler at ``scheduler``, or the pipeline's cluster. A scene that fails is reported in the
    summary and the others go on; its next run retries it. ``model`` replaces the pipeline's model
    (a model source with ``check``/``load``; tests use stand-ins). ``on_tile(job, total)`` is called
    as each tile finishes (progress).
    """
    started = time.perf_counter()
    the_plan = plan(pipeline)
    scenes = open_scenes(the_plan)
    groups = read_groups(the_plan, scenes)
    source = model if model is not None else _model_spec(pipeline)
    identity = model_identity(source)
    keys = {job.name: run_key(the_plan, job, identity) for job in the_plan.jobs}
    states = {job.name: status(job.output, job.record, keys[job.name]) for job in the_plan.jobs}
    _check_outputs(the_plan, states, keys, overwrite)
    todo = [job for job in the_plan.jobs if states[job.name] != "done"]
    if todo:
        source.check()
    workers, scheduler = _cluster(pipeline, workers, scheduler)
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
            if states[job.name] == "done":
                record = _read_record(job.record) or {}
                outcome = SceneOutcome(job, "skipped", int(record.get("objects", 0)))
            else:
                outcome = _run_scene(the_plan, job, scenes[job.name], groups.get(job.name), source, loaded,
                                     keys[job.name], scheduler is None, address, on_tile)  # fmt: skip
            summary.outcomes.append(outcome)
            if on_scene is not None:
                on_scene(outcome)
    if the_plan.merged is not None and not summary.failed:
        summary.merged_written = _merge(the_plan, keys)
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def _client(workers: int | None, scheduler: str | None, device: str) -> Iterator[Any]:
    from geosam.pipeline import dask_client

    with dask_client(workers, scheduler, device) as client:
        yield client


def _check_outputs(plan: Plan, states: dict[str, str], keys: dict[str, str], overwrite: bool) -> None:
    """Fail before any work where an output cannot be written, or exists and may not be replaced."""
    pipeline = plan.pipeline
    if plan.merged is not None:
        _make_folder(pipeline, plan.merged.with_name(f"{plan.merged.stem}.parts"))
        io.check_output(plan.merged, overwrite=True)  # writable
        record = _read_record(plan.merged_record)
        current = record is not None and record.get("key") == _merged_key(keys, plan)
        if plan.merged.exists() and not current and not overwrite:
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
        io.check_output(plan.jobs[0].output, overwrite=True)


def _make_folder(pipeline: Pipeline, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise pipeline.fail([f"output.path: cannot create the folder {folder} ({reason(exc)})"]) from None


def _run_scene(plan, job, scene, groups, source, loaded, key, local, address, on_tile) -> SceneOutcome:
    started = time.perf_counter()
    try:
        if job.prompts is None:
            frame, skipped = _automatic(plan, job, scene, source, local, address, on_tile), 0
        else:
            frame, skipped = _prompted(plan, scene, groups, source, loaded)
        frame = _filter(plan.pipeline, frame, scene, renumber=job.prompts is None)
        io.write(frame, job.output, overwrite=True)
    except GeosamError as exc:
        log.debug("scene %s failed", job.name, exc_info=True)
        return SceneOutcome(job, "failed", seconds=time.perf_counter() - started, message=str(exc))
    seconds = time.perf_counter() - started
    _write_record(job.record, {
        "key": key, "scene": job.path, "objects": len(frame), "seconds": round(seconds, 3),
        "geosam": __version__, "pipeline": plan.pipeline.source, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })  # fmt: skip
    return SceneOutcome(job, "done", len(frame), seconds, skipped_prompts=skipped)


def _automatic(plan, job, scene, source, local, address, on_tile) -> gpd.GeoDataFrame:
    """The scene's objects, its tiles on the cluster at ``address`` (``local``: the one this run
    started, whose workers share the cores) or in this process."""
    from geosam.pipeline import segment

    p = plan.pipeline
    total = len(TileGrid(scene.width, scene.height, p.tiling.tile_size, p.tiling.overlap))
    return segment(
        job.path, model=source, tile_size=p.tiling.tile_size, overlap=p.tiling.overlap,
        prompt_rounds=p.tiling.prompt_rounds,
        min_area=p.filters.min_area, simplify=p.filters.simplify,
        workers=0 if address is None else None, scheduler=address, threads=0 if local else None,
        on_tile=(lambda result: on_tile(job, total)) if on_tile else None, **_read_options(p),
    )  # fmt: skip


def _prompted(plan, scene, groups, source, loaded) -> tuple[gpd.GeoDataFrame, int]:
    from geosam.session import Session

    prompt_groups, crs, _ = groups
    if not loaded:
        loaded.append(source.load())
    session = Session(scene, loaded[0], cache=plan.pipeline.prompts.cache)
    frame = session.predict(prompts=prompt_groups, crs=crs)
    return frame, len(frame.attrs.get("skipped", []))


def _filter(pipeline: Pipeline, frame: gpd.GeoDataFrame, scene: Scene, renumber: bool) -> gpd.GeoDataFrame:
    """Score and area filters (automatic mode applies area and simplify while building its frame)."""
    f = pipeline.filters
    frame = frame.copy()
    frame.attrs = {}
    if not renumber and f.simplify > 0 and len(frame):  # prompt mode: simplify by pixels, in map units
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
    keep = frame["score"] >= f.min_score
    if not renumber:
        keep &= frame["area_m2"] >= f.min_area
    frame = frame[keep].reset_index(drop=True)
    if renumber:
        frame["id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def _merge(plan: Plan, keys: dict[str, str]) -> bool:
    """Write the merged GeoPackage from the parts, unless it is already current; True if written."""
    import pandas as pd
    import pyogrio

    key = _merged_key(keys, plan)
    record = _read_record(plan.merged_record)
    if plan.merged.exists() and record is not None and record.get("key") == key:
        return False
    layers: dict[str, list[gpd.GeoDataFrame]] = {}
    for job in plan.jobs:
        part = pyogrio.read_dataframe(job.output, layer=io.LAYER)
        part.insert(0, "scene", job.name)
        layers.setdefault(job.layer, []).append(part)
    frames = {}
    for layer, parts in layers.items():
        crs = next((p.crs for p in parts if p.crs is not None), None)
        if crs is not None and any(p.crs is None for p in parts):
            raise plan.pipeline.fail([f"output: layer {layer!r} mixes scenes with and without a CRS"])
        parts = [p.to_crs(crs) if crs is not None and p.crs != crs else p for p in parts]
        frames[layer] = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=crs)
    io.write_layers(frames, plan.merged, overwrite=True)
    _write_record(
        plan.merged_record, {"key": key, "scenes": [j.name for j in plan.jobs], "geosam": __version__}
    )
    return True
