"""Image embeddings on disk: computed once per (scene, window, model), reused by every later prompt.

An entry is one ``.npz`` file holding the embedding and the georeferencing of the window it was
computed on. Its name is made of three hashes:

    <scene path>-<scene state>-<window, read plan, model>.npz

The scene's state is its size, modification time and a hash of its first 64 KiB (the header), so
an entry of a scene file that has changed is never read; it is deleted when the scene's new
embeddings are stored. The model's part of the key is its name, its checkpoint's sha256 and what
runs its encoder (torch at a precision, or ONNX Runtime): the same weights embed a little differently
in each. The folder is ``$GEOSAM_CACHE_DIR`` or the per-user cache (``~/.cache/geosam/embeddings``);
the oldest-used entries are deleted when it grows beyond its size limit.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch
from affine import Affine

from geosam.fingerprint import digest, file_state
from geosam.georef import Scene
from geosam.models.base import Embedding
from geosam.tiling import PromptWindow

log = logging.getLogger(__name__)

CACHE_ENV = "GEOSAM_CACHE_DIR"
SIZE_ENV = "GEOSAM_CACHE_SIZE_MB"
DEFAULT_MAX_MB = 2048  # MobileSAM embeddings are 4 MiB: about 500 windows
FORMAT = 1  # bump when the file layout changes: old entries are then misses


def default_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path(platformdirs.user_cache_dir("geosam")) / "embeddings"


def default_max_bytes() -> int:
    configured = os.environ.get(SIZE_ENV)
    return int(float(configured) * (1 << 20)) if configured else DEFAULT_MAX_MB << 20


@dataclass(frozen=True)
class CacheKey:
    """Where an entry lives: the scene's part (path, state) and the window/plan/model part."""

    scene: str  # hash of the scene path
    state: str  # hash of the scene file's state
    item: str  # hash of window, read plan and model

    @property
    def filename(self) -> str:
        return f"{self.scene}-{self.state}-{self.item}.npz"


def cache_key(
    scene: Scene, window: PromptWindow, model_name: str, checksum: str | None, encoder: str
) -> CacheKey | None:
    """The key of a window's embedding by ``encoder`` (a runtime's ``encoder_id``); None when the scene
    cannot be cached (not a local file)."""
    state = file_state(scene.path)
    if state is None:
        return None
    plan = {
        "grid": [scene.width, scene.height, list(scene.transform)[:6], scene.resampling],
        "bands": list(scene.bands),
        "stretch": scene.stretch,
        "nodata": scene.nodata,
        "window": [window.box.x0, window.box.y0, window.box.x1, window.box.y1, window.factor],
        "model": [model_name, checksum, encoder],
        "format": FORMAT,
    }
    return CacheKey(digest(os.path.abspath(scene.path), 16), digest(state, 8), digest(plan, 16))


class EmbeddingCache:
    """A folder of embeddings with a size limit; least recently used entries go first."""

    def __init__(self, folder: str | Path | None = None, max_bytes: int | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_dir()
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> tuple[Embedding, Affine] | None:
        """The stored embedding and its window transform, or None (and a miss)."""
        path = self.folder / key.filename
        try:
            with np.load(path, allow_pickle=False) as stored:
                if int(stored["format"]) != FORMAT:
                    raise ValueError("old format")
                features = torch.from_numpy(stored["features"])
                embedding = Embedding(
                    features, tuple(stored["original_size"].tolist()), tuple(stored["input_size"].tolist())
                )
                transform = Affine(*stored["transform"].tolist())
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # a damaged entry: drop it
            log.warning("embedding cache: dropping unreadable entry %s (%s)", path.name, exc)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        os.utime(path)  # most recently used
        self.hits += 1
        return embedding, transform

    def put(self, key: CacheKey, embedding: Embedding, transform: Affine) -> None:
        """Store an entry atomically, drop the scene's stale entries, keep the folder under its limit."""
        if self.max_bytes <= 0:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob(f"{key.scene}-*.npz"):
                if not stale.name.startswith(f"{key.scene}-{key.state}-"):
                    stale.unlink(missing_ok=True)  # the scene file has changed since
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".put-", suffix=".npz")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(
                        f,
                        format=np.int64(FORMAT),
                        features=embedding.features.detach().cpu().numpy(),
                        original_size=np.array(embedding.original_size),
                        input_size=np.array(embedding.input_size),
                        transform=np.array(list(transform)[:6], np.float64),
                    )
                os.replace(tmp, self.folder / key.filename)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            self.evict()
        except OSError as exc:  # a cache that cannot be written slows the next run, it does not fail this one
            log.warning("embedding cache: cannot store in %s (%s)", self.folder, exc)

    def entries(self) -> list[Path]:
        return sorted(self.folder.glob("*.npz")) if self.folder.is_dir() else []

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.entries())

    def evict(self) -> None:
        """Delete least recently used entries until the folder holds at most ``max_bytes``."""
        stats = []
        for path in self.entries():
            try:
                stats.append((path.stat().st_mtime_ns, path.stat().st_size, path))
            except FileNotFoundError:
                continue
        total = sum(size for _, size, _ in stats)
        for _, size, path in sorted(stats):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def clear(self) -> int:
        """Delete every entry; return how many there were."""
        entries = self.entries()
        for path in entries:
            path.unlink(missing_ok=True)
        return len(entries)
