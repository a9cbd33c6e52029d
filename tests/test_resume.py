"""Runs that survive being killed: a rerun segments only unfinished tiles and writes what a clean
run writes; stale results are never reused; failing tiles are retried, then reported."""

from __future__ import annotations

import json
import os
import pickle
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest

from geosam import output, scene_run
from geosam.errors import TileError
from geosam.resume import WorkDir
from geosam.testing import make_scene
from geosam.tiling import TileGrid

from .doubles import SlowReference

ROOT = Path(__file__).parents[1]
TILING = ["--tile-size", "128", "--overlap", "16"]  # 42 tiles on a 700 × 600 scene


def double_cli(*args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """The real CLI with the reference segmenter as its model (tests/double_cli.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.double_cli", *args], env=env, cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def tiles_in(work: Path) -> list[Path]:
    return sorted(work.glob("*/*.tile"))


def wait_for_tiles(
    run: subprocess.Popen, work: Path, count: int, also: Callable[[], object] = lambda: True
) -> None:
    """Until ``run`` has ``count`` tile files in ``work`` (and ``also()`` holds); fails if it ends first."""
    deadline = time.monotonic() + 240
    while len(tiles_in(work)) < count or not also():
        assert run.poll() is None, run.communicate()[1]
        assert time.monotonic() < deadline, "no tile finished in time"
        time.sleep(0.02)


def assert_same_output(a: Path, b: Path) -> None:
    """Same objects, same attributes, same geometries (byte for byte)."""
    fa, fb = gpd.read_file(a, layer="objects"), gpd.read_file(b, layer="objects")
    assert len(fa) == len(fb) > 0
    assert fa.drop(columns="geometry").equals(fb.drop(columns="geometry"))
    assert [g.wkb for g in fa.geometry] == [g.wkb for g in fb.geometry]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(
        tmp_path_factory.mktemp("scene"), seed=3, width=700, height=600, max_size=96, objects=80
    )


@pytest.mark.slow
def test_sigkilled_run_resumes_and_equals_a_clean_run(scene, tmp_path):
    out, clean = tmp_path / "out.gpkg", tmp_path / "clean.gpkg"
    args = ["-q", "segment", str(scene.path), "-m", str(scene.labels), *TILING, "-w", "1"]
    work = tmp_path / "out.geosam-work"
    run = double_cli(*args, "-o", str(out), env={"GEOSAM_TEST_DELAY": "0.1"}, start_new_session=True)
    wait_for_tiles(run, work, 10)  # killed once 10 of 42 tiles are done
    os.killpg(run.pid, signal.SIGKILL)  # the CLI and its Dask workers, without warning
    run.wait()
    kept = len(tiles_in(work))
    assert not out.exists() and 10 <= kept < 42

    code, err = finish(double_cli(*args, "-o", str(out), env={"GEOSAM_TEST_DELAY": "0.1"}))
    assert code == 0, err
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["tiles_planned"] == 42 and report["tiles_skipped"] >= kept
    assert report["tiles_skipped"] + report["tiles_done"] == 42 and report["status"] == "complete"
    assert not work.exists(), "the work folder goes once the output is written"

    code, err = finish(double_cli(*args, "-o", str(clean), env={"GEOSAM_TEST_DELAY": "0"}))
    assert code == 0, err
    assert_same_output(out, clean)
    # provenance travels with the layer
    metadata = pyogrio.read_info(out, layer="objects")["layer_metadata"]
    assert metadata["GEOSAM_MODEL"] == "slow-reference" and metadata["GEOSAM_VERSION"]
    stored = json.loads(metadata["GEOSAM_RUN_REPORT"])
    assert stored["tiles_skipped"] == report["tiles_skipped"] and stored["status"] == "complete"
    assert stored["parameters"]["tile_size"] == 128 and stored["versions"]["gdal"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clean.gpkg", "clean.report.json", "out.gpkg", "out.report.json"
    ]  # fmt: skip


def _run(scene, work: Path, **options):
    options = {
        "model": scene.model,
        "tile_size": 128,
        "overlap": 16,
        "workers": 0,
        "work_dir": work,
        **options,
    }
    return scene_run.segment_scene(scene.path, **options)


def test_stale_results_are_never_reused(scene, tmp_path):
    work = tmp_path / "work"
    frame, report = _run(scene, work)
    assert report.tiles_done == 42 and report.tiles_skipped == 0
    _, again = _run(scene, work, min_area=5.0)  # acts after stitching: every tile is reused
    assert again.tiles_skipped == 42 and again.tiles_done == 0
    _, other = _run(scene, work, overlap=24)  # another tiling
    assert other.tiles_skipped == 0
    _, other = _run(scene, work, model=SlowReference(str(scene.labels)))  # another model
    assert other.tiles_skipped == 0
    assert len([p for p in work.iterdir() if p.is_dir()]) == 1, "other runs' tiles are removed"
    os.utime(scene.path)  # the scene changed (new mtime)
    _, changed = _run(scene, work)
    assert changed.tiles_skipped == 0
    # a tile file of another run, planted under this run's key, is not trusted
    key_dir = next(p for p in work.iterdir() if p.is_dir())
    foreign = WorkDir(tmp_path / "elsewhere", "other")
    foreign.store(next(iter(TileGrid(700, 600, 128, 16))), [], True)
    (key_dir / "0_0.tile").write_bytes((foreign.tiles_dir / "0_0.tile").read_bytes())
    again_frame, again = _run(scene, work)
    assert again.tiles_skipped == 41 and again.tiles_done == 1
    assert again_frame.drop(columns="geometry").equals(frame.drop(columns="geometry"))


def test_a_folder_that_is_not_a_work_folder_is_refused(scene, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(output.OutputError, match="not a geosam work folder"):
        _run(scene, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_failing_tile_is_retried_then_reported(scene, tmp_path):
    tries = tmp_path / "tries"
    tries.mkdir()
    source = SlowReference(str(scene.labels), fail=("2,3",), tries=str(tries))
    with pytest.raises(
        TileError, match=r"1 of 42 tiles failed after 3 tries \(tile 2,3: the model fails"
    ) as error:
        _run(scene, tmp_path / "work", model=source, retries=2)
    report = error.value.report
    assert len(list(tries.iterdir())) == 3 and report.status == "failed"
    assert [(f.row, f.col) for f in report.failed] == [(2, 3)] and report.tiles_done == 41
    frame, partial = _run(scene, tmp_path / "work", model=source, retries=0, allow_partial=True)
    assert partial.status == "partial" and partial.tiles_skipped == 41 and len(frame) > 0


def test_failing_tile_on_dask_is_retried_then_reported(scene, tmp_path):
    tries = tmp_path / "tries"
    tries.mkdir()
    source = SlowReference(str(scene.labels), fail=("0,0", "5,6"), tries=str(tries))
    with pytest.raises(TileError, match="2 of 42 tiles failed after 2 tries") as error:
        _run(scene, None, model=source, retries=1, workers=1)
    assert sorted((f.row, f.col) for f in error.value.report.failed) == [(0, 0), (5, 6)]
    assert len(list(tries.iterdir())) == 4  # two tries each
    assert next(iter(error.value.report.peak_rss_bytes.values())) > 10 * 2**20


def test_cli_lists_failed_tiles_and_exits_1(scene, tmp_path):
    out = tmp_path / "out.gpkg"
    args = ["segment", str(scene.path), "-m", str(scene.labels), *TILING, "-w", "1", "-o", str(out)]
    code, err = finish(double_cli(*args, "--retries", "0", env={"GEOSAM_TEST_FAIL": "1,1;4,4"}))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "tile 1,1" in lines[0] and "tile 4,4" in lines[0], err
    assert not out.exists() and (tmp_path / "out.geosam-work").is_dir()
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["status"] == "failed" and len(report["failed"]) == 2 and report["tiles_done"] == 40
    code, err = finish(double_cli(*args, "--allow-partial", env={"GEOSAM_TEST_FAIL": "1,1;4,4"}))
    assert code == 0 and "2 tiles failed" in err, err
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["status"] == "partial" and report["tiles_skipped"] == 40 and out.exists()


def test_an_interrupted_write_leaves_the_old_output_intact(scene, tmp_path, monkeypatch):
    out = tmp_path / "out.gpkg"
    frame, report = _run(scene, None)
    output.write(frame, out, report=report)
    before = out.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)  # the temporary file is written, the move fails
    with pytest.raises(OSError, match="disk full"):
        output.write(frame.iloc[:3], out, overwrite=True, report=report)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.gpkg"], "no temporary file left"


class _Plant:
    """Unpickled, it creates the file ``path``: what a pickle planted in a work folder could do, harmlessly."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_pickle_in_the_work_folder_never_runs(scene, tmp_path, caplog):
    work, ran = tmp_path / "work", tmp_path / "ran"
    frame, _ = _run(scene, work)
    planted = pickle.dumps(_Plant(str(ran)))
    for path in tiles_in(work):  # what a run with --keep-work leaves, replaced by someone else's files
        path.write_bytes(planted)
    again, report = _run(scene, work)
    assert not ran.exists(), "a planted file ran code"
    assert report.tiles_skipped == 0 and report.tiles_done == 42, "each planted tile is segmented again"
    assert again.drop(columns="geometry").equals(frame.drop(columns="geometry"))
    assert [g.wkb for g in again.geometry] == [g.wkb for g in frame.geometry]
    assert "not a tile file of this run" in caplog.text
    pickle.loads(planted).close()  # the oracle: unpickled, the planted file does run code
    assert ran.exists()


HOLD = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from geosam.resume import WorkDir, output_lock\n"
    "held = WorkDir(sys.argv[1], '').lock() if sys.argv[2] == 'work' else output_lock(Path(sys.argv[1]))\n"
    "held.__enter__()\n"
    "print('held', flush=True)\n"
    "time.sleep(300)\n"
)


def hold(path: Path, what: str) -> subprocess.Popen:
    """Another process holding a work folder (``what``: "work") or an output ("output") until killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), what], stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_the_same_work_folder_is_refused_until_the_first_ends(scene, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out.gpkg"
    args = ["segment", str(scene.path), "-m", str(scene.labels), *TILING, "-w", "0", "-o", str(out)]
    holder = hold(work, "work")
    try:
        who = rf"is in use by another geosam run \(pid {holder.pid} on {re.escape(socket.gethostname())}, since "
        with pytest.raises(output.OutputError, match=who):
            _run(scene, work)
        code, err = finish(double_cli(*args, "--work-dir", str(work)))
        assert code == 1 and re.search(who, one_line(err)) and not out.exists()
        assert not tiles_in(work), "the refused runs wrote nothing"
    finally:
        holder.kill()  # it dies holding the lock: the kernel releases it, no stale lock is left
        holder.wait()
    _, report = _run(scene, work)
    assert report.tiles_done == 42
    with WorkDir(work, "").lock(), WorkDir(work, "").lock():  # one process may nest its holds
        pass
    # the same output with another work folder: refused too
    holder = hold(out, "output")
    try:
        code, err = finish(double_cli(*args, "--work-dir", str(tmp_path / "other")))
        line = one_line(err)
        assert code == 1 and f"{out} is being written by another geosam run (pid {holder.pid} on " in line, (
            err
        )
        assert not out.exists() and not (tmp_path / "other").exists()
    finally:
        holder.kill()
        holder.wait()
    code, err = finish(
        double_cli(*args, "--work-dir", str(tmp_path / "other"))
    )  # the killed run's lock is taken over
    assert code == 0 and out.exists(), err
    assert not [p for p in tmp_path.rglob(".*")], "the lock file goes with its run"


def _file_size_limit(size: int):
    def limit() -> None:  # in the child: a write past ``size`` bytes fails with EFBIG, not SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


@pytest.mark.slow
def test_full_disk_lost_permission_and_size_limits_stop_in_one_line_and_resume(scene, tmp_path):
    out, clean, work = tmp_path / "out.gpkg", tmp_path / "clean.gpkg", tmp_path / "out.geosam-work"
    args = ["-q", "segment", str(scene.path), "-m", str(scene.labels), *TILING, "-w", "0"]
    kept = f"run the same command again; finished tiles are kept in {work}"

    # a real kernel error: tile files over 4 KiB fail (EFBIG), the first few tiles are smaller
    code, err = finish(double_cli(*args, "-o", str(out), preexec_fn=_file_size_limit(4096)))
    line = one_line(err)
    assert code == 1 and "file size limit reached writing" in line and ".tile:" in line and kept in line, err
    done = len(tiles_in(work))
    assert 0 < done < 42
    # injected: a disk that fills up, a folder that stops being writable, after 8 more tiles each
    for fault, words in (("ENOSPC:8", "disk full writing"), ("EACCES:8", "permission denied writing")):
        code, err = finish(double_cli(*args, "-o", str(out), env={"GEOSAM_TEST_WRITE_FAULT": fault}))
        line = one_line(err)
        assert code == 1 and words in line and kept in line, err
        assert len(tiles_in(work)) == done + 8
        done += 8
    # every tile file and the object store (about 76 KiB) fit in 128 KiB, the GeoPackage (about 164 KiB)
    # does not: GDAL's error, told by a probe
    code, err = finish(double_cli(*args, "-o", str(out), preexec_fn=_file_size_limit(1 << 17)))
    line = one_line(err)
    assert code == 1 and f"file size limit reached writing {out}:" in line and kept in line, err
    assert len(tiles_in(work)) == 42 and not out.exists()
    assert not [p for p in tmp_path.rglob(".*")], "no temporary file is left"

    code, err = finish(double_cli(*args, "-o", str(out)))
    assert code == 0, err
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["tiles_skipped"] == 42 and report["status"] == "complete"
    code, err = finish(double_cli(*args, "-o", str(clean)))
    assert code == 0, err
    assert_same_output(out, clean)


def _bits_stop_writes(folder: Path) -> bool:
    """Whether a folder's permission bits stop this process writing into it (not as root, which
    writes anyway, unless it runs without CAP_DAC_OVERRIDE: ``setpriv --bounding-set -dac_override``)."""
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_bytes(b"")
    except PermissionError:
        return True
    finally:
        folder.chmod(0o755)
    return False


def test_a_work_folder_made_read_only_mid_run_stops_and_resumes(scene, tmp_path):
    if not _bits_stop_writes(tmp_path / "probe"):
        pytest.skip("permission bits do not stop this process's writes (root); the test above injects EACCES")
    work = tmp_path / "work"
    seen = []

    def revoke(result) -> None:
        seen.append(result)
        if len(seen) == 5:
            for folder in work.iterdir():
                if folder.is_dir():
                    folder.chmod(0o555)

    with pytest.raises(output.OutputError, match=r"permission denied writing .*\.tile: make it writable"):
        _run(scene, work, on_tile=revoke)
    for folder in work.iterdir():
        if folder.is_dir():
            folder.chmod(0o755)
    assert len(tiles_in(work)) == 4  # on_tile comes before the tile is stored: the 5th was refused
    _, report = _run(scene, work)
    assert report.tiles_skipped == 4 and report.tiles_done == 38


def test_a_tile_file_keeps_the_bounds_of_its_data_and_refuses_bad_ones(tmp_path, caplog):
    from geosam import tilefile
    from geosam.seams import Piece
    from geosam.tiling import Box

    work = WorkDir(tmp_path / "work", "k" * 16)
    tile = TileGrid(300, 300, 128, 16).tile(0, 1)
    work.store(tile, [], True, data_pixels=12, data_box=Box(120, 3, 130, 9))
    assert work.load_all(tile) == ([], True, 12, None, Box(120, 3, 130, 9))
    work.store(tile, [], True)  # no data: no bounds
    assert work.load_all(tile)[2:] == (0, None, None)
    path = next((tmp_path / "work").rglob("*.tile"))
    meta, _ = tilefile.loads(path.read_bytes(), Piece)
    path.write_bytes(tilefile.dumps({**meta, "data_box": [1, 2, "3", 4]}, [], Piece))
    assert work.load_all(tile) is None and not path.exists()  # dropped, to be segmented again
    assert "bad data bounds" in caplog.text
