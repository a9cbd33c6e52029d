"""Pipeline files: the typed, validated description of one job over a batch of scenes.

A pipeline file (YAML or TOML) holds the settings groups of ``geosam.settings`` as sections, plus
its inputs and output. pydantic validates the plain data against these dataclasses (strictly: no
string is taken for a number) and writes their JSON Schema (``geosam run --schema``,
``pipelines/schema.json``); this module only words pydantic's errors the way geosam's messages read,
each as ``path.to.key: what is wrong``, all problems of a file together. Relative paths in a
pipeline file are relative to the file's folder (``Pipeline.base``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from geosam import settings
from geosam.errors import InputError
from geosam.settings import (
    Change,
    Classes,
    Cluster,
    Filters,
    Model,
    Outlines,
    Output,
    Prompts,
    Read,
    Tiling,
    setting,
)

VERSION = 1
SCHEMA_ID = "https://geosam.invalid/pipeline.schema.json"  # a name, not a place: nothing is fetched
MAX_PROBLEMS = 10  # problems listed in one message; the rest are counted
_STRICT = {"strict": True, "extra": "forbid"}  # pydantic's config for the dataclasses below
_INTERNAL = ("base", "source")
OVER_TIME = (
    "change",
    "track",
)  # output modes over the scenes as dates of one place  # Pipeline's fields that say where the file was read, not keys of it


class PipelineError(InputError):
    """A pipeline file cannot be read, or describes a job that cannot run as written."""


@dataclass(frozen=True)
class Input:
    """Where scenes come from: exactly one of path, glob, list or stac."""

    __pydantic_config__: ClassVar[dict] = _STRICT

    path: str | None = setting(None, "One raster (any GDAL path: GeoTIFF, COG, VRT, /vsicurl/ URL).")
    glob: str | None = setting(
        None, "A glob pattern of rasters ('**' descends folders), matched in sorted order."
    )
    list: str | None = setting(None, "A text file of raster paths, one a line; '#' starts a comment.")
    stac: str | None = setting(None, "A local STAC item JSON file; the scene is one of its assets.")
    asset: str | None = setting(
        None, "stac only: the asset key [default: 'visual', else the first GeoTIFF asset]."
    )
    name: str | None = setting(
        None, "Scene name (output file and 'scene' field) for path or stac [default: file stem or item id]."
    )
    layer: str | None = setting(None, "Merged output: the layer these scenes go to [default: output.layer].")
    prompts: str | None = setting(
        None,
        "Prompt vector file for these scenes [default: prompts.file]; '{scene}' is replaced by the scene name.",
    )

    @property
    def kind(self) -> str:
        return next(k for k in ("path", "glob", "list", "stac") if getattr(self, k) is not None)

    @property
    def value(self) -> str:
        return str(getattr(self, self.kind))


@dataclass(frozen=True)
class Pipeline:
    """A geosam pipeline: the same job over many scenes."""

    __pydantic_config__: ClassVar[dict] = _STRICT

    inputs: tuple[Input | str, ...] = setting(
        description="Scenes: paths or globs as strings, or {path|glob|list|stac: ...} entries.", min_length=1
    )
    output: Output = setting(description="Where results go.")
    version: Literal[1] = setting(VERSION, "Pipeline format version.")
    description: str | None = setting(None, "Free text: what this pipeline is for.")
    read: Read = setting(settings.READ, "How scenes are read.")
    model: Model = setting(settings.MODEL, "The model and its settings.")
    tiling: Tiling = setting(settings.TILING, "Tiles of automatic mode.")
    prompts: Prompts = setting(settings.PROMPTS, "Prompt mode.")
    filters: Filters = setting(settings.FILTERS, "What is kept.")
    classes: Classes = setting(settings.CLASSES, "Classes from examples (automatic mode).")
    outlines: Outlines = setting(settings.OUTLINES, "The outlines written (geosam.outlines).")
    cluster: Cluster = setting(settings.CLUSTER, "The Dask cluster.")
    change: Change = setting(settings.CHANGE, "Objects through time (output.mode change or track).")
    # where the file was read from, set by ``parse``: not keys of the file (see _INTERNAL)
    base: Path = dataclasses.field(default=Path("."), compare=False)  # relative paths start here
    source: str = dataclasses.field(default="pipeline", compare=False)  # the file, for messages

    @property
    def entries(self) -> tuple[Input, ...]:
        """``inputs`` with strings expanded: a string with * ? or [ is a glob, otherwise a path."""
        return tuple(
            (Input(glob=i) if any(c in i for c in "*?[") else Input(path=i)) if isinstance(i, str) else i
            for i in self.inputs
        )

    def resolve(self, path: str) -> str:
        """A path from the pipeline file, relative to its folder; URLs and /vsi paths as they are."""
        from geosam.georef import is_remote  # rasterio: not for reading the file alone

        if is_remote(path):
            return path
        return str(self.base / Path(path).expanduser()) if not Path(path).expanduser().is_absolute() else path

    def fail(self, problems: list[str]) -> PipelineError:
        return PipelineError(f"{self.source}: {_join(problems)}")


# ---- loading and validation ----------------------------------------------------------------------


def load(path: str | Path) -> Pipeline:
    """Read and validate a pipeline file (.yaml, .yml or .toml)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such pipeline file; check the path")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read the pipeline file ({exc})") from None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise PipelineError(f"{path}: not valid YAML ({where}{getattr(exc, 'problem', exc)})") from None
    elif suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PipelineError(f"{path}: not valid TOML ({exc})") from None
    else:
        raise PipelineError(f"{path}: unsupported pipeline format; name it .yaml, .yml or .toml")
    return parse(raw, base=path.parent, source=str(path))


def parse(raw: Any, base: str | Path = ".", source: str = "pipeline") -> Pipeline:
    """A ``Pipeline`` from plain data (a parsed YAML/TOML document); PipelineError lists every problem."""
    from pydantic import TypeAdapter, ValidationError

    raw = {} if raw is None else raw
    problems = [f"{k}: unknown key; known keys: {', '.join(_keys(Pipeline))}" for k in _INTERNAL if k in raw]
    try:  # as JSON: lists are tuples there, and strict mode takes no string for a number
        pipeline = TypeAdapter(Pipeline).validate_json(json.dumps(raw, default=str))
    except ValidationError as exc:
        raise PipelineError(f"{source}: {_join(problems + _problems(exc.errors()))}") from None
    problems += _check(pipeline)
    if problems:
        raise PipelineError(f"{source}: {_join(problems)}")
    return dataclasses.replace(pipeline, base=Path(base), source=source)


def json_schema() -> dict:
    """The pipeline format as JSON Schema (draft 2020-12), generated by pydantic from the dataclasses."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(Pipeline).json_schema()
    for key in _INTERNAL:
        del schema["properties"][key]
    schema["$defs"]["Input"]["oneOf"] = [{"required": [k]} for k in ("path", "glob", "list", "stac")]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def _check(p: Pipeline) -> list[str]:
    """Rules that involve more than one key."""
    return _check_inputs(p) + _check_settings(p)


def _check_inputs(p: Pipeline) -> list[str]:
    problems = []
    for i, entry in enumerate(p.inputs):
        if isinstance(entry, str):
            continue
        where = f"inputs[{i}]"
        given = [k for k in ("path", "glob", "list", "stac") if getattr(entry, k) is not None]
        if len(given) != 1:
            problems.append(
                f"{where}: give exactly one of path, glob, list, stac"
                + (f" (got {', '.join(given)})" if given else "")
            )
            continue
        if entry.asset is not None and entry.kind != "stac":
            problems.append(f"{where}.asset: applies to stac inputs only")
        if entry.name is not None and entry.kind not in ("path", "stac"):
            problems.append(
                f"{where}.name: a {entry.kind} gives several scenes, named after their files; name path or stac inputs only"
            )
        if entry.layer is not None and p.output.mode != "merged":
            problems.append(f"{where}.layer: layers apply to output.mode merged only")
    return problems


def _check_settings(p: Pipeline) -> list[str]:
    problems = []
    if p.tiling.overlap >= p.tiling.tile_size:
        problems.append(
            f"tiling.overlap: {p.tiling.overlap} px must be smaller than tiling.tile_size {p.tiling.tile_size} px"
        )
    if p.read.bands is not None and len(p.read.bands) == 2:
        problems.append("read.bands: choose 1 or 3 bands, not 2")
    low, high = p.read.percentiles
    if not low < high:
        problems.append(f"read.percentiles: [{low:g}, {high:g}]: use LOW < HIGH")
    suffix = Path(p.output.path).suffix.lower()
    if p.output.mode in (*OVER_TIME, "merged") and suffix != ".gpkg":
        problems.append(
            f"output.path: {p.output.path}: a {p.output.mode} output is one GeoPackage; name it *.gpkg"
        )
    if p.output.mode == "per_scene" and suffix == ".gpkg":
        problems.append(
            f"output.path: {p.output.path}: per_scene output is a folder of SCENE.gpkg files; "
            "give a folder, or set output.mode: merged"
        )
    if p.cluster.scheduler is not None and p.cluster.workers is not None:
        problems.append("cluster: give workers (a local cluster) or scheduler (an existing one), not both")
    return problems


# ---- pydantic's errors, worded as geosam's -------------------------------------------------------

_KINDS = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}


def _problems(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per problem, in the file's order; a union's failed alternatives become one line."""
    out: dict[str, str] = {}
    for error in errors:
        loc = _location(error["loc"])
        where = _where(loc) or "pipeline"
        if where in out:
            continue  # the union's other alternatives, worded with the first
        out[where] = f"{where}: {_word(error, loc)}"
    return list(out.values())


def _location(loc: tuple) -> tuple:
    """The location in the file: pydantic's location without the names of a union's branches."""
    branches = ("Input", "str", "int", "float")
    return tuple(p for p in loc if not (isinstance(p, str) and (p in branches or p.startswith("tuple["))))


def _where(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _word(error: Mapping[str, Any], loc: tuple) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    tp = _field_type(loc)
    if kind == "missing":
        return "required key missing"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        known = _keys(_owner(loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.8)
        return (
            f"unknown key; did you mean '{close[0]}'?"
            if close
            else f"unknown key; known keys: {', '.join(known)}"
        )
    if kind == "literal_error":
        return f"{_describe(value)} is not one of {', '.join(map(str, typing.get_args(_strip(tp))))}"
    if kind in ("too_short", "too_long"):
        low, high = _limit(loc, "min_length"), _limit(loc, "max_length")
        span = f"at least {low}" if high is None else f"{low} to {high}"
        return f"give {span} item{'s' * (span != 'at least 1')}, not {ctx.get('actual_length', len(value or ()))}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        low, high, above = _limit(loc, "ge"), _limit(loc, "le"), _limit(loc, "gt")
        if above is not None:
            return f"{value:g} is out of range: give a number above {above:g}"
        if low is not None and high is not None:
            return f"{value:g} is out of range: use {low:g} to {high:g}"
        return f"{value:g} is out of range: " + (
            f"use at least {low:g}" if low is not None else f"use at most {high:g}"
        )
    return f"expected {_expected(tp)}, got {_describe(value)}"


def _keys(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if not (cls is Pipeline and f.name in _INTERNAL)]


def _owner(loc: tuple) -> Any:
    """The dataclass that holds the key at ``loc`` (the list items' type for a list index)."""
    tp: Any = Pipeline
    for part in loc:
        tp = _strip(tp)
        if isinstance(part, int):
            tp = (
                next(a for a in typing.get_args(tp) if a is not Ellipsis)
                if typing.get_origin(tp) is tuple
                else tp
            )
            continue
        tp = typing.get_type_hints(_dataclass(tp), include_extras=True)[part]
    return _dataclass(_strip(tp))


def _dataclass(tp: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        return tp
    return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), tp)


def _field_type(loc: tuple) -> Any:
    if not loc:
        return Pipeline
    if isinstance(loc[-1], int):
        container = _strip(_field_type(loc[:-1]))
        args = [a for a in typing.get_args(container) if a is not Ellipsis]
        return args[min(loc[-1], len(args) - 1)] if args else Any
    return typing.get_type_hints(_owner(loc[:-1]), include_extras=True).get(loc[-1], Any)


def _strip(tp: Any) -> Any:
    """A type without None and without Annotated's metadata."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if type(None) in typing.get_args(tp) and len(args) == 1:
        return _strip(args[0])
    return tp


def _limit(loc: tuple, name: str) -> Any:
    """A limit of the key at ``loc``: the field's (settings metadata) or its items' (Annotated)."""
    if isinstance(loc[-1], int):  # an item of a list: its own limits; the list's length limits
        if name not in ("min_length", "max_length"):
            return settings.item_limits(_owner(loc[:-2]), loc[-2]).get(name)
        loc = loc[:-1]
    owner = _owner(loc[:-1])
    return settings.field(owner, loc[-1]).metadata.get(name)


def _expected(tp: Any) -> str:
    tp = _strip(tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if typing.get_origin(tp) is tuple:
        return "a list"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if typing.get_args(tp):
        return " or ".join(_expected(a) for a in typing.get_args(tp) if a is not type(None))
    return _KINDS.get(tp, str(tp))


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = _KINDS.get(type(value), type(value).__name__)
    return f"{kind} ({value!r})"


def _join(problems: list[str]) -> str:
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")
