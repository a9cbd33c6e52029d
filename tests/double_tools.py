"""Stand-ins for the programs that geosam.sh runs (python3, pip, geosam, the checks, df), for its tests.

Each stand-in is a two-line shell script that runs this file with its own name first:
``python double_tools.py NAME ARGS...``. Every call is appended to ``$DOUBLE_LOG`` as a JSON list
``[NAME, *ARGS]``, so that a test sees what the script ran, in order. What they do besides:

- ``python3 -m venv DIR`` makes a stand-in environment: ``DIR/bin/activate`` and stand-ins for its
  ``python``, ``pip``, ``geosam`` and the checks; ``--version`` answers ``$DOUBLE_PYTHON_VERSION``
  (default: this interpreter's version); with ``$DOUBLE_VENV_FAILS`` set, ``-m venv`` fails as
  Debian's Python does without its venv package;
- ``geosam sample`` prints ``$DOUBLE_SAMPLE``; ``geosam segment ... -o OUT --preview PNG`` writes
  the two files and ``OUT``'s report; with ``$DOUBLE_REAL_GEOSAM`` set, ``geosam`` is the real one;
- ``df -Pk`` reports ``$DOUBLE_FREE_KB`` kilobytes available;
- everything else succeeds and does nothing.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

VENV_TOOLS = ("python", "pip", "geosam", "ruff", "mypy", "lint-imports")


def install(folder: Path, *names: str) -> None:
    """Stand-ins for ``names`` in ``folder``, each running this file with the test's interpreter."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        tool = folder / name
        tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" {name} "$@"\n')
        tool.chmod(0o755)


def _venv(folder: Path) -> None:
    install(folder / "bin", *VENV_TOOLS)
    (folder / "bin" / "activate").write_text(
        f'VIRTUAL_ENV="{folder.resolve()}"\nPATH="$VIRTUAL_ENV/bin:$PATH"\nexport VIRTUAL_ENV PATH\n'
    )


def _python(args: list[str]) -> int:
    if args == ["--version"]:
        print(f"Python {os.environ.get('DOUBLE_PYTHON_VERSION', platform.python_version())}")
    elif args[:2] == ["-m", "venv"] and os.environ.get("DOUBLE_VENV_FAILS"):
        Path(args[2], "bin").mkdir(parents=True)  # as Debian's python3 without python3-venv leaves it
        print("The virtual environment was not created successfully because ensurepip is not\navailable.")
        return 1
    elif args[:2] == ["-m", "venv"]:
        _venv(Path(args[2]))
    return 0


def _geosam(args: list[str]) -> int:
    if os.environ.get("DOUBLE_REAL_GEOSAM"):
        os.execv(sys.executable, [sys.executable, "-m", "geosam", *args])
    words = [a for a in args if a != "-q"]
    if words == ["sample"]:
        print(os.environ["DOUBLE_SAMPLE"])
    elif words[:1] == ["segment"]:
        output = Path(words[words.index("-o") + 1])
        preview = Path(words[words.index("--preview") + 1])
        for path in (output, preview, output.with_name(f"{output.stem}.report.json")):
            path.write_text("written by the stand-in of geosam segment")
    return 0


def _df(args: list[str]) -> int:
    free = int(os.environ["DOUBLE_FREE_KB"])
    print("Filesystem     1024-blocks      Used Available Capacity Mounted on")
    print(f"/dev/double     {free * 2:>11} {free:>9} {free:>9}      50% /")
    return 0


def main(name: str, args: list[str]) -> int:
    with open(os.environ["DOUBLE_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps([name, *args]) + "\n")
    handler = {"python3": _python, "python": _python, "geosam": _geosam, "df": _df}.get(name)
    return handler(args) if handler else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
