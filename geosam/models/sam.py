"""SAM-family models in PyTorch: image embedding and prompt decoding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geosam.errors import ModelError
from geosam.models._mobile_sam import import_mobile_sam
from geosam.models.automatic import AutomaticParams, generate
from geosam.models.base import Masks
from geosam.models.checkpoints import check_architecture, read_state_dict
from geosam.tiling import TileImage

BUILDERS = {
    "vit_t": "build_sam_vit_t",
    "vit_b": "build_sam_vit_b",
    "vit_l": "build_sam_vit_l",
    "vit_h": "build_sam_vit_h",
}


@dataclass(frozen=True)
class Embedding:
    """An image embedding with the sizes needed to map prompts and masks to the image."""

    features: torch.Tensor  # (1, 256, 64, 64)
    original_size: tuple[int, int]  # (H, W) of the image
    input_size: tuple[int, int]  # (h, w) after resizing the longest side to the model input


class SamModel:
    """A SAM model (any of its image encoders) answering point and box prompts on embedded images."""

    def __init__(
        self,
        name: str,
        sam: torch.nn.Module,
        params: AutomaticParams | None = None,
        checksum: str | None = None,
    ) -> None:
        self.name = name
        self.sam = sam.eval()
        self.params = params or AutomaticParams()
        self.checksum = checksum  # sha256 of the checkpoint: part of the embedding cache's key

    @classmethod
    def load(
        cls, name: str, architecture: str, checkpoint: Path, device: str = "cpu",
        params: AutomaticParams | None = None, checksum: str | None = None,
    ) -> SamModel:  # fmt: skip
        """Build ``architecture`` and load its state dict (never unpickling code)."""
        state = read_state_dict(checkpoint)
        check_architecture(checkpoint, state, architecture)
        build_sam, _ = import_mobile_sam()
        sam = getattr(build_sam, BUILDERS[architecture])()
        try:
            sam.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError, EOFError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{checkpoint} is not a SAM {architecture} checkpoint ({first})") from exc
        return cls(name, sam.to(device), params, checksum)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> Embedding:
        """Embed a uint8 H×W×3 image: resize longest side to the model input, normalise, pad."""
        h, w = image.shape[:2]
        scale = self.image_size / max(h, w)
        input_size = (int(h * scale + 0.5), int(w * scale + 0.5))
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, input_size, mode="bilinear", align_corners=False, antialias=True)
        x = self.sam.preprocess(x[0].clamp(0, 255))[None]
        return Embedding(self.sam.image_encoder(x), (h, w), input_size)

    @torch.inference_mode()
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
        image pixel coordinates. K is 3 with ``multimask``, else 1.
        """
        if points is None and boxes is None:
            raise ValueError("decode needs points, boxes or both")
        h, w = embedding.original_size
        scale = np.array([embedding.input_size[1] / w, embedding.input_size[0] / h], np.float32)
        point_prompt = None
        if points is not None:
            coords = torch.as_tensor(points * scale, dtype=torch.float32, device=self.device)
            point_prompt = (coords, torch.as_tensor(labels, dtype=torch.int, device=self.device))
        box_prompt = None
        if boxes is not None:
            box_prompt = torch.as_tensor(
                np.asarray(boxes, np.float32) * np.tile(scale, 2), dtype=torch.float32, device=self.device
            )
        sparse, dense = self.sam.prompt_encoder(points=point_prompt, boxes=box_prompt, masks=None)
        low_res, iou = self.sam.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        return low_res, iou

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
        _, amg = import_mobile_sam()
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
        rows, cols = self.low_res_extent(embedding)
        stability = amg.calculate_stability_score(
            logits[:, :rows, :cols], 0.0, self.params.stability_score_offset
        )
        mask = (self.upscale(embedding, logits) > 0)[0].cpu().numpy()
        return mask, float(iou[0, best]), float(stability[0])

    @torch.inference_mode()
    def upscale(self, embedding: Embedding, low_res: torch.Tensor) -> torch.Tensor:
        """Mask logits (N, H, W) at the image's size from low-resolution logits (N, 256, 256)."""
        return self.sam.postprocess_masks(low_res[:, None], embedding.input_size, embedding.original_size)[
            :, 0
        ]

    @property
    def low_res_scale(self) -> float:
        """Low-resolution mask pixels per model input pixel."""
        return 4 * self.sam.prompt_encoder.image_embedding_size[0] / self.image_size  # decoder upscales 4×

    def low_res_extent(self, embedding: Embedding) -> tuple[int, int]:
        """Rows and columns of the low-resolution masks that cover the image (the rest is padding)."""
        h, w = embedding.input_size
        return max(1, int(np.ceil(h * self.low_res_scale))), max(1, int(np.ceil(w * self.low_res_scale)))

    def automatic(self, tile: TileImage) -> Masks:
        return generate(self, tile.image, tile.valid, self.params)
