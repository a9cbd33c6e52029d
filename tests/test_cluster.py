"""geosam on a real Dask cluster: a `dask scheduler` and `dask worker` processes on 127.0.0.1,
started by the test; one worker is killed while tiles are in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from geosam import output, scene_run
from geosam.cluster import MALLOC, dask_client
from geosam.errors import SchedulerError
from geosam.testing import dask_cluster, make_scene

from .test_resume import ROOT, TILING, assert_same_output, double_cli, finish, tiles_in, wait_for_tiles


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers without nannies (a killed worker stays dead); the
    workers unpickle the test doubles from the repository root on their path."""
    with dask_cluster(tmp_path) as processes:
        yield processes


def test_a_run_in_this_process_does_not_import_dask_distributed(tmp_path):
    """A scene of a few tiles runs here, without a cluster: dask.distributed (0.45 s of imports) stays out."""
    scene = make_scene(tmp_path / "scene", seed=1, width=200, height=200, max_size=48, objects=6)
    out = tmp_path / "out.gpkg"
    args = ["segment", str(scene.path), "-m", str(scene.labels), "-o", str(out), *TILING]
    code = f"import sys\nfrom tests.double_cli import main\nmain({args!r}, standalone_mode=False)\n"
    code += "print('distributed' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.exists() and json.loads(out.with_name("out.report.json").read_text())["tiles_done"] == 4
    assert run.stdout.split() == ["False"]


@pytest.mark.slow
def test_a_killed_worker_loses_no_tile(cluster, tmp_path):
    address, file, workers = cluster.address, cluster.file, cluster.workers
    scene = make_scene(tmp_path / "scene", seed=3, width=700, height=600, max_size=96, objects=80)
    out = tmp_path / "out.gpkg"
    args = ["segment", str(scene.path), "-m", str(scene.labels), *TILING, "--scheduler", address]
    trace = tmp_path / "trace"
    trace.mkdir()
    run = double_cli(*args, "-o", str(out), env={"GEOSAM_TEST_DELAY": "0.2", "GEOSAM_TEST_TRACE": str(trace)})
    work = tmp_path / "out.geosam-work"
    killed = workers[0].pid

    def in_flight() -> set[str]:
        started = {p.name.split("-")[1] for p in trace.glob(f"{killed}-*-start")}
        return started - {p.name.split("-")[1] for p in trace.glob(f"{killed}-*-end")}

    wait_for_tiles(run, work, 4, in_flight)  # killed while segmenting a tile
    workers[0].send_signal(signal.SIGKILL)
    code, err = finish(run)
    assert code == 0, err
    assert in_flight(), "the killed worker's tile was lost with it, and segmented elsewhere"
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["tiles_done"] == 42 and report["tiles_failed"] == 0 and report["workers"] == 2
    peaks = report["peak_rss_bytes"]  # the killed worker is there if it finished a tile before
    assert 1 <= len(peaks) <= 2 and min(peaks.values()) > 10 * 2**20
    # the full output: what a run in this process, without Dask, writes
    frame, _ = scene_run.segment_scene(scene.path, model=scene.model, tile_size=128, overlap=16, workers=0)
    output.write(frame, tmp_path / "here.gpkg")
    assert_same_output(out, tmp_path / "here.gpkg")

    # Dask's usual setting finds the cluster too (and the scheduler file works as an address)
    for env in ({"DASK_SCHEDULER_ADDRESS": address}, {"DASK_SCHEDULER_ADDRESS": str(file)}):
        code, err = finish(double_cli(*args[:-2], "-o", str(out), "--overwrite", env=env))
        assert code == 0, err
        report = json.loads((tmp_path / "out.report.json").read_text())
        assert report["workers"] == 1 and report["tiles_done"] == 42
    assert_same_output(out, tmp_path / "here.gpkg")


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path):
    import dask

    scene = make_scene(tmp_path, width=128, height=128, objects=4)
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(SchedulerError, match=r"cannot reach the Dask scheduler tcp://127.0.0.1:9"),
    ):
        scene_run.segment_scene(
            scene.path, model=scene.model, tile_size=64, overlap=8, scheduler="tcp://127.0.0.1:9"
        )


def test_local_workers_get_geosams_allocator_settings():
    """Dask's MALLOC_TRIM_THRESHOLD_ of 64 kB made every large array fresh pages (the model ran at half
    speed); local workers get geosam's allocator settings instead."""
    with dask_client(workers=1) as client:
        seen = client.run(lambda: {k: os.environ.get(k) for k in MALLOC})
    assert list(seen.values()) == [{k: str(v) for k, v in MALLOC.items()}]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux keeps ru_maxrss across exec")
def test_a_process_peak_is_its_own_not_its_parents():
    """A run's reported peaks are each process's own: a program started from a big process (a notebook,
    a benchmark holding a model) does not report the parent's size as its peak."""
    code = (
        "import subprocess, sys; held = bytearray(400 * 2**20); "  # the parent holds 400 MB
        "print(subprocess.run([sys.executable, '-c', 'from geosam.report import peak_rss; print(peak_rss())'], "
        "capture_output=True, text=True, check=True).stdout)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout) < 300 * 2**20


def test_a_local_clusters_scheduler_runs_apart_and_ends_with_the_client(tmp_path):
    """The local cluster's scheduler is not in the client's process (there it grew the client by ~0.7 KB
    a task) and does not outlive it: a client killed with -9 takes its scheduler and workers along."""
    code = (
        "import os, sys, time\n"
        "from geosam.cluster import dask_client\n"
        "if __name__ == '__main__':\n"
        "    with dask_client(workers=1) as client:\n"
        "        pids = [client.run_on_scheduler(os.getpid), *client.run(os.getpid).values()]\n"
        "        print(os.getpid(), *pids, flush=True)\n"
        "        time.sleep(600)\n"
    )
    script = tmp_path / "client.py"
    script.write_text(code)
    client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        own, scheduler, worker = map(int, client.stdout.readline().split())
        assert scheduler not in (own, worker)
    finally:
        client.kill()
        client.wait()
    deadline = time.monotonic() + 30
    while _alive(scheduler) or _alive(worker):
        assert time.monotonic() < deadline, "the scheduler or the worker outlived the client"
        time.sleep(0.2)


@pytest.mark.slow
def test_ctrl_c_stops_a_local_cluster_run_in_one_line_and_keeps_its_tiles(tmp_path):
    """SIGINT to the run's process group, as Ctrl-C in a terminal or a QGIS Cancel sends it: the client
    says "Interrupted." and nothing else (its workers printed tracebacks), no process is left, and the
    finished tiles stay for the next run."""
    scene = make_scene(tmp_path / "scene", seed=3, width=700, height=600, max_size=96, objects=80)
    out, work = tmp_path / "out.gpkg", tmp_path / "out.geosam-work"
    args = ["segment", str(scene.path), "-m", str(scene.labels), *TILING, "-w", "2", "-o", str(out)]
    run = double_cli(*args, env={"GEOSAM_TEST_DELAY": "0.5"}, start_new_session=True)
    wait_for_tiles(run, work, 4)
    os.killpg(run.pid, signal.SIGINT)
    code, err = finish(run, timeout=60)
    assert (code, err) == (130, "Interrupted.\n")
    assert not out.exists() and len(tiles_in(work)) >= 4
    deadline = time.monotonic() + 30
    while _group(run.pid):
        assert time.monotonic() < deadline, f"left running: {_group(run.pid)}"
        time.sleep(0.2)


def _group(pgid: int) -> list[int]:
    """The running processes of a process group."""
    import psutil

    def member(p: psutil.Process) -> bool:
        try:
            return os.getpgid(p.pid) == pgid and _alive(p.pid)
        except ProcessLookupError:
            return False

    return [p.pid for p in psutil.process_iter() if member(p)]


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not reaped by its new parent, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_local_scheduler_that_cannot_start_is_one_line(monkeypatch):
    """A scheduler process that exits at once: SchedulerError saying so, not Dask's traceback."""
    from geosam import scheduler

    monkeypatch.setattr(
        scheduler, "command", lambda file, *options: [sys.executable, "-c", "raise SystemExit(1)"]
    )
    with (
        pytest.raises(SchedulerError, match="the local Dask scheduler did not start"),
        dask_client(workers=1),
    ):
        pass
