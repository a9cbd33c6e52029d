"""SAM's mask decoder, computed for many prompts on one image without repeating the image's share.

In the two-way transformer every image position only ever receives, per layer, a softmax-weighted sum of
a few token vectors, and then a LayerNorm. So each position's state is ``a * (g ⊙ E) + C @ Y``: the image
embedding ``E`` under a fixed channel gain ``g``, scaled by a per-position scalar ``a``, plus a combination of
a few prompt-specific vectors ``Y`` (one per head and token, and the LayerNorm shifts). Every linear map of
that state is then ``a * (g ⊙ E) W`` — the same for all prompts, computed once per image — plus ``C @ (Y W)``,
which is cheap because ``Y`` has tens of rows, not 4096. LayerNorm statistics follow from dot products.
The result is SAM's decoder output up to floating-point rounding, at about a third of its arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(eq=False)
class _Stage:
    """The image embedding under one channel gain, with its linear maps computed once."""

    base: Tensor  # (N, C): gain ⊙ embedding
    gain: Tensor  # (C,)
    _maps: dict[int, Tensor] = field(default_factory=dict)
    _children: dict[int, _Stage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = self.base.mean(-1)
        self.square = self.base.square().sum(-1)

    def map(self, param: Tensor, matrix: Tensor) -> Tensor:
        """``base @ matrix`` (C × out), computed once per model parameter ``param`` it comes from."""
        key = id(param)
        if key not in self._maps:
            self._maps[key] = self.base @ matrix
        return self._maps[key]

    def scaled(self, gain: Tensor) -> _Stage:
        key = id(gain)
        if key not in self._children:
            self._children[key] = _Stage(self.base * gain, self.gain * gain)
        return self._children[key]


@dataclass(frozen=True)
class ImageTerms:
    """The prompt-independent part of decoding one image embedding."""

    stage: _Stage  # the embedding plus the dense (no-mask) prompt, as (N, C)
    pe: _Stage  # (N, C) positional encoding: the model's, shared by every image
    size: tuple[int, int]  # (h, w) of the embedding grid


@dataclass(frozen=True)
class _Keys:
    """Image-side state of B prompts: ``a[..., None] * stage.base + coef @ vecs``."""

    stage: _Stage
    a: Tensor  # (B, N)
    coef: Tensor  # (B, N, M)
    vecs: Tensor  # (B, M, C)

    def project(self, linear: nn.Linear, terms: ImageTerms, pe: bool) -> Tensor:
        """``linear(state + pe if pe else state)`` as (B, N, out)."""
        weight = linear.weight.T
        const = terms.pe.map(linear.weight, weight) + linear.bias if pe else linear.bias
        return self.linear(linear.weight, weight, const)

    def linear(self, param: Tensor, matrix: Tensor, const: Tensor) -> Tensor:
        """``state @ matrix + const`` as (B, N, out); ``param`` names the matrix for the per-image cache."""
        out = torch.addcmul(const, self.a[..., None], self.stage.map(param, matrix))
        return out.baddbmm_(self.coef, self.vecs @ matrix)

    def plus(self, coef: Tensor, vecs: Tensor) -> _Keys:
        return _Keys(self.stage, self.a, torch.cat([self.coef, coef], -1), torch.cat([self.vecs, vecs], 1))

    def layer_norm(self, norm: nn.LayerNorm) -> _Keys:
        channels = self.vecs.shape[-1]
        mean = self.a * self.stage.mean + (self.coef @ self.vecs.mean(-1)[..., None])[..., 0]
        cross = (self.coef * (self.stage.base @ self.vecs.transpose(1, 2))).sum(-1)
        gram = ((self.coef @ (self.vecs @ self.vecs.transpose(1, 2))) * self.coef).sum(-1)
        square = self.a.square() * self.stage.square + 2 * self.a * cross + gram
        rstd = torch.rsqrt((square / channels - mean.square()).clamp_min(0) + norm.eps)
        ones = torch.ones_like(mean)[..., None]
        batch = len(self.vecs)
        shifts = torch.stack([norm.weight, norm.bias]).expand(batch, 2, channels)
        return _Keys(
            self.stage.scaled(norm.weight),
            self.a * rstd,
            torch.cat([self.coef * rstd[..., None], (-mean * rstd)[..., None], ones], -1),
            torch.cat([self.vecs * norm.weight, shifts], 1),
        )


class LowRankDecoder:
    """SAM's prompt-to-mask decoder (``sam.mask_decoder``), restructured for many prompts per image."""

    @torch.inference_mode()
    def __init__(self, mask_decoder: nn.Module, prompt_encoder: nn.Module) -> None:
        self.decoder = mask_decoder
        self.transformer = mask_decoder.transformer
        self.dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)  # the no-mask prompt
        pe = prompt_encoder.get_dense_pe().flatten(2)[0].T.contiguous()
        self.pe = _Stage(pe, torch.ones(pe.shape[1], dtype=pe.dtype, device=pe.device))  # its maps: once

    @torch.inference_mode()
    def prepare(self, features: Tensor) -> ImageTerms:
        """Terms for one embedding ``features`` (1, C, h, w)."""
        _, channels, h, w = features.shape
        src = (features + self.dense).flatten(2)[0].T.contiguous()
        return ImageTerms(
            _Stage(src, torch.ones(channels, dtype=src.dtype, device=src.device)), self.pe, (h, w)
        )

    @torch.inference_mode()
    def __call__(self, terms: ImageTerms, sparse: Tensor, multimask: bool) -> tuple[Tensor, Tensor]:
        """Low-resolution mask logits (B, K, 4h, 4w) and predicted IoU (B, K) for B sparse prompts."""
        queries, keys = self.transform(terms, sparse)
        masks = self.masks(terms, queries, keys)
        iou = self.iou(queries)
        pick = slice(1, None) if multimask else slice(0, 1)
        return masks[:, pick], iou[:, pick]

    def transform(self, terms: ImageTerms, sparse: Tensor) -> tuple[Tensor, _Keys]:
        """The two-way transformer: output token states (B, T, C) and the image side in low-rank form."""
        decoder = self.decoder
        batch, n = len(sparse), len(terms.pe.base)
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])
        tokens = torch.cat([output_tokens.expand(batch, -1, -1), sparse], 1)
        empty = tokens.new_zeros(batch, n, 0)
        keys = _Keys(
            terms.stage, tokens.new_ones(batch, n), empty, tokens.new_zeros(batch, 0, tokens.shape[-1])
        )
        queries = tokens
        for layer in self.transformer.layers:
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            queries = layer.norm2(
                queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + tokens, keys, terms)
            )
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = _image_to_tokens(layer.cross_attn_image_to_token, keys, queries + tokens, queries, terms)
            keys = keys.layer_norm(layer.norm4)
        final = self.transformer.final_attn_token_to_image
        queries = self.transformer.norm_final_attn(
            queries + _tokens_to_image(final, queries + tokens, keys, terms)
        )
        return queries, keys

    def iou(self, queries: Tensor) -> Tensor:
        return self.decoder.iou_prediction_head(queries[:, 0])

    def masks(self, terms: ImageTerms, queries: Tensor, keys: _Keys) -> Tensor:
        """All mask logits (B, mask tokens, 4h, 4w) from the transformer's outputs.

        The two stride-2 transposed convolutions are per-position linear maps, so the upscaling runs
        channel-last on (B, h·w, sub-pixels, channels) and only the final masks are put in image order.
        """
        decoder = self.decoder
        up, norm, act1, up2, act2 = decoder.output_upscaling
        h, w = terms.size
        x = keys.linear(up.weight, _subpixel_matrix(up), up.bias.repeat(4))  # (B, N, 2·2·C1)
        x = act1(F.layer_norm(x.unflatten(-1, (4, -1)), (up.out_channels,), norm.weight, norm.bias, norm.eps))
        x = act2(torch.addmm(up2.bias.repeat(4), x.flatten(0, 2), _subpixel_matrix(up2)))  # (B·N·4, 4·C2)
        tokens = queries[:, 1 : 1 + decoder.num_mask_tokens]
        hyper = torch.stack([mlp(tokens[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], 1)
        batch, k = hyper.shape[:2]
        masks = x.view(batch, -1, up2.out_channels) @ hyper.transpose(1, 2)  # (B, N·2·2·2·2, K)
        masks = masks.view(batch, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(batch, k, 4 * h, 4 * w)


def _subpixel_matrix(conv: nn.ConvTranspose2d) -> Tensor:
    """A 2×2 stride-2 transposed convolution as a (in, (dy, dx, out)) matrix for channel-last inputs."""
    return conv.weight.permute(0, 2, 3, 1).flatten(1)


def _heads(x: Tensor, heads: int) -> Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, H, n, d)


def _tokens_to_image(attn: nn.Module, q: Tensor, keys: _Keys, terms: ImageTerms) -> Tensor:
    """SAM's token-to-image attention: tokens ``q`` (B, T, C) attend to the image positions."""
    heads = attn.num_heads
    query = _heads(attn.q_proj(q), heads)
    key = _heads(keys.project(attn.k_proj, terms, pe=True), heads)
    value = _heads(keys.project(attn.v_proj, terms, pe=False), heads)
    out = F.scaled_dot_product_attention(query, key, value)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def _image_to_tokens(attn: nn.Module, keys: _Keys, k: Tensor, v: Tensor, terms: ImageTerms) -> _Keys:
    """``keys + attention(image -> tokens)``: each position gains a softmax mix of per-head token vectors."""
    heads = attn.num_heads
    query = _heads(keys.project(attn.q_proj, terms, pe=True), heads)  # (B, H, N, d)
    key = _heads(attn.k_proj(k), heads)  # (B, H, T, d)
    value = _heads(attn.v_proj(v), heads)
    weights = torch.softmax(query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1]), -1)  # (B, H, N, T)
    out_weight = attn.out_proj.weight.unflatten(1, (heads, -1))  # (C, H, d)
    vecs = torch.einsum("bhtd,chd->bhtc", value, out_weight).flatten(1, 2)  # (B, H·T, C)
    batch, _, n, _ = weights.shape
    coef = weights.permute(0, 2, 1, 3).reshape(batch, n, -1)
    bias = attn.out_proj.bias.expand(batch, 1, -1)
    return keys.plus(torch.cat([coef, coef.new_ones(batch, n, 1)], -1), torch.cat([vecs, bias], 1))
