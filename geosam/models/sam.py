"""SAM-family models: pre- and post-processing around a runtime that runs the network.

A runtime (``geosam.models.torch.TorchRuntime``, ``geosam.models.onnx.OnnxRuntime``) runs the image
encoder on a normalised, padded image and the prompt decoder on prompts in model input pixels;
``SamModel`` maps images, prompts and masks between the image and the model input, and answers
prompts and automatic mode the same way whatever runs the network.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from geosam.models import features
from geosam.models.automatic import (
    AutomaticParams,
    Upsampling,
    generate,
    grid_points,
    nonempty,
    stability_scores,
)
from geosam.models.base import Embedding, Funnel, Masks
from geosam.tiling import TileImage

PIXEL_MEAN = (123.675, 116.28, 103.53)  # SAM's normalisation of RGB in 0-255
PIXEL_STD = (58.395, 57.12, 57.375)
LOW_RES_SCALE = 0.25  # SAM's decoders answer with 256² masks for 1024² inputs
# Embeddings (4 MB each) of the latest tiles segmented, kept for the prompts their neighbours send them
# next (geosam.reprompt): a tile's first round follows it by about one row of tiles.
EMBEDDINGS_KEPT = 16


class Runtime(Protocol):
    """Runs a SAM network: what ``SamModel`` needs of torch or ONNX Runtime."""

    @property
    def image_size(self) -> int:
        """Side of the square model input."""
        ...

    multimask: bool  # whether decode can answer with all three masks of a prompt
    batched: bool  # whether one decode call runs many prompts at once (else it loops over them)
    encoder_id: str  # what computes embeddings ("torch fp16", "onnxruntime vit_b.encoder.onnx"): cache key

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image features (1, 256, 64, 64) of a normalised, padded image (1, 3, S, S)."""
        ...

    def decode(
        self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution logits (B, K, 256, 256) and predicted IoU (B, K) for B prompts.

        ``coords`` (B, N, 2) are model input pixels (x, y); ``labels`` (B, N) are 1 inside, 0 outside,
        2 and 3 a box's corners, -1 padding.
        """
        ...

    def decode_confident(
        self,
        features: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        multimask: bool,
        min_iou: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``decode``'s masks (M, 256, 256) and IoU (M,), prompt by prompt, of those predicted at least
        ``min_iou`` (automatic mode's first filter; a runtime may skip computing the others)."""
        ...

    def forget(self) -> None:
        """Drop what is kept to decode recent images' features again."""
        ...


class SamModel:
    """A SAM model (any of its image encoders) answering point and box prompts on embedded images."""

    def __init__(
        self,
        name: str,
        runtime: Runtime,
        params: AutomaticParams | None = None,
        checksum: str | None = None,
    ) -> None:
        self.name = name
        self.runtime = runtime
        self.params = params or AutomaticParams()
        self.checksum = checksum  # sha256 of the checkpoint: part of the embedding cache's key
        self._recent: OrderedDict[bytes, Embedding] = OrderedDict()  # by a digest of the image

    @classmethod
    def load(
        cls, name: str, architecture: str, checkpoint: Path, device: str = "cpu",
        params: AutomaticParams | None = None, checksum: str | None = None, precision: str = "fp32",
    ) -> SamModel:  # fmt: skip
        """A torch checkpoint of ``architecture``, run by torch."""
        from geosam.models.torch import TorchRuntime

        return cls(name, TorchRuntime.load(architecture, checkpoint, device, precision), params, checksum)

    @property
    def image_size(self) -> int:
        return self.runtime.image_size

    @property
    def encoder_id(self) -> str:
        return self.runtime.encoder_id

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> Embedding:
        """Embed a uint8 H×W×3 image: resize longest side to the model input, normalise, pad."""
        return self.embed_many([image])[0]

    @torch.inference_mode()
    def embed_many(self, images: list[np.ndarray]) -> list[Embedding]:
        """``embed`` for several images in one encoder call (a GPU's throughput needs batches)."""
        inputs = [self._input(image) for image in images]
        features = self.runtime.encode(
            inputs[0][0] if len(inputs) == 1 else torch.cat([x for x, _ in inputs])
        )
        return [
            Embedding(f[None], image.shape[:2], size)
            for f, image, (_, size) in zip(features, images, inputs, strict=True)
        ]

    def _input(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """The model input (1, 3, S, S) of a uint8 H×W×3 image, and the size the image takes in it."""
        h, w = image.shape[:2]
        scale = self.image_size / max(h, w)
        size = (int(h * scale + 0.5), int(w * scale + 0.5))
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)
        mean, std = torch.tensor(PIXEL_MEAN).view(-1, 1, 1), torch.tensor(PIXEL_STD).view(-1, 1, 1)
        x = (x[0].clamp(0, 255) - mean) / std
        return F.pad(x, (0, self.image_size - size[1], 0, self.image_size - size[0]))[None], size

    def decode(
        self,
        embedding: Embedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution mask logits (B, K, 256, 256) and predicted IoU (B, K) for B prompts.

        Each prompt is a set of points, a box, or both: ``points`` (B, N, 2) in image pixel coordinates
        (x, y) with ``labels`` (B, N), 1 inside and 0 outside; ``boxes`` (B, 4) as x0, y0, x1, y1 in
        image pixel coordinates. K is 3 with ``multimask`` where the runtime can answer with three
        masks, else 1 (the best of three with ``multimask``).
        """
        coords, kinds = self._prompts(embedding, points, labels, boxes)
        return self.runtime.decode(embedding.features, coords, kinds, multimask)

    def confident_points(
        self, embedding: Embedding, points: np.ndarray, labels: np.ndarray, multimask: bool, min_iou: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (M, 256, 256) and IoU (M,) of the masks that ``decode`` would answer to the point sets
        ``points`` (B, N, 2) with ``labels`` (B, N) and that the model predicts at least ``min_iou``."""
        coords, kinds = self._prompts(embedding, points, labels, None)
        return self.runtime.decode_confident(embedding.features, coords, kinds, multimask, min_iou)

    def _prompts(
        self,
        embedding: Embedding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts as the runtime takes them: coordinates (B, N, 2) in model input pixels and labels (B, N)."""
        if points is None and boxes is None:
            raise ValueError("decode needs points, boxes or both")
        h, w = embedding.original_size
        scale = np.array([embedding.input_size[1] / w, embedding.input_size[0] / h], np.float32)
        coords, kinds = [], []
        if points is not None:
            coords.append(np.asarray(points, np.float32) * scale)
            kinds.append(np.asarray(labels, np.float32))
        if boxes is None:  # SAM pads point prompts without a box with one non-point
            coords.append(np.zeros((len(coords[0]), 1, 2), np.float32))
            kinds.append(-np.ones((len(coords[0]), 1), np.float32))
        else:
            corners = np.asarray(boxes, np.float32).reshape(-1, 2, 2) * scale
            coords.append(corners)
            kinds.append(np.tile(np.array([2, 3], np.float32), (len(corners), 1)))
        return torch.from_numpy(np.concatenate(coords, 1)), torch.from_numpy(np.concatenate(kinds, 1))

    def decode_points(
        self, embedding: Embedding, points: np.ndarray, labels: np.ndarray, multimask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``decode`` for point sets only: ``points`` (B, N, 2), ``labels`` (B, N)."""
        return self.decode(embedding, points, labels, multimask=multimask)

    def prompt(
        self,
        embedding: Embedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, float]:
        """One object from one prompt: its mask at image size (bool H×W), predicted IoU, stability.

        ``points`` (N, 2) with ``labels`` (N,) and/or ``box`` (4,), in image pixel coordinates. A single
        point is ambiguous, so the best of the model's three masks is taken (as SAM does); several
        points or a box ask for one mask.
        """
        multimask = box is None and (points is None or len(points) == 1)
        low_res, iou = self.decode(
            embedding,
            None if points is None else np.asarray(points, np.float32)[None],
            None if labels is None else np.asarray(labels)[None],
            None if box is None else np.asarray(box, np.float32)[None],
            multimask=multimask,
        )
        best = int(iou[0].argmax())
        logits = low_res[0, best : best + 1]
        stability = stability_scores(logits, self.upsampling(embedding), self.params.stability_score_offset)
        mask = (self.upscale(embedding, logits) > 0)[0].cpu().numpy()
        return mask, float(iou[0, best]), float(stability[0])

    @torch.inference_mode()
    def upscale(self, embedding: Embedding, low_res: torch.Tensor) -> torch.Tensor:
        """Mask logits (N, H, W) at the image's size from low-resolution logits (N, 256, 256)."""
        size = (self.image_size, self.image_size)
        masks = F.interpolate(low_res[:, None], size, mode="bilinear", align_corners=False)
        masks = masks[..., : embedding.input_size[0], : embedding.input_size[1]]
        if embedding.input_size != embedding.original_size:
            masks = F.interpolate(masks, embedding.original_size, mode="bilinear", align_corners=False)
        return masks[:, 0]

    def upsampling(self, embedding: Embedding) -> Upsampling:
        """How ``upscale`` brings low-resolution logits to the image (for counting without doing it)."""
        low = round(self.image_size * self.low_res_scale)
        return Upsampling(low, self.image_size, embedding.input_size, embedding.original_size)

    @property
    def low_res_scale(self) -> float:
        """Low-resolution mask pixels per model input pixel."""
        return LOW_RES_SCALE

    def low_res_extent(self, embedding: Embedding) -> tuple[int, int]:
        """Rows and columns of the low-resolution masks that cover the image (the rest is padding)."""
        h, w = embedding.input_size
        return max(1, int(np.ceil(h * self.low_res_scale))), max(1, int(np.ceil(w * self.low_res_scale)))

    def automatic(self, tile: TileImage) -> Masks:
        if not len(grid_points(self.params.points_per_side, tile.valid)):  # nothing to ask: not embedded
            height, width = tile.valid.shape
            return Masks.empty(height, width, Funnel())
        return generate(self, tile.image, tile.valid, self.params, self._remember(tile.image))

    def _remember(self, image: np.ndarray, embedding: Embedding | None = None) -> Embedding:
        """The embedding of ``image``: one of the latest, else ``embedding`` or a new one, kept as the latest."""
        key = (
            hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
            + repr(image.shape).encode()
        )
        if key in self._recent:
            self._recent.move_to_end(key)
        else:
            self._recent[key] = embedding or self.embed(image)
            while len(self._recent) > EMBEDDINGS_KEPT:
                self._recent.popitem(last=False)
        return self._recent[key]

    def forget(self) -> None:
        """Drop the embeddings and decoding terms kept for prompts about recent images."""
        self._recent.clear()
        self.runtime.forget()

    @torch.inference_mode()
    def point_masks(self, tile: TileImage, points: list[np.ndarray]) -> list[Masks]:
        """The model's three masks for each set of positive points (N, 2; x, y in tile image pixels),
        on valid pixels, less those that are empty."""
        if not points:
            return []
        embedding = self._remember(tile.image)  # embedded already where the tile was just segmented
        upsampling = self.upsampling(embedding)
        found = []
        for group in points:
            group = np.asarray(group, np.float32)
            low_res, iou = (
                answer.cpu()
                for answer in self.decode_points(
                    embedding, group[None], np.ones((1, len(group))), multimask=self.runtime.multimask
                )
            )
            stability = stability_scores(low_res[0], upsampling, self.params.stability_score_offset)
            masks = (self.upscale(embedding, low_res[0].float()) > 0).numpy() & tile.valid
            keep = nonempty(masks)
            described = features.pool(embedding, features.low_res_weights(low_res[0].float()))
            found.append(
                Masks(masks[keep], iou[0].numpy()[keep], stability.numpy()[keep], None, described[keep])
            )
        return found

    @torch.inference_mode()
    def describe(self, tile: TileImage, masks: np.ndarray) -> np.ndarray:
        """Descriptors (N, C) of masks (N, H, W) of the tile image, from its embedding (``geosam.models.features``)."""
        embedding = self._remember(tile.image)
        return features.pool(embedding, features.mask_weights(embedding, masks, self.image_size))

    @torch.inference_mode()
    def similarity(self, tile: TileImage, prototypes: np.ndarray) -> np.ndarray:
        """Each embedding cell's similarity (K, 64, 64) to K prototypes (K, C)."""
        return features.similarity(self._remember(tile.image), prototypes).numpy()

    def automatic_many(self, tiles: list[TileImage]) -> list[Masks]:
        """``automatic`` for several tiles, embedded in one encoder call."""
        embeddings = self.embed_many([tile.image for tile in tiles])
        return [
            generate(self, tile.image, tile.valid, self.params, self._remember(tile.image, embedding))
            for tile, embedding in zip(tiles, embeddings, strict=True)
        ]
