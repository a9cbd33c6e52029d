"""The PyTorch runtime: a SAM network's image encoder and prompt decoder, run by torch."""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, Self

import torch

from geosam import heap
from geosam.errors import ModelError
from geosam.models._mobile_sam import import_mobile_sam, import_sam_onnx
from geosam.models.checkpoints import check_architecture, read_state_dict
from geosam.models.decoder import ImageTerms, LowRankDecoder
from geosam.models.encoder import chunk_attention
from geosam.models.parts import MaskDecoder, PromptEncoder

TERMS_KEPT = 2  # images whose decoding terms stay in memory (about 30 MB each): prompts may alternate windows
# Prompts per low-rank decoder call: each needs about 5 MB of the arrays the decoder keeps between calls (the
# masks are upscaled a few positions at a time). Measured on 2 cores: 16 at a time take 8 % less time than 8.
PROMPTS_PER_CALL = 16
# The image encoder's arrays of this size and more (ViT-B's 12.6 MB activations) are mapped afresh rather
# than taken from the heap, where their holes outlast the pass (geosam.heap.mapped_above).
ENCODER_MAPPED_BYTES = 8 * 2**20
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
VIT = ("vit_b", "vit_l", "vit_h")
BUILDERS = {
    "vit_t": "build_sam_vit_t",
    "vit_b": "build_sam_vit_b",
    "vit_l": "build_sam_vit_l",
    "vit_h": "build_sam_vit_h",
}


class ImageEncoder(Protocol):
    """segment-anything's ``ImageEncoderViT`` or MobileSAM's ``TinyViT``."""

    img_size: int

    def __call__(self, x: torch.Tensor, /) -> torch.Tensor: ...


class SamNetwork(Protocol):
    """What the runtime uses of segment-anything's ``Sam`` module (mobile_sam is untyped, and torch types an
    nn.Module's submodules only as ``Tensor | Module``)."""

    image_encoder: ImageEncoder
    prompt_encoder: PromptEncoder
    mask_decoder: MaskDecoder

    @property
    def device(self) -> torch.device: ...

    def eval(self) -> Self: ...


class PromptDecoderModule(Protocol):
    """``prompt_decoder``'s module: segment-anything's ``SamOnnxModel`` with a batched ``forward``."""

    def __call__(
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def _embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor: ...


def prompt_decoder(sam: SamNetwork) -> PromptDecoderModule:
    """SAM's prompt encoder and mask decoder as one module of plain tensors, exportable to ONNX.

    ``forward(image_embeddings (1, 256, 64, 64), point_coords (B, N, 2), point_labels (B, N))``
    returns every mask token's low-resolution logits (B, 4, 256, 256) and predicted IoU (B, 4): token 0
    is the single-mask answer, tokens 1-3 the multimask ones. Coordinates are model input pixels (x, y);
    labels 1 inside, 0 outside, 2 and 3 a box's top-left and bottom-right corners, -1 padding, as in
    segment-anything's ONNX export, whose point embedding this reuses. That export itself picks one
    mask per prompt and upsamples it to one image size, so it does not serve batched prompts.
    """
    base: Any = import_sam_onnx()  # a class of untyped mobile_sam: Any to mypy, which can subclass it

    class PromptDecoder(base):
        def forward(self, image_embeddings, point_coords, point_labels):
            sparse = self._embed_points(point_coords, point_labels)
            dense = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            size = self.model.prompt_encoder.image_embedding_size
            dense = dense.expand(point_coords.shape[0], -1, size[0], size[1])
            return self.model.mask_decoder.predict_masks(
                image_embeddings=image_embeddings,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
            )

    return PromptDecoder(sam, return_single_mask=False).eval()


@contextlib.contextmanager
def _vit_without_storage(build_sam: ModuleType) -> Iterator[None]:
    """``build_sam``'s builders make their ViT image encoder without storage (on torch's meta device), to
    take the checkpoint's tensors as its own: no random initialisation, and no second copy of the weights
    while loading (ViT-H's are 2.5 GB). Only the encoder: the prompt encoder and mask decoder (4 M
    parameters) draw random numbers while they are built, which on the meta device imports torch's
    symbolic-shape machinery (sympy: 65-75 MB resident for the process's life)."""
    encoder = build_sam.ImageEncoderViT

    def without_storage(*args, **kwargs) -> torch.nn.Module:
        with torch.device("meta"):
            return encoder(*args, **kwargs)

    # the builders look the class up when they run; vars(): ModuleType declares no attributes to set
    vars(build_sam)["ImageEncoderViT"] = without_storage
    try:
        yield
    finally:
        vars(build_sam)["ImageEncoderViT"] = encoder


class TorchRuntime:
    """A SAM network in torch: ``encode`` normalised, padded images, ``decode`` batches of prompts.

    A ViT image encoder attends in query chunks (``geosam.models.encoder``): SAM's result in a fraction
    of its memory.
    """

    multimask = True  # answers with three masks per prompt where asked
    batched = True  # decodes many prompts per call

    def __init__(self, sam: SamNetwork, precision: str = "fp32") -> None:
        self.sam = sam.eval()
        chunk_attention(self.sam.image_encoder)
        self.dtype = PRECISIONS[precision]  # of the image encoder; the decoder runs in float32
        self.encoder_id = f"torch {precision}"
        self.decoder = prompt_decoder(self.sam)  # the reference graph, exported for ONNX Runtime
        self.fast = LowRankDecoder(self.sam.mask_decoder, self.sam.prompt_encoder)
        self._terms: OrderedDict[int, tuple[torch.Tensor, ImageTerms]] = OrderedDict()  # recent images

    @classmethod
    def load(
        cls, architecture: str, checkpoint: Path, device: str = "cpu", precision: str = "fp32"
    ) -> TorchRuntime:
        """Build ``architecture`` and load its state dict (never unpickling code)."""
        state = read_state_dict(checkpoint)
        check_architecture(checkpoint, state, architecture)
        build_sam, _ = import_mobile_sam()
        # TinyViT computes tensors while it is built, which needs real ones
        with _vit_without_storage(build_sam) if architecture in VIT else contextlib.nullcontext():
            sam = getattr(build_sam, BUILDERS[architecture])()
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        try:
            sam.load_state_dict(state, strict=True, assign=architecture in VIT)
        except (RuntimeError, KeyError, EOFError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{checkpoint} is not a SAM {architecture} checkpoint ({first})") from exc
        return cls(sam.to(device), precision)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image features (B, 256, 64, 64) of normalised, padded images (B, 3, S, S), in one call."""
        with (
            heap.mapped_above(ENCODER_MAPPED_BYTES),
            torch.autocast(self.device.type, self.dtype, enabled=self.dtype != torch.float32),
        ):
            return self.sam.image_encoder(x.to(self.device)).float()

    @torch.inference_mode()
    def decode(
        self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution logits (B, K, 256, 256) and IoU (B, K) for B prompts; K: 3 or 1 (``multimask``)."""
        masks, iou = self.decode_confident(features, coords, labels, multimask, -math.inf)
        answers = 3 if multimask else 1
        return masks.unflatten(0, (-1, answers)), iou.view(-1, answers)

    @torch.inference_mode()
    def decode_confident(
        self,
        features: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        multimask: bool,
        min_iou: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (M, 256, 256) and IoU (M,) of the masks predicted at least ``min_iou``, prompt by prompt;
        the others are never computed."""
        sparse = self.decoder._embed_points(coords.to(self.device), labels.to(self.device))
        terms = self.terms(features)
        parts = [
            self.fast.confident(terms, group, multimask, min_iou) for group in sparse.split(PROMPTS_PER_CALL)
        ]
        return torch.cat([masks for masks, _ in parts]), torch.cat([iou for _, iou in parts])

    def forget(self) -> None:
        self._terms.clear()
        self.fast.forget()

    def terms(self, features: torch.Tensor) -> ImageTerms:
        """The prompt-independent part of decoding ``features``, kept for the last few images."""
        key = id(features)
        if key in self._terms and self._terms[key][0] is features:
            self._terms.move_to_end(key)
            return self._terms[key][1]
        # features read from the embedding cache are the CPU's
        self._terms[key] = (features, self.fast.prepare(features.to(self.device)))
        while len(self._terms) > TERMS_KEPT:
            self._terms.popitem(last=False)
        return self._terms[key][1]
