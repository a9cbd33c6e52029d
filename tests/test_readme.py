"""The README and the documentation say what the code does.

The CLI and API references are generated from the code (mkdocs-click, mkdocstrings), so these tests
guard what is still written by hand: options that the README and the guide mention exist in the
real ``--help`` of the command they are given to; the README's test command is the one CI runs;
every public name and every command has a reference entry; and the site builds with
``mkdocs build --strict`` (broken links and anchors are errors).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import geosam
from geosam.cli import main

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CI = ROOT / ".ci" / "run"
# Pages written for users, whose command lines and options must be real.
PROSE = [README, DOCS / "index.md", *sorted((DOCS / "guide").glob("*.md")), DOCS / "benchmarks.md"]
# Pages whose inline `--option` spans are geosam's (the benchmarks page names the scripts' own options).
OPTION_PAGES = [page for page in PROSE if page.name != "benchmarks.md"]
# Options of other programs that the guide names in passing (dask-mpi's, in "Cluster and resume").
FOREIGN_OPTIONS = {"--scheduler-file"}

HELP_LINE = re.compile(r"^  (-\S.*?)(?:\s{2,}|$)")
SPELLING = re.compile(r"(?:^|, |/ ?)(--?[A-Za-z0-9][A-Za-z0-9-]*)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")


def help_commands(group: click.Command = main, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], set[str]]:
    """Command path -> every option spelling its real ``--help`` lists (``-o`` and ``--output`` apart)."""
    output = CliRunner().invoke(main, [*path, "--help"]).output
    options = set()
    for line in output.splitlines():
        if match := HELP_LINE.match(line):
            options |= set(SPELLING.findall(match.group(1)))
    commands = {path: options}
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            commands.update(help_commands(command, (*path, name)))
    return commands


def command_lines(text: str) -> list[str]:
    """``geosam ...`` invocations: lines of code blocks and inline code spans (comments cut off)."""
    lines = []
    for block in FENCE.findall(text):
        lines += block.splitlines()[1:-1]
    lines += INLINE_CODE.findall(FENCE.sub("", text))
    found = []
    for line in lines:
        line = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", line.strip())  # VAR=value geosam ...
        if line.startswith("geosam "):
            found.append(line.split(" #", 1)[0])
    return found


def resolve(words: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The command path the words name, and the words after it."""
    command: click.Command = main
    path: tuple[str, ...] = ()
    while words and isinstance(command, click.Group) and words[0] in command.commands:
        command = command.commands[words[0]]
        path, words = (*path, words[0]), words[1:]
    return path, words


def test_every_command_and_option_has_help_text():
    """The CLI reference is the commands' own help: nothing in it may be blank."""

    def walk(command: click.Command, name: str):
        assert command.help or command.short_help, f"{name}: no docstring"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{name} {'/'.join(param.opts)}: no help text"
        for sub, child in getattr(command, "commands", {}).items():
            walk(child, f"{name} {sub}")

    walk(main, "geosam")


def test_commands_in_the_readme_and_guide_exist_with_their_options():
    real = help_commands()
    checked = 0
    for page in PROSE:
        for line in command_lines(page.read_text()):
            words = [w for w in shlex.split(line.replace("...", ""), posix=True) if w != "\\"]
            path, rest = resolve(words[1:])
            where = f"{page.relative_to(ROOT)}: `{line}`"
            assert path or (rest and rest[0].startswith("-")), f"{where}: no such geosam command"
            for word in rest:
                if word.startswith("-") and len(word) > 1 and not re.fullmatch(r"-?[\d.,]+", word):
                    option = word.split("=", 1)[0]
                    assert option in real[path], (
                        f"{where}: {option} is not an option of geosam {' '.join(path)}"
                    )
            checked += 1
    assert checked >= 20, "the README and guide show geosam's commands"


def test_options_named_in_the_readme_and_guide_exist():
    every = set().union(*help_commands().values())
    for page in OPTION_PAGES:
        for span in INLINE_CODE.findall(FENCE.sub("", page.read_text())):
            if span.startswith("-"):
                for option in re.findall(r"(?:^|[ /,|])(--?[a-z][a-z0-9-]*)", span):
                    assert option in every | FOREIGN_OPTIONS, (
                        f"{page.relative_to(ROOT)}: `{span}`: no such option"
                    )


def _commands(text: str) -> list[str]:
    """Shell commands of a script or code block: comments, blank lines and CI's own settings left out."""
    commands = []
    for line in text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith(("#", "export ", "rm ")):
            commands.append(" ".join(w for w in line.split() if w not in ("--quiet", "-q")))
    return commands


def _readme_section(title: str) -> str:
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README has a '## {title}' section (.ci/run follows it)"
    return "\n".join(block.split("\n", 1)[1].rsplit("```", 1)[0] for block in FENCE.findall(match.group(1)))


def test_readme_test_command_is_the_one_ci_runs():
    """CI runs the README's test command from scratch; that it installs as the README's Install says
    is tests/test_setup_script.py's to check."""
    script = CI.read_text()
    marker = "# --- README: Run the tests ---"
    assert marker in script, ".ci/run marks the README's command"
    assert "rm -rf .venv" in script.split(marker)[0], "CI installs from scratch"
    assert _commands(_readme_section("Run the tests")) == _commands(script.split(marker)[1])
    assert _commands(script.split(marker)[1]) == ["./geosam.sh test"]


def test_readme_links_point_at_files_that_exist():
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", README.read_text()):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def _api_paths() -> list[str]:
    return re.findall(r"^::: ([\w.]+)\s*$", (DOCS / "reference" / "api.md").read_text(), re.MULTILINE)


def test_api_reference_documents_every_public_name_where_it_is_defined():
    documented = []
    for path in _api_paths():
        module, _, name = path.rpartition(".")
        try:
            documented.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            importlib.import_module(path)  # a module, for its docstring; fails if it was renamed
    for name in geosam._EXPORTS:
        assert any(obj is getattr(geosam, name) for obj in documented), (
            f"docs/reference/api.md: ::: for {name}"
        )


def test_module_paths_are_written_only_in_the_api_reference():
    for page in DOCS.rglob("*.md"):
        if page.name != "api.md":
            directives = re.findall(r"^::: (\S+)", page.read_text(), re.MULTILINE)
            assert set(directives) <= {"mkdocs-click"}, f"{page.relative_to(ROOT)}: move ::: paths to api.md"


def test_cli_reference_is_generated_from_the_click_group():
    text = (DOCS / "reference" / "cli.md").read_text()
    assert "::: mkdocs-click" in text
    settings = dict(re.findall(r"^\s+:(\w+): (\S+)", text, re.MULTILINE))
    assert getattr(importlib.import_module(settings["module"]), settings["command"]) is main
    assert settings["prog_name"] == "geosam"


def _hooks():
    spec = importlib.util.spec_from_file_location("geosam_docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


def _schema_keys(schema: dict) -> set[str]:
    keys = set(schema["properties"])
    for definition in schema.get("$defs", {}).values():
        keys |= set(definition.get("properties", {}))
    return keys


def test_pipeline_reference_renders_every_key_of_the_schema():
    schema = json.loads((ROOT / "pipelines" / "schema.json").read_text())
    rendered = _hooks().schema_markdown(schema)
    for key in _schema_keys(schema):
        assert f"| `{key}` |" in rendered, f"the pipeline reference lacks {key}"
    for name in schema["$defs"]:
        assert f"## {name} " in rendered
    assert _hooks().MARKER in (DOCS / "reference" / "pipeline-schema.md").read_text()


DOCS_MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_click")


def _missing_docs_modules() -> list[str]:
    missing = []
    for name in DOCS_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            missing.append(name)
    return missing


@pytest.mark.skipif(
    bool(_missing_docs_modules()),
    reason=f"the docs extra is not installed (no {', '.join(_missing_docs_modules())}): pip install -e '.[docs]'",
)
def test_docs_site_builds_strict_with_every_command_and_option(tmp_path):
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr[-4000:]}"
    cli = (site / "reference" / "cli" / "index.html").read_text()
    for path, options in help_commands().items():
        heading = " ".join(("geosam", *path))
        assert f">{heading}<" in cli, f"the CLI reference has a heading for {heading}"
        section = cli[cli.index(f">{heading}<") :]
        for option in options:
            assert option in section, f"the CLI reference lists {heading} {option}"
    schema_page = (site / "reference" / "pipeline-schema" / "index.html").read_text()
    for key in _schema_keys(json.loads((ROOT / "pipelines" / "schema.json").read_text())):
        assert f"<code>{key}</code>" in schema_page
    api = (site / "reference" / "api" / "index.html").read_text()
    for path in _api_paths():
        assert f'id="{path}"' in api, f"the API reference renders {path}"
