"""Chunked attention and MLP equal SAM's own ViT blocks: block by block, and as the runtime loads them."""

from __future__ import annotations

import copy

import pytest
import torch

from geosam.models._mobile_sam import import_mobile_sam
from geosam.models.checkpoints import read_state_dict
from geosam.models.encoder import ChunkedAttention, ChunkedMLP, chunk_attention
from geosam.models.torch import TorchRuntime


def _image_encoder():
    import_mobile_sam()
    from mobile_sam.modeling import image_encoder

    return image_encoder


def _fill_rel_pos(module: torch.nn.Module, seed: int) -> None:
    """Noise in the relative-position tables, which a fresh model leaves at zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "rel_pos" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize(
    ("size", "chunk", "window"),
    [
        (14, 1024, 0),  # one chunk
        (16, 48, 0),  # 3 rows a chunk, the last chunk shorter
        (16, 1, 0),  # one row a chunk
        (18, 64, 7),  # windows, with padding: one window a call
        (18, 100, 7),  # two windows a call, the last call one
    ],
)
def test_block_equals_sams(size, chunk, window):
    torch.manual_seed(size + chunk)
    block = (
        _image_encoder().Block(96, 4, use_rel_pos=True, window_size=window, input_size=(size, size)).eval()
    )
    _fill_rel_pos(block, chunk)
    chunked = copy.deepcopy(block)
    chunked.attn = ChunkedAttention(chunked.attn, chunk)
    x = torch.randn(2, size, size, 96)
    with torch.inference_mode():
        _assert_close(chunked(x), block(x))
    assert chunked.state_dict().keys() == block.state_dict().keys()


@pytest.mark.parametrize(("tokens", "chunk"), [(6, 1024), (6, 5), (5, 7)])
def test_mlp_in_token_chunks_equals_sams(tokens, chunk):
    torch.manual_seed(tokens + chunk)
    mlp = _image_encoder().MLPBlock(32, 128).eval()
    x = torch.randn(2, tokens, tokens, 32)
    with torch.inference_mode():
        _assert_close(ChunkedMLP(mlp, chunk)(x), mlp(x))
    assert ChunkedMLP(mlp, chunk).state_dict().keys() == mlp.state_dict().keys()


def test_attention_without_rel_pos_equals_sams():
    torch.manual_seed(1)
    attention = _image_encoder().Attention(64, 4, use_rel_pos=False).eval()
    x = torch.randn(1, 8, 8, 64)
    with torch.inference_mode():
        _assert_close(ChunkedAttention(attention, 16)(x), attention(x))


def test_vit_b_runtime_attends_in_chunks_with_the_checkpoints_weights(random_vit_b):
    runtime = TorchRuntime.load("vit_b", random_vit_b)
    encoder = runtime.sam.image_encoder
    assert all(isinstance(block.attn, ChunkedAttention) for block in encoder.blocks)
    assert all(isinstance(block.mlp, ChunkedMLP) for block in encoder.blocks)
    state = read_state_dict(random_vit_b)
    assert runtime.sam.state_dict().keys() == state.keys()
    build_sam, _ = import_mobile_sam()
    reference = build_sam.build_sam_vit_b().eval()
    reference.load_state_dict(state)
    _fill_rel_pos(encoder, 0)
    _fill_rel_pos(reference.image_encoder, 0)
    x = torch.randn(1, 64, 64, 768, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for index in (0, 2):  # a windowed block and a global one (4096 tokens)
            block = reference.image_encoder.blocks[index]
            assert block.window_size == (14 if index == 0 else 0)
            _assert_close(encoder.blocks[index](x), block(x))


def test_tiny_vit_is_left_as_it_is(model_installed):
    runtime = TorchRuntime.load("vit_t", model_installed)
    encoder = runtime.sam.image_encoder
    assert chunk_attention(encoder) is encoder
    assert not any(isinstance(m, ChunkedAttention | ChunkedMLP) for m in encoder.modules())
