"""The README's CLI reference says what the real `--help` says: every command, every option, both ways."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from geosam.cli import main

README = Path(__file__).parents[1] / "README.md"
HEADING = re.compile(r"^### `geosam((?: [a-z][a-z-]*)*)(?: [^`]*)?`", re.MULTILINE)
HELP_OPTION = re.compile(r"^  ((?:-[a-zA-Z], )?--[a-z0-9][a-z0-9-]*)")
TABLE_OPTION = re.compile(r"^\| `((?:-[a-zA-Z], )?--[a-z0-9][a-z0-9-]*)")


def readme_commands() -> dict[tuple[str, ...], set[str]]:
    """Command path -> the options in the first column of its table in the README's CLI reference."""
    text = README.read_text()
    section = text[text.index("## CLI reference") :]
    section = section[: section.index("\n## ", 1)]
    headings = list(HEADING.finditer(section))
    commands = {}
    for heading, following in zip(headings, [*headings[1:], None]):
        body = section[heading.end() : following.start() if following else None]
        options = {m.group(1) for line in body.splitlines() if (m := TABLE_OPTION.match(line))}
        commands[tuple(heading.group(1).split())] = options
    return commands


def help_commands(group: click.Group = main, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], set[str]]:
    """Command path -> the options its real ``--help`` lists (short and long spelling as shown)."""
    output = CliRunner().invoke(main, [*path, "--help"]).output
    commands = {path: {m.group(1) for line in output.splitlines() if (m := HELP_OPTION.match(line))}}
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            commands.update(help_commands(command, (*path, name)))
    return commands


def test_readme_documents_every_command_and_option_of_the_real_help():
    documented, real = readme_commands(), help_commands()
    assert set(documented) == set(real), "a `### geosam ...` heading in the CLI reference per command"
    for path, options in real.items():
        name = " ".join(("geosam", *path))
        assert options, f"{name} --help lists options"
        assert options - documented[path] == set(), f"{name}: options in --help missing from the README"
        assert documented[path] - options == set(), f"{name}: README options that --help does not have"
