"""Segmentation models: the registry of named checkpoints and how to load them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from geosam.models.base import AutomaticParams, Masks, Segmenter
from geosam.models.weights import installed_path, known, sha256_file

DEFAULT_MODEL = "mobile_sam"

__all__ = ["AutomaticParams", "DEFAULT_MODEL", "Masks", "ModelSpec", "Segmenter", "load_model"]


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load a model: small, hashable, cheap to send to workers.

    A named, installed model (``name``), or any SAM state dict at ``checkpoint``, where ``name`` is
    only a label (the file's stem by default) and ``architecture`` (vit_t, vit_b, vit_l, vit_h) is
    detected from the weights' shapes when not given. A checkpoint is read and hashed once, here, on
    the client: ``checksum`` (its sha256) and the architecture travel to the workers with the spec.
    """

    name: str = DEFAULT_MODEL
    device: str = "cpu"
    params: AutomaticParams = field(default_factory=AutomaticParams)
    checkpoint: Path | None = None
    architecture: str | None = None
    checksum: str | None = None

    def __post_init__(self) -> None:
        if self.checkpoint is None:
            return
        from geosam.models.checkpoints import identify

        path = Path(self.checkpoint).expanduser().absolute()
        object.__setattr__(self, "checkpoint", path)
        if self.name == DEFAULT_MODEL:
            object.__setattr__(self, "name", path.stem)
        if self.architecture is None or self.checksum is None:
            object.__setattr__(self, "architecture", identify(path, self.architecture))
            object.__setattr__(self, "checksum", sha256_file(path))

    def check(self) -> None:
        """Fail early, on the client, if the model is unknown or not installed."""
        if self.checkpoint is None:
            installed_path(self.name)

    def load(self) -> Segmenter:
        return load_model(self)


def load_model(spec: ModelSpec | str = DEFAULT_MODEL) -> Segmenter:
    """Load a named, installed model (``geosam models fetch NAME`` installs it) or a spec's checkpoint."""
    from geosam.errors import ModelError
    from geosam.models.sam import SamModel

    spec = ModelSpec(spec) if isinstance(spec, str) else spec
    if spec.checkpoint is not None:
        return SamModel.load(
            spec.name, spec.architecture, spec.checkpoint, spec.device, spec.params, checksum=spec.checksum
        )
    checkpoint = known(spec.name)
    if checkpoint.format == "onnx":
        raise ModelError(f"{spec.name} is an ONNX model: it needs --backend onnx (ONNX Runtime), not torch")
    return SamModel.load(
        spec.name, checkpoint.architecture, installed_path(spec.name), spec.device, spec.params,
        checksum=checkpoint.sha256,
    )  # fmt: skip
