"""SAM's ViT image encoder with its attention computed in query chunks, never as a full score matrix,
and its MLP in token chunks.

SAM's ViT attention blocks (``mobile_sam.modeling.image_encoder.Attention``) build the scores of every
query against every key, add the decomposed relative-position bias and take the softmax: in the global
blocks of a 1024² image that is heads × 4096 × 4096 floats (805 MB for ViT-B), several copies alive at
once. Here the same sum goes through ``torch.nn.functional.scaled_dot_product_attention`` a few rows of
queries at a time, with the bias of those rows only as its additive mask: the same result up to
floating-point rounding, the same parameters (and state dict names), a small fraction of the memory.
The MLP's hidden layer (4 × the width for every token: 48 MB for ViT-B) is likewise made a thousand
tokens at a time. ``python benchmarks/encoder.py`` measures both against SAM's code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Queries per call (whole rows of a global block, whole windows of a windowed one); a chunk's bias is
# heads × CHUNK × keys (ViT-B's global blocks: 48 MiB).
# Measured on ViT-B, 2 cores: 1024 queries made a global block about 8 % faster and the peak 450 MB higher.
CHUNK = 256
MLP_CHUNK = 1024  # tokens per MLP call: its hidden layer is MLP_CHUNK × 4 × width (ViT-B: 12 MB)


_Module = TypeVar("_Module")


class ViTAttention(Protocol):
    """What ``ChunkedAttention`` takes of SAM's ViT ``Attention`` (mobile_sam is untyped, and torch types
    an nn.Module's submodules and parameters only as ``Tensor | Module``)."""

    num_heads: int
    scale: float
    qkv: nn.Linear
    proj: nn.Linear
    use_rel_pos: bool
    rel_pos_h: nn.Parameter  # only where use_rel_pos
    rel_pos_w: nn.Parameter


class ViTMLP(Protocol):
    """What ``ChunkedMLP`` takes of SAM's ViT ``MLPBlock``."""

    lin1: nn.Linear
    act: Callable[[Tensor], Tensor]
    lin2: nn.Linear


def _image_encoder() -> ModuleType:
    """``mobile_sam.modeling.image_encoder``, whose ``get_rel_pos`` this reuses."""
    from geosam.models._mobile_sam import import_mobile_sam

    import_mobile_sam()
    return importlib.import_module("mobile_sam.modeling.image_encoder")


class ChunkedAttention(nn.Module):
    """A drop-in for SAM's ViT ``Attention`` (sharing its parameters) that attends in query chunks."""

    num_heads: int
    scale: float
    qkv: nn.Linear
    proj: nn.Linear
    rel_pos_h: nn.Parameter
    rel_pos_w: nn.Parameter

    def __init__(self, attention: ViTAttention, chunk: int = CHUNK) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.scale = attention.scale
        self.qkv, self.proj = attention.qkv, attention.proj
        self.use_rel_pos = attention.use_rel_pos
        if self.use_rel_pos:
            self.rel_pos_h, self.rel_pos_w = attention.rel_pos_h, attention.rel_pos_w
        self.chunk = chunk

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            out = self._attend_rel_pos(q, k, v, h, w)
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)

    def _attend_rel_pos(self, q: Tensor, k: Tensor, v: Tensor, h: int, w: int) -> Tensor:
        """Attention of (B, heads, h·w, d) queries with SAM's decomposed relative-position bias.

        A call takes whole rows of one image (a global block's 64² tokens) or whole images (a windowed
        block's 14² windows), ``chunk`` queries at most, and writes its bias in the layout the attention
        reads, so no copy of it is made.
        """
        get_rel_pos = _image_encoder().get_rel_pos
        rel_h = get_rel_pos(h, h, self.rel_pos_h)  # (h, h, d): query row × key row
        rel_w = get_rel_pos(w, w, self.rel_pos_w)  # (w, w, d): query column × key column
        b, heads, _, d = q.shape
        rows = max(1, min(h, self.chunk // w))
        images = max(1, self.chunk // (h * w)) if rows == h else 1
        out = torch.empty_like(q)
        for first in range(0, b, images):
            batch = slice(first, min(b, first + images))
            for top in range(0, h, rows):
                bottom = min(h, top + rows)
                part = slice(top * w, bottom * w)
                qc = q[batch, :, part]
                grid = qc.reshape(-1, heads, bottom - top, w, d)
                bias_h = torch.einsum("bnrwc,rkc->bnrwk", grid, rel_h[top:bottom])  # (.., rows, w, h)
                bias_w = torch.einsum("bnrwc,wkc->bnrwk", grid, rel_w)  # (.., rows, w, w)
                bias = qc.new_empty(*bias_h.shape, w)  # (.., rows, w, h, w): query × key
                torch.add(bias_h[..., None], bias_w[..., None, :], out=bias)
                del bias_h, bias_w
                out[batch, :, part] = F.scaled_dot_product_attention(
                    qc, k[batch], v[batch], attn_mask=bias.view(len(grid), heads, -1, h * w), scale=self.scale
                )
                del bias  # before the next chunk's is made
        return out


class ChunkedMLP(nn.Module):
    """A drop-in for SAM's ViT ``MLPBlock`` (sharing its parameters) that runs ``chunk`` tokens at a time:
    its hidden layer (4 × the width) never exists for the whole image at once."""

    lin1: nn.Linear
    act: Callable[[Tensor], Tensor]
    lin2: nn.Linear

    def __init__(self, mlp: ViTMLP, chunk: int = MLP_CHUNK) -> None:
        super().__init__()
        self.lin1, self.act, self.lin2 = mlp.lin1, mlp.act, mlp.lin2
        self.chunk = chunk

    def forward(self, x: Tensor) -> Tensor:
        out = x.new_empty(*x.shape[:-1], self.lin2.out_features)
        tokens, found = x.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])
        for first in range(0, len(tokens), self.chunk):
            part = slice(first, first + self.chunk)
            found[part] = self.lin2(self.act(self.lin1(tokens[part])))
        return out


def chunk_attention(encoder: _Module, chunk: int = CHUNK) -> _Module:
    """Swap the attention and MLP of every block of SAM's ``ImageEncoderViT`` for a ``ChunkedAttention``
    and a ``ChunkedMLP``, in place.

    Other encoders (MobileSAM's TinyViT) are returned unchanged.
    """
    for block in getattr(encoder, "blocks", ()):
        if not isinstance(block.attn, ChunkedAttention):
            block.attn = ChunkedAttention(block.attn, chunk)
        if not isinstance(block.mlp, ChunkedMLP):
            block.mlp = ChunkedMLP(block.mlp)
    return encoder
