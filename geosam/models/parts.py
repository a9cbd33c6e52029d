"""The parts of segment-anything's networks (``mobile_sam.modeling``) that geosam reads, as typing
Protocols: those modules are untyped, and torch types an ``nn.Module``'s submodules and parameters only
as ``Tensor | Module``. Descriptions for the type checker; nothing here runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from torch import Tensor


class Weighted(Protocol):
    """A layer whose weight the decoder reads: ``nn.Embedding`` (its weight is the embedded tokens)."""

    weight: Tensor


class Affine(Weighted, Protocol):
    """A layer's weight and bias: ``nn.Linear``, ``nn.LayerNorm``, ``LayerNorm2d``, ``nn.ConvTranspose2d``."""

    bias: Tensor


class Linear(Affine, Protocol):
    def __call__(self, x: Tensor, /) -> Tensor: ...


class Norm(Affine, Protocol):
    eps: float

    def __call__(self, x: Tensor, /) -> Tensor: ...


class SubpixelConv(Affine, Protocol):
    """A 2×2 stride-2 ``nn.ConvTranspose2d`` with a bias."""

    out_channels: int


_Activation = Callable[[Tensor], Tensor]


class Attention(Protocol):
    """segment-anything's ``transformer.Attention``."""

    num_heads: int
    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    out_proj: Linear

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor: ...


class TwoWayBlock(Protocol):
    """segment-anything's ``TwoWayAttentionBlock``."""

    skip_first_layer_pe: bool
    self_attn: Attention
    cross_attn_token_to_image: Attention
    cross_attn_image_to_token: Attention
    mlp: Callable[[Tensor], Tensor]
    norm1: Norm
    norm2: Norm
    norm3: Norm
    norm4: Norm


class TwoWayTransformer(Protocol):
    layers: Sequence[TwoWayBlock]  # an nn.ModuleList
    final_attn_token_to_image: Attention
    norm_final_attn: Norm


class MaskDecoder(Protocol):
    """segment-anything's ``MaskDecoder`` (``sam.mask_decoder``)."""

    transformer: TwoWayTransformer
    iou_token: Weighted  # nn.Embedding
    mask_tokens: Weighted  # nn.Embedding
    num_mask_tokens: int
    iou_prediction_head: Callable[[Tensor], Tensor]
    output_hypernetworks_mlps: Sequence[Callable[[Tensor], Tensor]]  # an nn.ModuleList
    # an nn.Sequential, typed as what unpacking it gives: ConvTranspose2d, LayerNorm2d, GELU,
    # ConvTranspose2d, GELU
    output_upscaling: tuple[SubpixelConv, Norm, _Activation, SubpixelConv, _Activation]


class PromptEncoder(Protocol):
    """segment-anything's ``PromptEncoder`` (``sam.prompt_encoder``)."""

    no_mask_embed: Weighted  # nn.Embedding

    def get_dense_pe(self) -> Tensor: ...
