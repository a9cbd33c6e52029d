"""Segmentation models: the registry of named checkpoints and how to load them."""

from __future__ import annotations

from dataclasses import dataclass, field

from geosam.models.base import AutomaticParams, Masks, Segmenter
from geosam.models.weights import installed_path, known

DEFAULT_MODEL = "mobile_sam"

__all__ = ["AutomaticParams", "DEFAULT_MODEL", "Masks", "ModelSpec", "Segmenter", "load_model"]


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load a model: small, hashable, cheap to send to workers."""

    name: str = DEFAULT_MODEL
    device: str = "cpu"
    params: AutomaticParams = field(default_factory=AutomaticParams)

    def check(self) -> None:
        """Fail early, on the client, if the model is unknown or not installed."""
        installed_path(self.name)

    def load(self) -> Segmenter:
        return load_model(self)


def load_model(spec: ModelSpec | str = DEFAULT_MODEL) -> Segmenter:
    """Load a named, installed model (``geosam models fetch NAME`` installs it)."""
    from geosam.models.sam import SamModel

    spec = ModelSpec(spec) if isinstance(spec, str) else spec
    checkpoint = known(spec.name)
    return SamModel.load(
        spec.name, checkpoint.architecture, installed_path(spec.name), spec.device, spec.params,
        checksum=checkpoint.sha256,
    )  # fmt: skip
