"""Every user-facing setting of geosam, once: its type, default, limits and help text.

Each group is a frozen dataclass whose fields carry their limits and help in the field's metadata
(``description``, ``ge``, ``gt``, ``le``, ``min_length``...: pydantic's ``Field`` names, so pydantic
validates the same dataclasses in pipeline files and writes their JSON Schema). Three readers take
everything from here and spell nothing themselves:

- the command line (``geosam.cli.options``): one click option per field, its help, default and range;
- pipeline files (``geosam.batch.config``): the same groups as YAML/TOML sections, validated by pydantic;
- the Python API (``geosam.segment``, ``Session``, ``TileGrid``, ``AutomaticParams``): keyword defaults
  from the module-level instances at the bottom (``READ``, ``MODEL``, ``TILING``...).

Importing this module is cheap (dataclasses and typing only): Dask workers import it too.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le

# metadata keys of geosam's own, beside pydantic's Field names: the option's spelling on the command line
CLI = "cli"  # e.g. ("-m", "--model"); default: --field-name


def setting(default: Any = dataclasses.MISSING, description: str = "", **limits: Any) -> Any:
    """A settings field: its default (immutable), help text and limits (``ge``, ``le``, ``gt``,
    ``min_length``, ``max_length``) or geosam's ``cli`` spelling."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("settings defaults are immutable: use a tuple")
    return dataclasses.field(default=default, metadata={"description": description, **limits})


Architecture = Literal["vit_t", "vit_b", "vit_l", "vit_h"]
Backend = Literal["torch", "onnx"]
Precision = Literal["fp32", "fp16", "bf16"]
OutputMode = Literal["per_scene", "merged", "change", "track"]
OutlineKind = Literal["pixel", "simplify", "smooth", "orthogonal", "orthogonal45", "circle", "auto"]
Radiometry = Literal["matched", "joint"]
Percentile = Annotated[float, Ge(0), Le(100)]
SquareMetres = Annotated[float, Gt(0)]


@dataclass(frozen=True)
class Read:
    """How scenes are read: bands and radiometry."""

    bands: tuple[int | str, ...] | None = setting(
        None, "Bands read as gray (1) or R,G,B (3), by 1-based index or band name, e.g. 3,2,1 or "
        "nir,red,green [default: RGB bands; 1,2,3 of 3- or 4-band scenes; gray for 1 band].",
        min_length=1, max_length=3, cli=("-b", "--bands"),
    )  # fmt: skip
    nodata: float | None = setting(
        None, "Pixels of this value in any band read are nodata, in place of the file's own nodata value, mask "
        "or alpha band (e.g. 0 for a black border the file does not declare).",
    )  # fmt: skip
    percentiles: tuple[Percentile, Percentile] = setting(
        (2.0, 98.0), "LOW,HIGH percentiles of the scene's valid pixels stretched to 0..255 (not 8-bit data)."
    )
    stretch_8bit: bool = setting(False, "Stretch 8-bit data too (they are read as is by default).")
    resolution: float | None = setting(
        None, "Resample reads to this pixel size, in the scene CRS's units (metres for UTM) [default: native].",
        gt=0,
    )  # fmt: skip
    pixel_coordinates: bool = setting(
        False, "Accept a raster without georeferencing; polygons are then in pixel units."
    )


@dataclass(frozen=True)
class Model:
    """The model and its automatic-mode settings."""

    name: str = setting(
        "mobile_sam", "Installed model name (`geosam models list`); a label for the output with checkpoint.",
        cli=("-m", "--model"),
    )  # fmt: skip
    checkpoint: str | None = setting(
        None, "Load this SAM state dict (.pt/.pth) instead of an installed model."
    )
    architecture: Architecture | None = setting(
        None, "Architecture of checkpoint [default: detected from its weights]."
    )
    offline: bool = setting(
        False, "Never download a model that is not installed (first use fetches it); also $GEOSAM_OFFLINE=1."
    )
    device: str = setting("cpu", "Torch device: cpu, cuda, cuda:1, mps.")
    backend: Backend | None = setting(
        None, "Runtime of the network: torch, or onnx (ONNX Runtime, the model exported once beside its "
        "checkpoint) [default: torch, measured faster on CPU; ONNX-only models: onnx].",
    )  # fmt: skip
    precision: Precision = setting(
        "fp32", "Image encoder precision; fp16/bf16 (GPUs; bf16 also recent CPUs) run on torch."
    )
    points_per_side: int = setting(
        32, "Automatic mode: the prompt grid is N×N points per tile (fewer is faster).", ge=1, le=256
    )
    points_per_batch: int = setting(16, "Prompts decoded per model call.", ge=1, le=1024)
    pred_iou_thresh: float = setting(0.88, "Drop masks whose predicted IoU is below this.", ge=0, le=1)
    stability_thresh: float = setting(0.92, "Drop masks whose stability score is below this.", ge=0, le=1)


@dataclass(frozen=True)
class Tiling:
    """Tiles of automatic mode, in pixels of the (resampled) grid."""

    tile_size: int = setting(1024, "Tile size in pixels.", ge=64, le=8192)
    overlap: int = setting(
        128, "Overlap between tiles in pixels, smaller than the tile size; objects smaller than this are "
        "never cut.", ge=1,
    )  # fmt: skip
    prompt_rounds: int = setting(
        3, "Rounds of point prompts to tiles that missed an object their neighbour saw run into them (0: none).",
        ge=0, le=10,
    )  # fmt: skip


@dataclass(frozen=True)
class Prompts:
    """Prompt mode: scenes with a prompt file get one object per prompt group instead of everything."""

    file: str | None = setting(
        None, "Prompt vector file shared by all scenes; '{scene}' is replaced by the scene name "
        "(e.g. prompts/{scene}.gpkg for one file per scene).",
    )  # fmt: skip
    layer: str | None = setting(
        None,
        "Layer of the prompt file, also given as FILE|layername=NAME [default: the first with geometries].",
    )
    id_field: str | None = setting(
        None, "Field grouping prompt features into one object [default: one object each]."
    )
    label_field: str | None = setting(
        None, "Field marking points positive (1, true, fg) or negative (0, false, bg) "
        "[default: 'label' if present].",
    )  # fmt: skip
    cache: bool = setting(True, "Keep window embeddings in the on-disk embedding cache.")


@dataclass(frozen=True)
class Filters:
    """What is kept of each scene's objects."""

    min_area: float = setting(0.0, "Drop objects smaller than this many m² (pixels² without a CRS).", ge=0)
    simplify: float = setting(0.0, "Simplify outlines by this many pixels (0 keeps exact pixel edges).", ge=0)
    min_score: float = setting(0.0, "Drop objects whose score (predicted IoU) is below this.", ge=0, le=1)
    keep_background: bool = setting(
        False,
        "Keep the scene's ground: an object over more than half of the scene's data and across it, left out by default.",
    )


@dataclass(frozen=True)
class Classes:
    """Classes from the analyst's examples: each object's class, and find-them-all."""

    examples: str | None = setting(
        None, "Vector file of examples ('FILE|layername=NAME': one layer of it): points on objects or "
        "polygons around them (any CRS), with a class field; learnt on this scene, every object gets a "
        "class and class_score (class 'background': what is none of them).",
    )  # fmt: skip
    class_field: str = setting("class", "Field of --examples holding each example's class.", min_length=1)
    class_model: str | None = setting(
        None, "Class model file (.json: a run with --examples writes OUT.classes.json) used instead of "
        "--examples, e.g. on another scene.",
    )  # fmt: skip
    keep: tuple[str, ...] | None = setting(
        None, "Write only objects of these classes, e.g. building,tank [default: every class, background too].",
        min_length=1,
    )  # fmt: skip
    find_all: bool = setting(
        True, "With classes: also prompt where a tile looks like a class's examples (find-them-all).",
    )  # fmt: skip
    min_class_score: float = setting(
        0.5, "An object is put in the most probable of the examples' classes when its probability is at "
        "least this, else in background: lower finds more of each class and more that are not.", ge=0, le=1,
    )  # fmt: skip
    class_outlines: tuple[str, ...] | None = setting(
        None, "Outline per class, CLASS=KIND pairs, e.g. building=orthogonal,tank=circle,field=smooth "
        "(kinds as --outline; other classes get --outline).", min_length=1,
    )  # fmt: skip


@dataclass(frozen=True)
class Outlines:
    """The outlines written: pixel-exact, or regularized and smoothed with neighbours kept (``geosam.outlines``)."""

    outline: OutlineKind = setting(
        "pixel", "Outline of every object: pixel (the mask's pixels), simplify (by --simplify px, 1 if 0), smooth "
        "(fields, water), orthogonal (right angles at the dominant direction), orthogonal45 (45° too), circle "
        "(tanks), auto (chosen per object from its shape). Neighbours keep their shared edges.",
    )  # fmt: skip
    fill_holes: float = setting(
        0.0, "Fill holes smaller than this many m² (pixels² without a CRS) in each object.", ge=0
    )
    flat: bool = setting(
        False,
        "A planar partition: where objects overlap (a roof inside its yard), the smaller keeps the area.",
    )
    keep_raw: bool = setting(
        False, "Also write the pixel outlines, as layer objects_raw of the GeoPackage, for comparison."
    )


# a scene of at most this many tiles runs in this process when no workers or scheduler are asked for:
# starting a cluster costs more than it gives (10-15 s of a one-tile command, benchmarks/startup.py)
IN_PROCESS_TILES = 4


@dataclass(frozen=True)
class Cluster:
    """The Dask cluster that tiles run on."""

    workers: int | None = setting(
        None, "Local Dask worker processes [default: 1 on the CPU, one per core with a GPU; segment runs a "
        f"scene of up to {IN_PROCESS_TILES} tiles in this process]; 0 runs tiles in this process, without Dask.",
        ge=0, cli=("-w", "--workers"),
    )  # fmt: skip
    scheduler: str | None = setting(
        None, "Run on an existing Dask cluster: scheduler address (tcp://host:8786) or scheduler file (.json) "
        "[default: $DASK_SCHEDULER_ADDRESS / Dask's scheduler-address setting, else a local cluster].",
    )  # fmt: skip


@dataclass(frozen=True)
class Execution:
    """How one scene's run is carried out: tasks, retries, quick-looks (command line and API)."""

    tiles_per_task: int | None = setting(
        None, "Tiles per task, embedded in one encoder call [default: 4 on a GPU, 1 on CPU].", ge=1
    )
    retries: int = setting(
        2, "Tries more for a tile that fails, before it is reported as failed.", ge=0, le=100
    )
    preview_size: int = setting(
        1024, "Longest side of the --preview image, in pixels (the scene is never enlarged).", ge=16, le=8192
    )


@dataclass(frozen=True)
class Output:
    """Where a pipeline's results go."""

    path: str = setting(
        description="per_scene: a folder, one SCENE.gpkg in it per scene; merged, change, track: one .gpkg file."
    )
    mode: OutputMode = setting(
        "per_scene", "per_scene: one GeoPackage per scene; merged: one GeoPackage, a 'scene' field, "
        "one layer per input layer name; change: the two scenes' objects matched (geosam change); track: "
        "the scenes' objects followed through time (geosam track), dates from the scene names.",
    )  # fmt: skip
    layer: str = setting("objects", "Layer name (merged: for inputs that name no layer).", min_length=1)


@dataclass(frozen=True)
class Evaluation:
    """Scoring predicted polygons against reference ones (``geosam evaluate``)."""

    iou: float = setting(
        0.5, "A prediction and a reference object match when their IoU is at least this (SpaceNet: 0.5).",
        gt=0, le=1,
    )  # fmt: skip
    class_field: str | None = setting(
        None, "Field of the object classes: objects match within their class where both files have it; "
        "where only REF has it, recall is given per class.",
    )  # fmt: skip
    size_bins: tuple[SquareMetres, ...] = setting(
        (100.0, 1000.0), "Edges of the size bins in m², ascending: 100,1000 scores objects under 100 m², "
        "from 100 to 1000 m² and from 1000 m² apart (a match by its reference's area).",
        min_length=1,
    )  # fmt: skip


@dataclass(frozen=True)
class Change:
    """Objects through time (``geosam change``, ``geosam track``): dates on one grid, objects matched."""

    same_iou: float = setting(
        0.7, "An object is the same at two dates when its outlines' IoU is at least this; below, changed.",
        gt=0, le=1,
    )  # fmt: skip
    match_iou: float = setting(
        0.25, "Objects of two dates are one object (changed) down to this IoU, at most --same-iou; below, "
        "one disappeared and another appeared.", gt=0, le=1,
    )  # fmt: skip
    part_share: float = setting(
        0.7, "Split and merged: each part lies at least this share inside the whole, and the parts "
        "together cover this share of it.", gt=0.5, le=1,
    )  # fmt: skip
    min_overlap: float = setting(
        0.5, "Refuse scenes whose footprints overlap less than this share of the smaller one.", gt=0, le=1
    )
    radiometry: Radiometry = setting(
        "matched", "One stretch for all dates, 8-bit data too: matched (each date's own --percentiles over "
        "the area all dates share: a gain or offset between dates cancels out) or joint (the percentiles of "
        "all dates pooled: values compared as they are, e.g. surface reflectance).",
    )  # fmt: skip


READ = Read()
MODEL = Model()
TILING = Tiling()
PROMPTS = Prompts()
FILTERS = Filters()
CLASSES = Classes()
OUTLINES = Outlines()
CLUSTER = Cluster()
EXECUTION = Execution()
EVALUATION = Evaluation()
CHANGE = Change()


def field(group: type, name: str) -> dataclasses.Field:
    """The field ``name`` of a settings group."""
    return next(f for f in dataclasses.fields(group) if f.name == name)


def item_limits(group: type, name: str) -> dict[str, Any]:
    """The limits of each item of a tuple setting (``ge``, ``le``, ``gt`` in its items' ``Annotated``)."""
    hint = typing.get_type_hints(group, include_extras=True)[name]
    items = [a for a in typing.get_args(hint) if typing.get_origin(a) is Annotated][:1]
    return {
        k: getattr(m, k) for a in items for m in a.__metadata__ for k in ("ge", "le", "gt") if hasattr(m, k)
    }


def limits(f: dataclasses.Field) -> dict[str, Any]:
    """A field's limits (``ge``, ``gt``, ``le``, ``min_length``, ``max_length``)."""
    return {k: v for k, v in f.metadata.items() if k in ("ge", "gt", "le", "lt", "min_length", "max_length")}
