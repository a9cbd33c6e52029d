"""geosam as a subprocess: where it is, what its commands take, and one run of it.

This module imports nothing of QGIS (and QGIS's Python never imports geosam, torch or Dask): geosam
runs in its own environment, found from the provider's setting, ``$GEOSAM_EXECUTABLE``, the
``PATH`` or the usual places of a user's install. Its commands' options come from ``geosam options``
(the command line's own description of them, made from ``geosam.settings``), so that every default,
limit and help text is geosam's, of the geosam that runs. Progress comes from ``geosam --progress
json``: one JSON object a line on stderr.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS = ("segment", "prompt", "run", "evaluate")  # the commands the algorithms run
INSTALL = (
    "install it (in geosam's repository: ./geosam.sh demo) and set Settings > Options > Processing > Providers > "
    "geosam > geosam executable to its .venv/bin/geosam"
)
# where pip puts geosam's executable in an environment (POSIX, Windows)
BIN = (Path("bin", "geosam"), Path("Scripts", "geosam.exe"))
# QGIS's own Python settings, which must not reach geosam's Python
FOREIGN = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONNOUSERSITE")
STOP_SECONDS = 30.0  # after Cancel, how long geosam has to stop before it is killed


class GeosamError(Exception):
    """geosam is missing, or a run of it failed: the message is one line, for the user."""


class Cancelled(GeosamError):
    """The run was cancelled; geosam stopped (its work folder keeps the finished tiles)."""


def candidates(configured: str = "") -> list[Path]:
    """Where geosam may be, in order: the setting (an executable or an environment's folder),
    ``$GEOSAM_EXECUTABLE``, ``$VIRTUAL_ENV``, the ``PATH``, pipx's and the usual environments."""
    found: list[Path] = []
    for given in (configured, os.environ.get("GEOSAM_EXECUTABLE", "")):
        if given.strip():
            path = Path(given.strip()).expanduser()
            found += [path / b for b in BIN] if path.is_dir() else [path]
            return found  # a path the user gave is the only one tried: no other geosam behind their back
    if os.environ.get("VIRTUAL_ENV"):
        found += [Path(os.environ["VIRTUAL_ENV"], b) for b in BIN]
    on_path = shutil.which("geosam")
    if on_path:
        found.append(Path(on_path))
    home = Path.home()
    found += [home / ".local" / "bin" / "geosam"]  # pipx, pip install --user
    found += [home / env / b for env in ("geosam", ".venv", "venv", ".geosam") for b in BIN]
    return found


def find(configured: str = "") -> Path:
    """The geosam executable, or a one-line ``GeosamError`` saying how to install it."""
    for path in candidates(configured):
        if path.is_file() and os.access(path, os.X_OK):
            return path
    where = configured.strip() or os.environ.get("GEOSAM_EXECUTABLE", "").strip()
    if where:
        raise GeosamError(f"geosam not found at {where}: {INSTALL}")
    raise GeosamError(f"geosam not found: {INSTALL}")


def environment() -> dict[str, str]:
    """The environment geosam runs in: this one, less QGIS's Python settings."""
    return {k: v for k, v in os.environ.items() if k not in FOREIGN}


_described: dict[tuple[str, float], dict[str, Any]] = {}


def options(executable: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Command -> option name -> its description (``geosam options``: type, default, limits, help),
    for the commands the algorithms run; asked once per executable (and its modification time)."""
    key = (str(executable), executable.stat().st_mtime)
    if key not in _described:
        try:
            done = subprocess.run(
                [str(executable), "options", *COMMANDS], capture_output=True, text=True,
                env=environment(), timeout=120, check=False,
            )  # fmt: skip
        except OSError as exc:
            raise GeosamError(f"{executable} does not run ({exc}): {INSTALL}") from None
        if done.returncode != 0:
            raise GeosamError(
                f"{executable} cannot describe its options ({last_line(done.stderr) or done.returncode}): "
                "this plugin needs a geosam with `geosam options`: update it (git pull; ./geosam.sh demo)"
            )
        commands = json.loads(done.stdout)["commands"]
        _described[key] = {c: {p["name"]: p for p in params} for c, params in commands.items()}
    return _described[key]


def forget() -> None:
    """Ask again next time (the provider's settings changed)."""
    _described.clear()


def last_line(stderr: str) -> str:
    """geosam's one-line error (``Error: ...``), or the last line it wrote that is not progress."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("{")]
    errors = [line for line in lines if line.startswith("Error: ")]
    return (errors[-1][len("Error: ") :] if errors else lines[-1]) if lines else ""


def _read(stream: Any, into: queue.Queue, tag: str) -> None:
    try:
        for line in stream:
            into.put((tag, line.rstrip("\n")))
    except (OSError, ValueError):  # closed under it: the run was cancelled
        pass
    into.put((tag, None))


def run(
    executable: Path,
    args: list[str],
    on_event: Callable[[dict[str, Any]], None],
    on_message: Callable[[str], None],
    cancelled: Callable[[], bool],
) -> str:
    """Run ``geosam --progress json ARGS``; its stdout. Progress events go to ``on_event``, its other
    lines to ``on_message``; when ``cancelled()`` turns true, geosam is interrupted (Ctrl-C: it
    stops, keeping the finished tiles) and ``Cancelled`` is raised; a failure raises its one line."""
    posix = os.name == "posix"
    command = [str(executable), "--progress", "json", *args]
    on_message("$ " + " ".join(command))
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(),
            start_new_session=posix,  # its own process group: Cancel interrupts geosam and its workers
            creationflags=0 if posix else subprocess.CREATE_NEW_PROCESS_GROUP,  # type: ignore[attr-defined]
        )  # fmt: skip
    except OSError as exc:
        raise GeosamError(f"{executable} does not run ({exc}): {INSTALL}") from None
    with process:  # its pipes closed, and waited for, however this ends
        out, err = _follow(process, on_event, on_message, cancelled, posix)
    if process.returncode != 0:
        raise GeosamError(last_line("\n".join(err)) or f"geosam stopped with exit code {process.returncode}")
    return "\n".join(out)


def _follow(
    process: subprocess.Popen, on_event: Callable[[dict[str, Any]], None], on_message: Callable[[str], None],
    cancelled: Callable[[], bool], posix: bool,
) -> tuple[list[str], list[str]]:  # fmt: skip
    """Its stdout and stderr lines, read as they come (progress events and messages passed on) until
    it closes them; interrupted when ``cancelled()``."""
    lines: queue.Queue = queue.Queue()
    for stream, tag in ((process.stdout, "out"), (process.stderr, "err")):
        threading.Thread(target=_read, args=(stream, lines, tag), daemon=True).start()
    out: list[str] = []
    err: list[str] = []
    open_streams = 2
    while open_streams:
        if cancelled():
            _interrupt(process, posix)
            raise Cancelled("cancelled: finished tiles are kept; run it again with the same scene to resume")
        try:
            tag, line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
        elif tag == "out":
            out.append(line)
        elif line.startswith("{"):
            on_event(json.loads(line))
        else:
            err.append(line)
            on_message(line)
    process.wait()
    return out, err


def _interrupt(process: subprocess.Popen, posix: bool) -> None:
    """Ctrl-C to geosam (and its Dask workers), as in a terminal; killed if it does not stop in time."""
    try:
        if posix:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        if posix:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()
    except ProcessLookupError:  # it had stopped already
        process.wait()
