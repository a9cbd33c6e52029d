"""A local cluster's Dask scheduler, in a process of its own.

Run in the client's process (as Dask's ``LocalCluster`` puts it), the scheduler's message logs, metrics
and caches of every task grew the client by about 0.7 KB a task; in a process of its own they are the
scheduler's, and the client stays flat (docs/scale.md). The process ends with the client's: it reads
its standard input, a pipe the client holds, and exits when the pipe closes, a client killed with
``kill -9`` included.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from distributed.deploy.spec import ProcessInterface

from geosam.errors import SchedulerError

# Its own process group: Ctrl-C in a terminal (or a QGIS Cancel) interrupts the client, which then
# closes the cluster; a scheduler interrupted with it would be gone before the client closes its workers.
_APART: dict[str, Any] = (
    {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}  # Windows only
    if sys.platform == "win32"
    else {"start_new_session": True}
)
START_S = 60.0  # how long the scheduler may take to start (a cold Python on a loaded machine)


def command(file: Path, *options: str) -> list[str]:
    """`dask scheduler` on 127.0.0.1, any free port, announcing itself in ``file``."""
    return [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
            "--scheduler-file", str(file), *options]  # fmt: skip


class SchedulerProcess(ProcessInterface):
    """The scheduler of a ``SpecCluster``, as a `dask scheduler` process on 127.0.0.1 that ends with this one."""

    process: subprocess.Popen | None = None

    async def start(self) -> None:
        with tempfile.TemporaryDirectory(prefix="geosam-scheduler-") as folder:
            file = Path(folder) / "scheduler.json"
            options = ("--dashboard-address", ":0", "--preload", __name__)  # :0, any free port
            self.process = subprocess.Popen(
                command(file, *options), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, **_APART,
            )  # fmt: skip
            self.address = await _announced(file, self.process)
        await super().start()

    async def close(self) -> None:
        process = self.process
        if process is not None:
            if process.poll() is None:  # not stopped by the cluster's close: ask, then insist
                process.terminate()
                deadline = time.monotonic() + 10
                while process.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if process.poll() is None:
                    process.kill()
            process.wait()
            if process.stdin is not None:
                process.stdin.close()
        await super().close()


async def _announced(file: Path, process: subprocess.Popen) -> str:
    """The address the scheduler writes to ``file`` once it listens."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            return str(json.loads(file.read_text())["address"])
        except (OSError, ValueError, KeyError):  # not written yet, or half written
            await asyncio.sleep(0.05)
    process.kill()
    process.wait()
    raise SchedulerError(
        "the local Dask scheduler did not start: check that `python -m distributed.cli.dask_scheduler "
        "--port 0` runs in this environment"
    )


def dask_setup(scheduler: object) -> None:
    """In the scheduler's process (``--preload``): exit once the client's end of standard input closes."""

    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, name="geosam-client-watch", daemon=True).start()
