"""The Dask cluster and back-pressure: a client of a local or remote cluster, and tiles submitted as
earlier ones finish, so that the scheduler holds a few tasks however large the scene.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from geosam.errors import InputError, SchedulerError, reason
from geosam.georef import Scene
from geosam.reprompt import PromptJob
from geosam.tasks import ModelSource, TileResult, prompt_task, prompt_tile, segment_task, segment_tiles
from geosam.tiling import Tile, TileGrid

if TYPE_CHECKING:  # dask.distributed takes half a second to import: a run in this process needs none of it
    from dask.distributed import Client, SpecCluster

log = logging.getLogger(__name__)

GPU_TILES_PER_TASK = 4  # tiles per encoder call on a GPU: keeps it busy; 4 ViT-H inputs fit in 16 GB


def cores() -> int:
    return os.cpu_count() or 1


def default_workers(device: str = "cpu") -> int:
    """Local worker processes for a model on ``device``: on the CPU one, whose torch threads use every
    core (one model in memory, and faster than a process per core); with a GPU, one per core."""
    return 1 if device == "cpu" else cores()


def scheduler_address(scheduler: str | None) -> str | None:
    """``scheduler``, else Dask's configured ``scheduler-address`` (``DASK_SCHEDULER_ADDRESS``), else None."""
    if scheduler:
        return scheduler
    import dask

    return dask.config.get("scheduler-address", None) or None


# glibc's allocator in local workers. Dask sets MALLOC_TRIM_THRESHOLD_ to 64 kB to give memory back
# sooner; set at all, it stops glibc from adapting its mmap threshold, so every array over 128 kB is
# fresh pages from the OS, and the model ran half as fast. Arrays up to 32 MB (the most glibc takes)
# come from the heap and are reused instead, but for the image encoder's activations, mapped from 8 MB
# (geosam.heap.mapped_above), and the decoder's, kept between its calls (geosam.models.decoder): both
# left holes in the heap that raised a ViT-B worker's peak by ~100 MiB. Up to 64 MB of freed heap is kept.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 64 * 2**20}


@contextmanager
def dask_client(
    workers: int | None = None, scheduler: str | None = None, device: str = "cpu"
) -> Iterator[Client]:
    """A client of ``scheduler`` (an address or a scheduler file), or of a local cluster of
    ``workers`` processes (default: ``default_workers(device)``) that run one task at a time."""
    import dask
    from dask.distributed import Client

    if scheduler:
        file = scheduler.endswith(".json") and Path(scheduler).is_file()
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        try:
            client = (
                Client(scheduler_file=scheduler, timeout=timeout)
                if file
                else Client(scheduler, timeout=timeout)
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise SchedulerError(
                f"cannot reach the Dask scheduler {scheduler} ({reason(exc)}); "
                "check that it runs and that this machine can reach its address"
            ) from None
        with client:
            yield client
        return
    environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in MALLOC.items()}
    with dask.config.set(environ), _local_cluster(workers or default_workers(device)) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


def _local_cluster(workers: int) -> SpecCluster:
    """``workers`` single-threaded worker processes (each with a nanny, which restarts it if it dies)
    and a scheduler in a process of its own (``geosam.scheduler``), all on 127.0.0.1."""
    from distributed import Nanny, SpecCluster
    from distributed.worker_memory import parse_memory_limit

    from geosam.scheduler import SchedulerProcess

    worker = {"cls": Nanny, "options": {
        "nthreads": 1, "host": "127.0.0.1", "dashboard": False,
        "memory_limit": parse_memory_limit("auto", 1, workers, logger=log),  # the machine's memory, shared out
        "silence_logs": logging.CRITICAL,  # a failed task is re-raised on the client, in one line
        "preload": [__name__],  # dask_setup below, in each worker process
    }}  # fmt: skip
    try:
        return SpecCluster(
            workers=dict.fromkeys(range(workers), worker),
            scheduler={"cls": SchedulerProcess, "options": {}},
            worker=worker,
            silence_logs=logging.CRITICAL,
            name="geosam",
        )
    except RuntimeError as exc:  # Dask's "Cluster failed to start: ...": ours in one line
        if isinstance(exc.__cause__, SchedulerError):
            raise exc.__cause__ from None
        raise


def dask_setup(worker: object) -> None:
    """Dask's preload hook in a local worker process: Ctrl-C (SIGINT to geosam's process group, a QGIS
    Cancel too) is the client's, which closes the cluster; a worker interrupted with it printed tracebacks."""
    if threading.current_thread() is threading.main_thread():  # where Python takes signal handlers
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Slots:
    """How many tasks to keep in flight: two per worker thread, rechecked as workers come and go."""

    def __init__(self, client: Client, every_s: float = 2.0) -> None:
        self.client, self.every_s, self.checked, self.value = client, every_s, 0.0, 2

    def __call__(self) -> int:
        now = time.monotonic()
        if now - self.checked >= self.every_s:
            self.checked = now
            try:
                info = self.client.scheduler_info(n_workers=-1)["workers"]
                self.value = max(2, 2 * sum(int(w.get("nthreads", 1)) for w in info.values()))
            except (OSError, TimeoutError, KeyError):  # the scheduler is busy or reconnecting: keep the last
                pass
        return self.value


def run_tiles(
    client: Client,
    scene: Scene,
    grid: TileGrid,
    source: ModelSource,
    tiles: Iterable[Tile] | None = None,
    retries: int = 2,
    threads: int | None = 0,
    peaks: dict[str, int] | None = None,
    tiles_per_task: int = 1,
    jobs: deque[PromptJob] | None = None,
) -> Iterator[TileResult]:
    """Segment ``tiles`` (default: all) on the cluster, with a bounded number of tasks in flight.

    Tiles are submitted as earlier ones finish, about two per worker thread at a time, so the
    scheduler never holds more than a few tasks however large the scene. A task that raises is
    retried ``retries`` times by the scheduler; a task whose worker dies is moved to another
    worker by the scheduler. A tile that still fails comes back with ``error`` set, not raised.
    ``threads`` is torch's threads per worker (0: cores / local workers; None: leave as the worker
    has it). ``tiles_per_task`` tiles go to each task, embedded in one encoder call (for GPUs).
    ``peaks`` collects each worker's peak resident memory in bytes. ``jobs``: prompt jobs that the
    caller adds to while it takes results; they go before tiles, one per task (None: no prompts
    follow, and the workers' models keep nothing for them). Yields tiles' results as they come, in no
    fixed order.
    """
    from dask.distributed import as_completed

    if threads == 0:
        workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        threads = max(1, cores() // workers)
    pending = iter(grid if tiles is None else tiles)
    slots = _Slots(client)
    in_flight = as_completed()
    run = uuid.uuid4().hex[:8]
    tiles_of: dict[str, tuple[Tile, ...]] = {}
    rounds_of: dict[str, int] = {}

    def submit(n: int) -> None:
        for _ in range(n):
            if jobs:
                job = jobs.popleft()
                future = client.submit(
                    prompt_task, scene, grid, job, source, threads, retries=retries,
                    key=f"geosam-prompt-{job.tile.row}-{job.tile.col}-{job.round}-{run}",
                )  # fmt: skip
                tiles_of[str(future.key)], rounds_of[str(future.key)] = (job.tile,), job.round
                in_flight.add(future)
                continue
            group = tuple(_take(pending, tiles_per_task))
            if not group:
                return
            future = client.submit(
                segment_task, scene, grid, group, source, threads, jobs is not None, retries=retries,
                key=f"geosam-tile-{group[0].row}-{group[0].col}-{run}",
            )  # fmt: skip
            tiles_of[str(future.key)], rounds_of[str(future.key)] = group, 0
            in_flight.add(future)

    submit(slots())
    for future in in_flight:
        group, round = tiles_of.pop(str(future.key)), rounds_of.pop(str(future.key))
        if future.status == "finished":
            results, worker, peak = future.result()
            if peaks is not None:
                peaks[worker] = max(peaks.get(worker, 0), peak)
        else:
            error, bad_input = _failure(future)
            results = [
                TileResult(tile, [], False, error=error, input_error=bad_input, round=round) for tile in group
            ]
            for tile in group:
                log.warning("tile %d,%d failed%s: %s", tile.row, tile.col, _round(round), error)
        future.release()
        yield from results  # the caller may add jobs here: submitted next, so none is left behind
        submit(max(0, slots() - in_flight.count()))


def _round(round: int) -> str:
    return f" in prompt round {round}" if round else ""


def _failure(future) -> tuple[str, bool]:
    """Why a task failed, and whether on its input."""
    try:
        exc = future.exception()
    except Exception as raised:  # noqa: BLE001 - cancelled futures raise instead of returning
        exc = raised
    if exc is None:
        return future.status, False
    return reason(exc), isinstance(exc, InputError)


def run_tiles_here(
    scene: Scene,
    grid: TileGrid,
    source: ModelSource,
    tiles: Iterable[Tile] | None = None,
    retries: int = 2,
    jobs: deque[PromptJob] | None = None,
) -> Iterator[TileResult]:
    """``run_tiles`` in this process, without Dask (tests, debugging); ``jobs`` go before each tile."""
    model = source.load()
    prompts_follow = jobs is not None
    jobs = deque() if jobs is None else jobs
    pending = iter(grid if tiles is None else tiles)
    while True:
        job = jobs.popleft() if jobs else None
        tile = next(pending, None) if job is None else job.tile
        if tile is None:
            return
        for attempt in range(retries + 1):
            try:
                if job is None:
                    yield from segment_tiles(scene, grid, [tile], model, prompts_follow)
                else:
                    yield prompt_tile(scene, grid, job, model)
                break
            except Exception as exc:  # noqa: BLE001 - reported as a failed tile, like a Dask task's error
                if attempt == retries:
                    round = 0 if job is None else job.round
                    log.warning("tile %d,%d failed%s: %s", tile.row, tile.col, _round(round), reason(exc))
                    yield TileResult(
                        tile,
                        [],
                        False,
                        error=reason(exc),
                        input_error=isinstance(exc, InputError),
                        round=round,
                    )


def _take(tiles: Iterator[Tile], n: int) -> list[Tile]:
    return list(itertools.islice(tiles, n))
