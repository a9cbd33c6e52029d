"""The command line's options, made from ``geosam.settings``: each setting's name, type, range, default
and help come from there, so no default or limit is spelled twice (rasterio's ``rio/options.py`` is the
model: one registry of options that every command takes from)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geosam import settings
from geosam.settings import Classes, Cluster, Execution, Filters, Model, Outlines, Prompts, Read, Tiling

Decorator = Callable[[Callable], Callable]


class VectorSource(click.ParamType):
    """A vector file, or one layer of it as ``FILE|layername=NAME``: the file must exist."""

    name = "vector"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from geosam.errors import InputError
        from geosam.evaluation import vector_source
        from geosam.georef import is_remote

        try:
            path, _ = vector_source(value)
        except InputError as exc:
            self.fail(str(exc), param, ctx)
        if not is_remote(path) and not Path(path).is_file():
            self.fail(f"{path}: no such file", param, ctx)
        return str(value)


def _range(f: dataclasses.Field, kind: type) -> click.ParamType:
    limits = settings.limits(f)
    low = limits.get("ge", limits.get("gt"))
    high = limits.get("le")
    if kind is int:
        return click.IntRange(low, high) if low is not None or high is not None else click.INT
    return (
        click.FloatRange(low, high, min_open="gt" in limits)
        if low is not None or high is not None
        else click.FLOAT
    )


def _bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int | str, ...] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",")]
    if "" in names:
        raise click.BadParameter("give 1-based band indexes or band names separated by commas, e.g. 3,2,1")
    return tuple(int(v) if v.isdigit() else v for v in names)


def _percentiles(ctx: click.Context, param: click.Parameter, value: str | tuple) -> tuple[float, float]:
    if isinstance(value, tuple):
        return value
    item = settings.item_limits(Read, "percentiles")
    low_limit, high_limit = item["ge"], item["le"]
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give LOW,HIGH, e.g. 2,98") from None
    if not low_limit <= low < high <= high_limit:
        raise click.BadParameter(f"{value}: use {low_limit:g} <= LOW < HIGH <= {high_limit:g}")
    return low, high


def _size_bins(ctx: click.Context, param: click.Parameter, value: str | tuple) -> tuple[float, ...]:
    if isinstance(value, tuple):
        return value
    from geosam.errors import InputError
    from geosam.evaluation import check_size_bins

    try:
        return check_size_bins([float(v) for v in value.split(",")])
    except ValueError as exc:
        message = (
            str(exc) if isinstance(exc, InputError) else "give areas in m² separated by commas, e.g. 100,1000"
        )
        raise click.BadParameter(message) from None


def _names(ctx: click.Context, param: click.Parameter, value: str | tuple | None) -> tuple[str, ...] | None:
    if value is None or isinstance(value, tuple):
        return value
    names = tuple(v.strip() for v in value.split(","))
    if "" in names:
        raise click.BadParameter("give class names separated by commas, e.g. building,tank")
    return names


def _class_outlines(
    ctx: click.Context, param: click.Parameter, value: str | tuple | None
) -> tuple[str, ...] | None:
    from geosam.outlines import by_class

    pairs = _names(ctx, param, value)
    try:
        by_class(pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return pairs


# where the command line reads a setting differently from its type: a path that must exist, a list as text
_SPECIAL: dict[str, dict[str, Any]] = {
    "Read.bands": {"callback": _bands, "type": str, "metavar": "BANDS"},
    "Read.percentiles": {
        "callback": _percentiles,
        "type": str,
        "metavar": "LOW,HIGH",
        "default": ",".join(f"{v:g}" for v in settings.READ.percentiles),
    },
    "Read.nodata": {"metavar": "VALUE"},
    "Model.checkpoint": {"type": click.Path(exists=True, dir_okay=False, path_type=Path)},
    "Cluster.scheduler": {"metavar": "ADDRESS"},
    "Evaluation.size_bins": {
        "callback": _size_bins,
        "type": str,
        "metavar": "M2,...",
        "default": ",".join(f"{v:g}" for v in settings.EVALUATION.size_bins),
    },
    "Evaluation.class_field": {"metavar": "FIELD"},
    "Classes.examples": {"type": VectorSource(), "metavar": "FILE"},
    "Classes.class_model": {"type": click.Path(exists=True, dir_okay=False), "metavar": "FILE"},
    "Classes.class_field": {"metavar": "FIELD"},
    "Classes.keep": {"callback": _names, "type": str, "metavar": "CLASS,..."},
    "Classes.class_outlines": {"callback": _class_outlines, "type": str, "metavar": "CLASS=KIND,..."},
}


def option(group: type, name: str, **overrides: Any) -> Decorator:
    """A click option for setting ``group.name``: its spelling, type, range, default and help."""
    f = settings.field(group, name)
    hint = typing.get_type_hints(group)[name]
    kind = (  # X | None is X; a Literal is its own kind (its arguments are its values)
        next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else hint
    )
    decls = f.metadata.get(settings.CLI, (f"--{name.replace('_', '-')}",))
    kwargs: dict[str, Any] = {"help": f.metadata["description"], "default": f.default}
    if kind is bool:
        kwargs["is_flag"] = True
        if f.default:
            decls = (f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}",)
    elif typing.get_origin(kind) is typing.Literal:
        kwargs["type"] = click.Choice(typing.get_args(kind))
    elif kind in (int, float):
        kwargs["type"] = _range(f, kind)
    special = _SPECIAL.get(f"{group.__name__}.{name}", {})
    kwargs.update(special)
    kwargs["show_default"] = f.default is not None and not (kind is bool and not f.default)
    kwargs.update(overrides)
    return click.option(*decls, **kwargs)


def options(*decorators: Decorator) -> Decorator:
    """Apply several option decorators in the order given (the first is listed first in --help)."""

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def group_options(group: type, *names: str) -> Decorator:
    """Options for the settings ``names`` of ``group`` (default: all of them)."""
    return options(*(option(group, n) for n in names or [f.name for f in dataclasses.fields(group)]))


read_options = group_options(Read)
model_options = group_options(Model, "name", "checkpoint", "architecture", "offline")
runtime_options = group_options(Model, "device", "backend", "precision")
automatic_options = group_options(
    Model, "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_thresh"
)
tiling_options = group_options(Tiling, "tile_size", "overlap")
filter_options = group_options(Filters, "min_area", "simplify", "keep_background")
class_options = group_options(Classes)
outline_options = group_options(Outlines)
cluster_options = group_options(Cluster)
prompt_file_options = group_options(Prompts, "layer", "id_field", "label_field")
execution_options = options(option(Execution, "tiles_per_task"), option(Tiling, "prompt_rounds"))

# the options every command that writes a file has, rio's spellings
scene_argument = click.argument("scene", type=click.Path(dir_okay=False, path_type=str))


def output_options(what: str, overwrite: str) -> Decorator:
    """``-o/--output`` (required) and ``--overwrite``: nothing is replaced without it."""
    return options(
        click.option(
            "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help=what
        ),
        click.option("--overwrite", is_flag=True, help=overwrite),
    )


def model_spec(
    name: str, device: str, checkpoint: Path | None, architecture: str | None, offline: bool,
    backend: str | None, precision: str, **params: Any,
) -> Any:  # fmt: skip
    """The ``ModelSpec`` of the model options (``params``: automatic mode's settings)."""
    from geosam.models import AutomaticParams, ModelSpec

    if architecture is not None and checkpoint is None:
        raise click.UsageError("--architecture applies to --checkpoint PATH only")
    return ModelSpec(
        name, device, AutomaticParams(**params), checkpoint=checkpoint, architecture=architecture,
        backend=backend, precision=precision, offline=offline,
    )  # fmt: skip


def check_keep_raw(output: Path, keep_raw: bool) -> None:
    """--keep-raw with an output that holds a second layer (a GeoPackage), or a usage error."""
    if keep_raw and output.suffix.lower() != ".gpkg":
        raise click.UsageError(
            f"--keep-raw writes the pixel outlines as a second layer: name {output} *.gpkg"
        )


def check_tiling(size: int, overlap: int) -> None:
    """Tile size and overlap that work together, or a usage error."""
    from geosam.errors import InputError
    from geosam.tiling import check_tiling as check

    try:
        check(size, overlap)
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
