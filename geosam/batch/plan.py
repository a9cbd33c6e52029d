"""A pipeline's plan: its inputs expanded to scene jobs, each scene opened and its prompts read,
every problem listed before any work starts.
"""

from __future__ import annotations

import glob as globbing
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosam.batch.config import Input, Pipeline
from geosam.batch.records import record_path, scene_key
from geosam.errors import GeosamError, InputError
from geosam.evaluation import vector_source
from geosam.fingerprint import model_identity
from geosam.georef import Scene, is_remote, open_scene
from geosam.models import AutomaticParams, ModelSpec

_UNSAFE = re.compile(r"[^\w.-]|^\.")  # scene names become file names

if TYPE_CHECKING:
    from geosam.prompts import PromptGroup


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


def plan(pipeline: Pipeline) -> Plan:
    """The scenes of a pipeline and their outputs; PipelineError lists every missing input at once."""
    problems: list[str] = []
    found: list[tuple[str, str, Input, str]] = []  # (name, path, entry, origin)
    for i, entry in enumerate(pipeline.entries):
        origin = f"inputs[{i}]" + ("" if isinstance(pipeline.inputs[i], str) else f".{entry.kind}")
        for name, path in _expand(pipeline, entry, origin, problems):
            found.append((name, path, entry, origin))
    merged = None
    if pipeline.output.mode != "per_scene":  # one file: merged, or the dates' change or tracks
        merged = Path(pipeline.resolve(pipeline.output.path))
        folder = merged.with_name(f"{merged.stem}.parts")
    else:
        folder = Path(pipeline.resolve(pipeline.output.path))
    jobs: list[SceneJob] = []
    seen: dict[str, str] = {}
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
        prompts = _prompt_file(pipeline, entry, name, origin, problems)
        output = folder / f"{name}.gpkg"
        layer = entry.layer or pipeline.output.layer
        jobs.append(SceneJob(name, path, origin, layer, prompts, output, record_path(output)))
    if problems:
        raise pipeline.fail(problems)
    return Plan(pipeline, tuple(jobs), merged)


def _prompt_file(pipeline: Pipeline, entry: Input, name: str, origin: str, problems: list[str]) -> str | None:
    """The prompt file of a scene (None: automatic mode), as its path (``FILE|layername=NAME`` too);
    problems for one that is missing."""
    prompts = entry.prompts or pipeline.prompts.file
    if prompts is None:
        return None
    where = f"{origin.split('.')[0]}.prompts" if entry.prompts else "prompts.file"
    prompts = pipeline.resolve(prompts.replace("{scene}", name))
    try:
        file = vector_source(prompts)[0]
    except InputError as exc:
        problems.append(f"{where}: {exc}")
        return prompts
    if not is_remote(file) and not Path(file).is_file():
        problems.append(f"{where}: {file} (scene {name}): no such prompt file")
    return prompts


def _expand(pipeline: Pipeline, entry: Input, origin: str, problems: list[str]) -> list[tuple[str, str]]:
    """(scene name, raster path) pairs of one input entry; problems for what is missing."""
    value = pipeline.resolve(entry.value)
    remote = is_remote(value)
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
        remote = is_remote(line)
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
    remote = is_remote(href)
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


def read_options(pipeline: Pipeline) -> dict[str, Any]:
    r = pipeline.read
    return {"bands": r.bands, "nodata": r.nodata, "percentiles": r.percentiles, "stretch_8bit": r.stretch_8bit,
            "resolution": r.resolution, "pixel_coordinates": r.pixel_coordinates}  # fmt: skip


def classes_options(pipeline: Pipeline) -> dict[str, Any]:
    """The ``classes`` section as ``segment_scene``'s keywords, its files relative to the pipeline file."""
    c = pipeline.classes
    return {
        "examples": pipeline.resolve(c.examples) if c.examples else None, "class_field": c.class_field,
        "class_model": pipeline.resolve(c.class_model) if c.class_model else None, "keep": c.keep,
        "find_all": c.find_all, "min_class_score": c.min_class_score, "class_outlines": c.class_outlines,
    }  # fmt: skip


def open_scenes(plan: Plan) -> dict[str, Scene]:
    """Every scene opened (georeferencing, bands, stretch): every problem listed before any work."""
    scenes, problems = {}, []
    for job in plan.jobs:
        try:
            scenes[job.name] = open_scene(job.path, **read_options(plan.pipeline))
        except GeosamError as exc:
            problems.append(f"scene {job.name}: {exc}")
    if problems:
        raise plan.pipeline.fail(problems)
    return scenes


@dataclass(frozen=True)
class ScenePrompts:
    """A prompt-mode scene's prompt groups as read (in the file's CRS), and how many lie on the scene."""

    groups: list[PromptGroup]
    crs: Any
    inside: int


def read_groups(plan: Plan, scenes: dict[str, Scene]) -> dict[str, ScenePrompts]:
    """Prompt groups of each prompt-mode scene, reprojected to its CRS; each file read once."""
    from geosam.prompts import PromptError, read_prompts, reproject

    p = plan.pipeline.prompts
    files: dict[str, Any] = {}
    out: dict[str, ScenePrompts] = {}
    problems: list[str] = []
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
        out[job.name] = ScenePrompts(groups, crs, count)
    if problems:
        raise plan.pipeline.fail(problems)
    return out


@dataclass(frozen=True)
class Checked:
    """A pipeline's plan with its inputs checked before any work: every scene opened, every prompt file
    read, the model source and each scene's key (``records.scene_key``)."""

    plan: Plan
    scenes: dict[str, Scene]
    prompts: dict[str, ScenePrompts]
    source: Any
    keys: dict[str, str]


def checked(pipeline: Pipeline, model: Any = None) -> Checked:
    """``Checked`` of a pipeline; ``model`` replaces the pipeline's (a source with ``check``/``load``)."""
    the_plan = plan(pipeline)
    scenes = open_scenes(the_plan)
    prompts = read_groups(the_plan, scenes)
    source = model if model is not None else model_spec(pipeline)
    identity = model_identity(source)
    keys = {job.name: scene_key(pipeline, job.path, job.prompts, identity) for job in the_plan.jobs}
    return Checked(the_plan, scenes, prompts, source, keys)


def model_spec(pipeline: Pipeline) -> ModelSpec:
    """The pipeline's model, as the workers load it."""
    m = pipeline.model
    params = AutomaticParams(
        points_per_side=m.points_per_side,
        points_per_batch=m.points_per_batch,
        pred_iou_thresh=m.pred_iou_thresh,
        stability_score_thresh=m.stability_thresh,
    )
    return ModelSpec(
        m.name, m.device, params, checkpoint=pipeline.base / m.checkpoint if m.checkpoint else None, architecture=m.architecture,
        backend=m.backend, precision=m.precision, offline=m.offline,
    )  # fmt: skip


def cluster_choice(
    pipeline: Pipeline, workers: int | None, scheduler: str | None
) -> tuple[int | None, str | None]:
    """The cluster to use: command-line choices over the pipeline's."""
    if scheduler:
        return None, scheduler
    if workers is not None:
        return workers, None
    return pipeline.cluster.workers, pipeline.cluster.scheduler
