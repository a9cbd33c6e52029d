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
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from geosam.models.parts import Attention, Linear, MaskDecoder, Norm, PromptEncoder, SubpixelConv

# Prompt positions upscaled per step: its arrays (2 MB at most for 16 prompts) stay in the CPU's cache.
UPSCALE_CHUNK = 1024


class _Scratch:
    """Arrays that every decoder call of a batch size overwrites, allocated once and kept for the next call.

    Each call makes the same few arrays of B × 4096 positions (15-31 MB for 16 prompts); made anew each
    time, they either leave holes in the heap that outgrow what is in use, or (above glibc's mmap
    threshold) are fresh pages from the OS, zeroed at every one of a tile's batches. Three are kept:
    ``store`` (the image side's coefficients), ``products`` (per-head products with the image: attention
    terms, softmax weights scaled for their mix) and ``scores`` (attention scores and their softmax,
    LayerNorm statistics, the upscaled masks); an array is taken again only once what it held is spent.
    Not for concurrent calls: one decoder runs one call at a time.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """The array ``name``, of ``shape`` and ``like``'s dtype and device, with whatever it last held."""
        size = math.prod(shape)
        array = self._arrays.get(name)
        if array is None or array.numel() < size or array.dtype != like.dtype or array.device != like.device:
            self._arrays.pop(name, None)  # freed before its successor is made
            array = self._arrays[name] = like.new_empty(size)
        return array[:size].view(shape)

    def clear(self) -> None:
        self._arrays.clear()


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
class _Block:
    """Vectors ``vecs[start:stop]`` an attention added: ``(value @ weightᵀ) ⊙ gain``, one per head and
    token."""

    start: int
    stop: int
    value: Tensor  # (B, H, T, d)
    param: Tensor  # (C, H·d): the attention's output projection weight
    gain: Tensor  # (C,): the LayerNorm weights applied since


@dataclass(frozen=True)
class _Keys:
    """Image-side state of B prompts: ``a[..., None] * stage.base + coef.mT @ vecs``.

    Nothing of size (B, N, C) is formed until the masks need it: attention scores and mixes, and
    LayerNorm statistics, are computed from the terms of this sum. ``coef`` is the start of ``store``,
    where the next steps append their rows: each step consumes the state it is called on.
    """

    stage: _Stage
    a: Tensor  # (B, N)
    coef: Tensor  # (B, M, N): each vector's weight at each position
    vecs: Tensor  # (B, M, C)
    store: Tensor  # (B, M + rows to come, N)
    scratch: _Scratch
    blocks: tuple[_Block, ...] = ()

    def linear(self, param: Tensor, matrix: Tensor, const: Tensor) -> Callable[[slice], Tensor]:
        """``state @ matrix + const`` as a function of a slice of positions, giving (B, n, out); ``param``
        names the matrix for the per-image cache."""
        image, vecs = self.stage.map(param, matrix), self.vecs @ matrix

        def rows(positions: slice) -> Tensor:
            out = torch.addcmul(const, self.a[:, positions, None], image[positions])
            return out.baddbmm_(self.coef[:, :, positions].mT, vecs)

        return rows

    def select(self, prompts: Tensor) -> _Keys:
        """The state of the prompts ``prompts`` (B,) selects; their coefficients, the bulk of it, are moved
        to the front of the store rather than copied out of it."""
        kept = torch.nonzero(prompts)[:, 0].tolist()
        for to, row in enumerate(kept):  # to <= row: a row is moved before anything overwrites it
            if to != row:
                self.coef[to] = self.coef[row]
        blocks = tuple(_Block(b.start, b.stop, b.value[prompts], b.param, b.gain) for b in self.blocks)
        coef = self.coef[: len(kept)]
        return _Keys(self.stage, self.a[prompts], coef, self.vecs[prompts], coef, self.scratch, blocks)

    def attend(self, query: Tensor, linear: Linear, terms: ImageTerms, pe: bool) -> Tensor:
        """Dot products (B, H, T, N) of per-head ``query`` (B, H, T, d) with ``linear(state [+ pe])``."""
        heads, dim = query.shape[1], query.shape[-1]
        weight = linear.weight.T
        mapped = self.stage.map(linear.weight, weight).view(-1, heads, dim)
        const = (terms.pe.map(linear.weight, weight) + linear.bias if pe else linear.bias[None]).view(
            -1, heads, dim
        )
        # The image's shares come out head-major (a product per head); the prompts' vectors' share, and
        # the softmax after, are batch-major: the scores are formed there, reading the others once.
        image = self._per_head(query, mapped)
        scores = self.scratch.take("scores", image.shape, query)
        if self.vecs.shape[1]:
            per_vec = torch.einsum("bhtd,bmhd->bhtm", query, (self.vecs @ weight).unflatten(-1, (heads, dim)))
            torch.matmul(per_vec.flatten(1, 2), self.coef, out=scores.flatten(1, 2))
            scores.addcmul_(image, self.a[:, None, None])
        else:
            torch.mul(image, self.a[:, None, None], out=scores)
        return scores.add_(self._per_head(query, const))

    def _per_head(self, query: Tensor, mapped: Tensor) -> Tensor:
        """``einsum("bhtd,nhd->bhtn", query, mapped)`` in the scratch array ``products``, head-major."""
        batch, heads, tokens, _ = query.shape
        out = self.scratch.take("products", (heads, batch * tokens, len(mapped)), query)
        torch.bmm(query.transpose(0, 1).flatten(1, 2), mapped.permute(1, 2, 0), out=out)
        return out.view(heads, batch, tokens, -1).transpose(0, 1)

    def mix(self, weights: Tensor, linear: Linear) -> Tensor:
        """``weights`` (B, H, T, N), summing to 1 over N, applied to ``linear(state)``: (B, H, T, d)."""
        batch, heads, tokens, _ = weights.shape
        weight = linear.weight.T
        mapped = self.stage.map(linear.weight, weight).view(-1, heads, weight.shape[1] // heads)
        # Scaled straight into the head-major layout the per-head products read.
        scaled = self.scratch.take("products", (heads, batch, tokens, weights.shape[-1]), weights)
        scaled = scaled.transpose(0, 1)
        out = torch.einsum("bhtn,nhd->bhtd", torch.mul(weights, self.a[:, None, None], out=scaled), mapped)
        out += linear.bias.view(heads, 1, -1)
        if self.vecs.shape[1]:
            per_vec = (weights.flatten(1, 2) @ self.coef.mT).view(batch, heads, tokens, -1)
            out += torch.einsum("bhtm,bmhd->bhtd", per_vec, (self.vecs @ weight).unflatten(-1, (heads, -1)))
        return out

    def plus(self, scores: Tensor, vecs: Tensor, value: Tensor, param: Tensor) -> _Keys:
        """The state plus an attention's output: the softmax over tokens of ``scores`` (B, H, T, N) weighs
        the ``vecs`` (B, H·T + 1, C) that ``value`` (B, H, T, d) gives through ``param``; the last of
        them, the output bias, is added whole."""
        start = self.vecs.shape[1]
        stop = start + scores.shape[1] * scores.shape[2]
        block = _Block(start, stop, value, param, torch.ones_like(self.stage.gain))
        torch.softmax(scores, 2, out=self.store[:, start:stop].view_as(scores))
        self.store[:, stop] = 1
        return _Keys(
            self.stage, self.a, self.store[:, : stop + 1], torch.cat([self.vecs, vecs], 1), self.store,
            self.scratch, (*self.blocks, block),
        )  # fmt: skip

    def cross(self) -> Tensor:
        """``Σ_m coef[..., m] · (stage.base · vecs[m])`` as (B, N): attention vectors through their values."""
        out = torch.zeros_like(self.a)
        constant = torch.ones(self.vecs.shape[1], dtype=torch.bool)
        for block in self.blocks:
            heads, dim = block.value.shape[1], block.value.shape[3]
            mapped = self.stage.map(block.param, block.param * block.gain[:, None]).view(-1, heads, dim)
            per_vec = self._per_head(block.value, mapped)
            out += per_vec.mul_(self.coef[:, block.start : block.stop].view_as(per_vec)).sum((1, 2))
            constant[block.start : block.stop] = False
        if constant.any():  # biases and LayerNorm shifts: the same vectors for every prompt
            out += (self.coef[:, constant] * (self.vecs[0, constant] @ self.stage.base.T)).sum(1)
        return out

    def layer_norm(self, norm: Norm) -> _Keys:
        channels = self.vecs.shape[-1]
        mean = self.a * self.stage.mean + (self.vecs.mean(-1)[:, None] @ self.coef)[:, 0]
        gram = self.scratch.take("scores", self.coef.shape, self.coef)
        torch.matmul(self.vecs @ self.vecs.mT, self.coef, out=gram)
        gram = gram.mul_(self.coef).sum(1)
        square = self.a.square() * self.stage.square + 2 * self.a * self.cross() + gram
        rstd = torch.rsqrt((square / channels - mean.square()).clamp_min(0) + norm.eps)
        batch, rows = self.coef.shape[:2]
        self.coef.mul_(rstd[:, None])
        self.store[:, rows] = -mean * rstd
        self.store[:, rows + 1] = 1
        shifts = torch.stack([norm.weight, norm.bias]).expand(batch, 2, channels)
        blocks = tuple(_Block(b.start, b.stop, b.value, b.param, b.gain * norm.weight) for b in self.blocks)
        return _Keys(
            self.stage.scaled(norm.weight),
            self.a * rstd,
            self.store[:, : rows + 2],
            torch.cat([self.vecs * norm.weight, shifts], 1),
            self.store,
            self.scratch,
            blocks,
        )


class LowRankDecoder:
    """SAM's prompt-to-mask decoder (``sam.mask_decoder``), restructured for many prompts per image."""

    @torch.inference_mode()
    def __init__(self, mask_decoder: MaskDecoder, prompt_encoder: PromptEncoder) -> None:
        self.decoder = mask_decoder
        self.transformer = mask_decoder.transformer
        self.dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)  # the no-mask prompt
        pe = prompt_encoder.get_dense_pe().flatten(2)[0].T.contiguous()
        self.pe = _Stage(pe, torch.ones(pe.shape[1], dtype=pe.dtype, device=pe.device))  # its maps: once
        self.scratch = _Scratch()

    def forget(self) -> None:
        """Drop the scratch arrays kept between calls."""
        self.scratch.clear()

    @torch.inference_mode()
    def prepare(self, features: Tensor) -> ImageTerms:
        """Terms for one embedding ``features`` (1, C, h, w)."""
        _, channels, h, w = features.shape
        src = (features + self.dense).flatten(2)[0].T.contiguous()
        return ImageTerms(
            _Stage(src, torch.ones(channels, dtype=src.dtype, device=src.device)), self.pe, (h, w)
        )

    @torch.inference_mode()
    def confident(
        self, terms: ImageTerms, sparse: Tensor, multimask: bool, min_iou: float
    ) -> tuple[Tensor, Tensor]:
        """Logits (M, 4h, 4w) and IoU (M,) of the masks of B prompts predicted at least ``min_iou``.

        The prediction needs only the transformer, so the masks below it are never upscaled.
        """
        queries, keys = self.transform(terms, sparse)
        iou = self.iou(queries)[:, _pick(multimask)]
        keep = iou >= min_iou
        return self.masks(terms, queries, keys, keep, multimask), iou[keep]

    def transform(self, terms: ImageTerms, sparse: Tensor) -> tuple[Tensor, _Keys]:
        """The two-way transformer: output token states (B, T, C) and the image side in low-rank form."""
        decoder = self.decoder
        batch, n = len(sparse), len(terms.pe.base)
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])
        tokens = torch.cat([output_tokens.expand(batch, -1, -1), sparse], 1)
        # Each layer adds a vector per head and token, its output bias and the two LayerNorm shifts.
        rows = sum(
            layer.cross_attn_image_to_token.num_heads * tokens.shape[1] + 3
            for layer in self.transformer.layers
        )
        store = self.scratch.take("store", (batch, rows, n), tokens)
        keys = _Keys(
            terms.stage,
            tokens.new_ones(batch, n),
            store[:, :0],
            tokens.new_zeros(batch, 0, tokens.shape[-1]),
            store,
            self.scratch,
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

    def masks(self, terms: ImageTerms, queries: Tensor, keys: _Keys, keep: Tensor, multimask: bool) -> Tensor:
        """Logits (M, 4h, 4w) of the masks ``keep`` (B, K) selects, from the transformer's outputs.

        The two stride-2 transposed convolutions are per-position linear maps, so the upscaling runs
        channel-last on (B, positions, sub-pixels, channels), a few positions at a time so that each
        step's arrays stay in the CPU's cache; only the kept masks are put in image order.
        """
        decoder = self.decoder
        up, norm, act1, up2, act2 = decoder.output_upscaling
        h, w = terms.size
        prompts = keep.any(1)
        if not prompts.any():
            return queries.new_empty(0, 4 * h, 4 * w)
        if not prompts.all():  # prompts without a confident mask are not upscaled
            keys, keep, queries = keys.select(prompts), keep[prompts], queries[prompts]
        tokens = queries[:, 1 : 1 + decoder.num_mask_tokens]
        hyper = torch.stack([mlp(tokens[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], 1)
        hyper = hyper[:, _pick(multimask)].mT.contiguous()  # (B, C2, K)
        batch, k = keep.shape
        first = keys.linear(up.weight, _subpixel_matrix(up), up.bias.repeat(4))
        second, bias2 = _subpixel_matrix(up2), up2.bias.repeat(4)
        out = self.scratch.take("scores", (batch, h * w, 16, k), hyper)
        step = max(1, UPSCALE_CHUNK // max(batch, 1))
        for start in range(0, h * w, step):
            rows = slice(start, min(start + step, h * w))
            x = first(rows).unflatten(-1, (4, -1))  # (B, n, 2·2, C1)
            x = act1(F.layer_norm(x, (up.out_channels,), norm.weight, norm.bias, norm.eps))
            x = act2(torch.addmm(bias2, x.flatten(0, 2), second))  # (B·n·4, 2·2·C2)
            torch.bmm(x.view(batch, -1, up2.out_channels), hyper, out=out[:, rows].view(batch, -1, k))
        masks = out.view(batch, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)[keep]
        return masks.reshape(-1, 4 * h, 4 * w)


def _pick(multimask: bool) -> slice:
    """The mask tokens answered: the three multimask ones, or the single-mask one."""
    return slice(1, None) if multimask else slice(0, 1)


def _subpixel_matrix(conv: SubpixelConv) -> Tensor:
    """A 2×2 stride-2 transposed convolution as a (in, (dy, dx, out)) matrix for channel-last inputs."""
    return conv.weight.permute(0, 2, 3, 1).flatten(1)


def _heads(x: Tensor, heads: int) -> Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, H, n, d)


def _tokens_to_image(attn: Attention, q: Tensor, keys: _Keys, terms: ImageTerms) -> Tensor:
    """SAM's token-to-image attention: tokens ``q`` (B, T, C) attend to the image positions."""
    query = _heads(attn.q_proj(q), attn.num_heads)
    scores = keys.attend(query / math.sqrt(query.shape[-1]), attn.k_proj, terms, pe=True)
    weights = torch.softmax(scores, -1, out=scores)
    return attn.out_proj(keys.mix(weights, attn.v_proj).transpose(1, 2).flatten(2))


def _image_to_tokens(attn: Attention, keys: _Keys, k: Tensor, v: Tensor, terms: ImageTerms) -> _Keys:
    """``keys + attention(image -> tokens)``: each position gains a softmax mix of per-head token vectors."""
    heads = attn.num_heads
    key = _heads(attn.k_proj(k), heads)  # (B, H, T, d)
    scores = keys.attend(key / math.sqrt(key.shape[-1]), attn.q_proj, terms, pe=True)  # (B, H, T, N)
    value = _heads(attn.v_proj(v), heads)
    out_weight = attn.out_proj.weight.unflatten(1, (heads, -1))  # (C, H, d)
    vecs = torch.einsum("bhtd,chd->bhtc", value, out_weight).flatten(1, 2)  # (B, H·T, C)
    bias = attn.out_proj.bias.expand(len(scores), 1, -1)
    return keys.plus(scores, torch.cat([vecs, bias], 1), value, attn.out_proj.weight)
