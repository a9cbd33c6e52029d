"""Pipeline files: the typed, validated description of one job over many scenes.

A pipeline file (YAML or TOML) is read into frozen dataclasses. The dataclasses are the one source
of truth: the validator walks their type hints and field metadata, and the JSON Schema for editors
(``geosam run --schema``, ``pipelines/schema.json``) is generated from the same definitions.
Problems are collected and reported together, each as ``path.to.key: what is wrong``.
Relative paths in a pipeline file are relative to the file's folder (``Pipeline.base``).
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geosam.errors import InputError

VERSION = 1
SCHEMA_ID = "https://geosam.invalid/pipeline.schema.json"  # a name, not a place: nothing is fetched
MAX_PROBLEMS = 10  # problems listed in one message; the rest are counted


class PipelineError(InputError):
    """A pipeline file cannot be read, or describes a job that cannot run as written."""


def _opt(default: Any = dataclasses.MISSING, doc: str = "", **limits: Any) -> Any:
    """A field with its documentation and limits (``minimum``, ``maximum``, ``exclusiveMinimum``...)."""
    metadata = {"doc": doc, **limits}
    if isinstance(default, (list, dict)):
        raise TypeError("mutable default")
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Input:
    """Where scenes come from: exactly one of path, glob, list or stac."""

    path: str | None = _opt(None, "One raster (any GDAL path: GeoTIFF, COG, VRT, /vsicurl/ URL).")
    glob: str | None = _opt(
        None, "A glob pattern of rasters ('**' descends folders), matched in sorted order."
    )
    list: str | None = _opt(None, "A text file of raster paths, one a line; '#' starts a comment.")
    stac: str | None = _opt(None, "A local STAC item JSON file; the scene is one of its assets.")
    asset: str | None = _opt(
        None, "stac only: the asset key [default: 'visual', else the first GeoTIFF asset]."
    )
    name: str | None = _opt(
        None, "Scene name (output file and 'scene' field) for path or stac [default: file stem or item id]."
    )
    layer: str | None = _opt(None, "Merged output: the layer these scenes go to [default: output.layer].")
    prompts: str | None = _opt(
        None,
        "Prompt vector file for these scenes [default: prompts.file]; '{scene}' is replaced by the scene name.",
    )

    @property
    def kind(self) -> str:
        return next(k for k in ("path", "glob", "list", "stac") if getattr(self, k) is not None)

    @property
    def value(self) -> str:
        return getattr(self, self.kind)


@dataclass(frozen=True)
class Read:
    """How scenes are read: bands and radiometry (as `geosam segment`'s read options)."""

    bands: tuple[int | str, ...] | None = _opt(
        None, "1 or 3 bands by 1-based index or name, e.g. [3, 2, 1] or [nir, red, green] [default: RGB / gray].",
        minItems=1, maxItems=3,
    )  # fmt: skip
    percentiles: tuple[float, float] = _opt(
        (2.0, 98.0), "Scene-wide stretch of non-8-bit data: [LOW, HIGH] percentiles mapped to 0..255.",
        minimum=0, maximum=100,
    )  # fmt: skip
    stretch_8bit: bool = _opt(False, "Stretch 8-bit data too.")
    resolution: float | None = _opt(
        None,
        "Resample reads to this pixel size, in the scene CRS's units [default: native].",
        exclusiveMinimum=0,
    )
    pixel_coordinates: bool = _opt(False, "Accept rasters without georeferencing (polygons in pixels).")


@dataclass(frozen=True)
class Model:
    """The model and its automatic-mode settings."""

    name: str = _opt("mobile_sam", "Installed model name (`geosam models list`); a label with checkpoint.")
    checkpoint: str | None = _opt(None, "A SAM state dict (.pt/.pth) to load instead of an installed model.")
    architecture: Literal["vit_t", "vit_b", "vit_l", "vit_h"] | None = _opt(
        None, "Architecture of checkpoint [default: detected from its weights]."
    )
    device: str = _opt("cpu", "Torch device: cpu, cuda, cuda:1, mps.")
    backend: Literal["torch", "onnx"] | None = _opt(
        None, "Runtime of the network: torch or onnx [default: torch; ONNX-only models: onnx]."
    )
    precision: Literal["fp32", "fp16", "bf16"] = _opt(
        "fp32", "Image encoder precision; fp16/bf16 run on torch."
    )
    points_per_side: int = _opt(
        32, "Automatic mode: N×N prompt grid per tile (fewer is faster).", minimum=1, maximum=256
    )
    points_per_batch: int = _opt(16, "Prompts decoded per model call.", minimum=1, maximum=1024)
    pred_iou_thresh: float = _opt(0.88, "Drop masks whose predicted IoU is below this.", minimum=0, maximum=1)
    stability_thresh: float = _opt(
        0.92, "Drop masks whose stability score is below this.", minimum=0, maximum=1
    )


@dataclass(frozen=True)
class Tiling:
    """Tiles of automatic mode, in pixels of the (resampled) grid."""

    tile_size: int = _opt(1024, "Tile size in pixels.", minimum=64, maximum=8192)
    overlap: int = _opt(128, "Overlap between tiles in pixels; smaller than tile_size.", minimum=0)
    prompt_rounds: int = _opt(
        3, "Rounds of point prompts to tiles that missed an object their neighbour saw run into them (0: none).",
        minimum=0, maximum=10,
    )  # fmt: skip


@dataclass(frozen=True)
class Prompts:
    """Prompt mode: scenes with a prompt file get one object per prompt group instead of everything."""

    file: str | None = _opt(
        None, "Prompt vector file shared by all scenes; '{scene}' is replaced by the scene name "
        "(e.g. prompts/{scene}.gpkg for one file per scene).",
    )  # fmt: skip
    layer: str | None = _opt(None, "Layer of the prompt file [default: the first].")
    id_field: str | None = _opt(None, "Field grouping features into one object [default: one object each].")
    label_field: str | None = _opt(
        None, "Field marking points positive or negative [default: 'label' if present]."
    )
    cache: bool = _opt(True, "Keep window embeddings in the on-disk embedding cache.")


@dataclass(frozen=True)
class Filters:
    """What is kept of each scene's objects."""

    min_area: float = _opt(0.0, "Drop objects smaller than this many m² (pixels² without a CRS).", minimum=0)
    simplify: float = _opt(
        0.0, "Simplify outlines by this many pixels (0 keeps exact pixel edges).", minimum=0
    )
    min_score: float = _opt(
        0.0, "Drop objects whose score (predicted IoU) is below this.", minimum=0, maximum=1
    )


@dataclass(frozen=True)
class Output:
    """Where results go."""

    path: str = _opt(doc="per_scene: a folder, one SCENE.gpkg in it per scene; merged: one .gpkg file.")
    mode: Literal["per_scene", "merged"] = _opt(
        "per_scene", "per_scene: one GeoPackage per scene; merged: one GeoPackage, a 'scene' field, "
        "one layer per input layer name.",
    )  # fmt: skip
    layer: str = _opt("objects", "Layer name (merged: for inputs that name no layer).", minLength=1)


@dataclass(frozen=True)
class Cluster:
    """The Dask cluster every scene's tiles run on."""

    workers: int | None = _opt(
        None, "Local worker processes [default: 1 on the CPU, one per core with a GPU]; 0 runs tiles in this process, without Dask.",
        minimum=0,
    )  # fmt: skip
    scheduler: str | None = _opt(
        None, "Address of an existing Dask scheduler, e.g. tcp://host:8786 (workers is then ignored)."
    )


@dataclass(frozen=True)
class Pipeline:
    """A geosam pipeline: the same job over many scenes."""

    inputs: tuple[Input | str, ...] = _opt(
        doc="Scenes: paths or globs as strings, or {path|glob|list|stac: ...} entries.", minItems=1
    )
    output: Output = _opt(doc="Where results go.")
    version: int = _opt(VERSION, "Pipeline format version.", minimum=VERSION, maximum=VERSION)
    description: str | None = _opt(None, "Free text: what this pipeline is for.")
    read: Read = _opt(Read(), "How scenes are read.")
    model: Model = _opt(Model(), "The model and its settings.")
    tiling: Tiling = _opt(Tiling(), "Tiles of automatic mode.")
    prompts: Prompts = _opt(Prompts(), "Prompt mode.")
    filters: Filters = _opt(Filters(), "What is kept.")
    cluster: Cluster = _opt(Cluster(), "The Dask cluster.")
    base: Path = field(default=Path("."), metadata={"internal": True}, compare=False)  # the file's folder
    source: str = field(
        default="pipeline", metadata={"internal": True}, compare=False
    )  # the file, for messages

    @property
    def entries(self) -> tuple[Input, ...]:
        """``inputs`` with strings expanded: a string with * ? or [ is a glob, otherwise a path."""
        return tuple(
            (Input(glob=i) if any(c in i for c in "*?[") else Input(path=i)) if isinstance(i, str) else i
            for i in self.inputs
        )

    def resolve(self, path: str) -> str:
        """A path from the pipeline file, relative to its folder; URLs and /vsi paths as they are."""
        if "://" in path or path.startswith("/vsi"):
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
    problems: list[str] = []
    if raw is None:
        raw = {}
    pipeline = _convert(raw, Pipeline, "", problems)
    if pipeline is not None and not problems:
        problems += _check(pipeline)
    if problems:
        raise PipelineError(f"{source}: {_join(problems)}")
    return dataclasses.replace(pipeline, base=Path(base), source=source)


def _check(p: Pipeline) -> list[str]:
    """Rules that involve more than one key."""
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
    if p.output.mode == "merged" and suffix != ".gpkg":
        problems.append(f"output.path: {p.output.path}: a merged output is one GeoPackage; name it *.gpkg")
    if p.output.mode == "per_scene" and suffix == ".gpkg":
        problems.append(
            f"output.path: {p.output.path}: per_scene output is a folder of SCENE.gpkg files; "
            "give a folder, or set output.mode: merged"
        )
    if p.cluster.scheduler is not None and p.cluster.workers is not None:
        problems.append("cluster: give workers (a local cluster) or scheduler (an existing one), not both")
    return problems


_KINDS = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = {int: "an integer", float: "a number", str: "a string"}.get(type(value), type(value).__name__)
    return f"{kind} ({value!r})"


def _expected(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is tuple:
        return "a list"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(tp) if a is not type(None))
    return _KINDS.get(tp, str(tp))


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _convert(value: Any, tp: Any, where: str, problems: list[str], limits: dict | None = None) -> Any:
    """``value`` as type ``tp``, or None after appending to ``problems``."""
    limits = limits or {}
    origin = typing.get_origin(tp)
    label = where or "pipeline"
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            trial: list[str] = []
            result = _convert(value, option, where, trial, limits)
            if not trial:
                return result
            if _accepts(option, value):  # the right kind, wrong content: report that option's problems
                problems += trial
                return None
        problems.append(f"{label}: expected {_expected(tp)}, got {_describe(value)}")
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{label}: expected a mapping, got {_describe(value)}")
            return None
        return _convert_fields(value, tp, where, problems)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{label}: expected a list, got {_describe(value)}")
            return None
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
            low, high = limits.get("minItems"), limits.get("maxItems")
            if (low is not None and len(value) < low) or (high is not None and len(value) > high):
                span = f"at least {low}" if high is None else f"{low} to {high}"
                problems.append(f"{label}: give {span} item{'s' * (span != 'at least 1')}, not {len(value)}")
                return None
        else:
            item_types = list(args)
            if len(value) != len(args):
                problems.append(f"{label}: expected a list of {len(args)} items, got {len(value)}")
                return None
        before = len(problems)
        items = [
            _convert(v, t, _at(where, i), problems, limits) for i, (v, t) in enumerate(zip(value, item_types))
        ]
        return tuple(items) if len(problems) == before else None
    if origin is Literal:
        if value not in typing.get_args(tp):
            problems.append(
                f"{label}: {_describe(value)} is not one of {', '.join(map(str, typing.get_args(tp)))}"
            )
            return None
        return value
    if not _accepts(tp, value):
        problems.append(f"{label}: expected {_expected(tp)}, got {_describe(value)}")
        return None
    value = float(value) if tp is float else value
    problem = _out_of_range(value, limits)
    if problem:
        problems.append(f"{label}: {problem}")
        return None
    return value


def _accepts(tp: Any, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    if typing.get_origin(tp) is tuple:
        return isinstance(value, list)
    return False


def _out_of_range(value: Any, limits: dict) -> str | None:
    if isinstance(value, str):
        if "minLength" in limits and len(value) < limits["minLength"]:
            return "must not be empty"
        return None
    low, high = limits.get("minimum"), limits.get("maximum")
    above = limits.get("exclusiveMinimum")
    if above is not None and not value > above:
        return f"{value:g} is out of range: give a number above {above:g}"
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            return f"{value:g} is out of range: use {low:g} to {high:g}"
        return (
            f"{value:g} is out of range: use at least {low:g}" if low is not None else f"use at most {high:g}"
        )
    return None


def _public_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _convert_fields(value: dict, cls, where: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in _public_fields(cls)}
    for key in value:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.8)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
            problems.append(f"{_at(where, str(key))}: unknown key; {hint}")
    kwargs, before = {}, len(problems)
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING:
                problems.append(f"{_at(where, name)}: required key missing")
            continue
        kwargs[name] = _convert(value[name], hints[name], _at(where, name), problems, dict(f.metadata))
    if len(problems) != before:
        return None
    return cls(**kwargs)


def _join(problems: list[str]) -> str:
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


# ---- JSON Schema ---------------------------------------------------------------------------------


def json_schema() -> dict:
    """The pipeline format as JSON Schema (draft 2020-12), generated from the dataclasses."""
    defs: dict[str, dict] = {}
    root = _object_schema(Pipeline, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "geosam pipeline",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def _object_schema(cls, defs: dict[str, dict]) -> dict:
    hints = typing.get_type_hints(cls)
    properties, required = {}, []
    for f in _public_fields(cls):
        schema = _type_schema(hints[f.name], defs, f.metadata)
        if f.metadata.get("doc"):
            schema = {"description": f.metadata["doc"], **schema}
        if f.default is dataclasses.MISSING:
            required.append(f.name)
        elif not dataclasses.is_dataclass(f.default):
            schema["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        properties[f.name] = schema
    out = {"description": (cls.__doc__ or "").strip(), "type": "object", "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    if cls is Input:
        out["oneOf"] = [{"required": [k]} for k in ("path", "glob", "list", "stac")]
    return out


def _type_schema(tp: Any, defs: dict[str, dict], limits: Any = None) -> dict:
    limits = {k: v for k, v in dict(limits or {}).items() if k != "doc"}
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_type_schema(a, defs, limits) for a in typing.get_args(tp)]
        return {"anyOf": options}
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placeholder against recursion
            defs[tp.__name__] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin is tuple:
        args = typing.get_args(tp)
        item_limits = {k: v for k, v in limits.items() if k not in ("minItems", "maxItems")}
        if len(args) == 2 and args[1] is Ellipsis:
            schema = {"type": "array", "items": _type_schema(args[0], defs, item_limits)}
            schema.update({k: v for k, v in limits.items() if k in ("minItems", "maxItems")})
            return schema
        return {
            "type": "array",
            "prefixItems": [_type_schema(a, defs, item_limits) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if tp is type(None):
        return {"type": "null"}
    kind = {bool: "boolean", int: "integer", float: "number", str: "string"}[tp]
    schema = {"type": kind}
    keys = (
        ("minLength",) if tp is str else ("minimum", "maximum", "exclusiveMinimum") if tp is not bool else ()
    )
    schema.update({k: v for k, v in limits.items() if k in keys})
    return schema
