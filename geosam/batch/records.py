"""Per-scene records of a pipeline's runs: a small JSON file beside each scene's output holding the key
of the run that made it, so that a later run with the same key skips the scene.

A scene's key is a hash of everything that decides its result: the scene file's identity (path, size,
modification time, header hash), the read plan, the model (name, checkpoint sha256, settings), tiling or
prompts (and the prompt file's identity) and filters. A merged output's key is its scenes' keys.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosam.atomic import write_bytes
from geosam.evaluation import vector_source
from geosam.fingerprint import digest, file_identity
from geosam.settings import OUTLINES

if TYPE_CHECKING:
    from geosam.batch.config import Pipeline


def record_path(output: Path) -> Path:
    """``NAME.run.json`` beside the output ``NAME.gpkg``."""
    return output.with_name(f"{output.stem}.run.json")


def scene_key(p: Pipeline, scene: str, prompts: str | None, model: dict[str, Any]) -> str:
    """A hash of everything that decides the result of a scene at ``scene`` with the prompt file
    ``prompts`` (None: automatic mode); ``model`` is ``fingerprint.model_identity``'s."""
    parts: dict[str, Any] = {
        "scene": file_identity(scene),
        "read": dataclasses.asdict(p.read),
        "model": model,
        "filters": dataclasses.asdict(p.filters),
    }
    if p.outlines != OUTLINES:  # the default leaves the keys of earlier versions as they were
        parts["outlines"] = dataclasses.asdict(p.outlines)
    if prompts is None:
        parts["tiling"] = dataclasses.asdict(p.tiling)
    else:
        settings = dataclasses.asdict(p.prompts)
        settings.pop("cache")  # where embeddings are kept does not change the result
        file, layer = vector_source(prompts)
        named = {"layername": layer} if layer is not None else {}  # a plain path keeps its earlier key
        parts["prompts"] = {**settings, "file": {**file_identity(file), **named}}
    return digest(parts)


def merged_key(scenes: list[tuple[str, str, str]]) -> str:
    """The key of a merged output: its scenes' (name, layer, key)."""
    return digest(scenes)


def read(path: Path) -> dict[str, Any] | None:
    """A record, or None where there is none (or it cannot be read)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write(path: Path, record: dict[str, Any]) -> None:
    """Write a record atomically, readable as the umask allows."""
    write_bytes(path, json.dumps(record, indent=1, sort_keys=True).encode())


def state(output: Path, record: Path, key: str) -> str:
    """'finished' (output exists, made with this key), 'stale' (exists otherwise) or 'todo'."""
    if not output.exists():
        return "todo"
    found = read(record)
    return "finished" if found is not None and found.get("key") == key else "stale"
