"""``geosam options``: the arguments and options of geosam's commands as JSON, for programs that run
geosam (the QGIS plugin makes its Processing parameters from them, so that their defaults, limits
and help are the command line's, which takes them from ``geosam.settings``)."""

from __future__ import annotations

import json
import typing
from typing import Any

import click

from geosam._version import __version__


def describe(param: click.Parameter) -> dict[str, Any]:
    """One argument or option: click's own description of it (``to_info_dict``), ranges flattened."""
    info = param.to_info_dict()
    kind = info.pop("type")
    info["type"] = kind["param_type"].lower()  # int, float, string, path, choice, bool ...
    for key in ("choices", "min", "max", "min_open", "max_open"):
        if kind.get(key) is not None:
            info[key] = list(kind[key]) if key == "choices" else kind[key]
    return info


@click.command("options")
@click.argument("commands", nargs=-1)
@click.pass_context
def command(ctx: click.Context, commands: tuple[str, ...]) -> None:
    """Print the arguments and options of COMMANDS (default: all) as JSON: names, types, defaults,
    limits and help, as the command line takes them from geosam's settings."""
    group = typing.cast(click.Group, ctx.find_root().command)
    unknown = sorted(set(commands) - set(group.commands))
    if unknown:
        raise click.UsageError(
            f"no command {', '.join(unknown)}; commands: {', '.join(sorted(group.commands))}"
        )
    chosen = commands or tuple(sorted(group.commands))
    described = {
        name: [describe(p) for p in group.commands[name].params]
        for name in chosen
        if not isinstance(group.commands[name], click.Group)
    }
    click.echo(json.dumps({"geosam": __version__, "commands": described}, indent=1, default=str))
