"""model.mask_generator.init: mask2former re-draws every weight by the original Mask2Former code's rule."""

import math

import pytest
import torch
from transformers.models.mask2former.modeling_mask2former import Mask2FormerTransformerModule

from odise_pl.config.schema import MaskGeneratorConfig
from odise_pl.errors import ConfigError
from odise_pl.models.backbones.base import LEVELS, ShapeSpec
from odise_pl.models.mask_generator.init import deformable_offset_grid, init_like_mask2former
from odise_pl.models.mask_generator.mask2former import Mask2FormerMaskGenerator, hf_config

# mask_dim == hidden_dim, as ODISE's mask embedding needs (the decoder's input projections are then identities)
CFG = dict(
    num_queries=16,
    hidden_dim=64,
    mask_dim=64,
    embed_dim=16,
    dec_layers=2,
    nheads=4,
    dim_feedforward=128,
    enc_layers=2,
    enc_feedforward_dim=64,
    train_num_points=64,
)
IN = 48  # backbone channels


def _generator(init="mask2former", seed=0):
    torch.manual_seed(seed)
    shape = {k: ShapeSpec(IN, s) for k, s in zip(LEVELS, (4, 8, 16, 32))}
    return Mask2FormerMaskGenerator.from_config(MaskGeneratorConfig(**CFG, init=init), shape)


def _uniform(t: torch.Tensor, bound: float) -> None:
    """``t`` looks like U(-bound, bound): within the bound, reaching it, with its standard deviation."""
    t = t.detach().float()
    assert t.numel() >= 500
    assert t.abs().max() <= bound * (1 + 1e-6)
    assert t.abs().max() >= 0.95 * bound
    assert t.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def _xavier(t):
    fan_out, fan_in = t.shape[0], t[0].numel()
    fan_out *= t[0, 0].numel() if t.dim() > 2 else 1
    return math.sqrt(6 / (fan_in + fan_out))


def _c2(t):  # kaiming_uniform_(a=1)
    return math.sqrt(3 / t[0].numel())


def test_pixel_decoder_as_msdeformattn_pixel_decoder():
    pd = _generator().pixel_decoder
    for proj in pd.input_projections:  # xavier, bias 0
        _uniform(proj[0].weight, _xavier(proj[0].weight))
        assert (proj[0].bias == 0).all()
        assert (proj[1].weight == 1).all() and (proj[1].bias == 0).all()
    for conv in (pd.mask_projection, *(b[0] for b in pd.lateral_convolutions), *(b[0] for b in pd.output_convolutions)):  # c2_xavier_fill
        _uniform(conv.weight, _c2(conv.weight))
        assert conv.bias is None or (conv.bias == 0).all()
    assert pd.level_embed.std().item() == pytest.approx(1.0, rel=0.35)  # N(0, 1), 96 values
    layers = pd.encoder.layers
    for layer in layers:
        attn = layer.self_attn
        assert (attn.sampling_offsets.weight == 0).all()
        assert torch.equal(attn.sampling_offsets.bias, deformable_offset_grid(4, 3, 4))
        assert (attn.attention_weights.weight == 0).all() and (attn.attention_weights.bias == 0).all()
        for lin in (attn.value_proj, attn.output_proj):
            _uniform(lin.weight, _xavier(lin.weight))
            assert (lin.bias == 0).all()
        for lin in (layer.fc1, layer.fc2):  # xavier weights, default biases
            _uniform(lin.weight, _xavier(lin.weight))
            bound = 1 / math.sqrt(lin.in_features)
            assert lin.bias.abs().max() <= bound and lin.bias.abs().max() > 0.5 * bound
    # the original clones one encoder layer: its FFN biases start equal in every layer, its weights do not
    assert torch.equal(layers[0].fc1.bias, layers[1].fc1.bias)
    assert torch.equal(layers[0].fc2.bias, layers[1].fc2.bias)
    assert not torch.equal(layers[0].fc1.weight, layers[1].fc1.weight)


def test_sampling_offset_grid_pattern():
    grid = deformable_offset_grid(4, 2, 3).view(4, 2, 3, 2)
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # at 0, 90, 180, 270 deg
    expected = directions[:, None, None, :] * torch.tensor([1.0, 2.0, 3.0])[None, None, :, None]
    assert torch.allclose(grid, expected.expand(4, 2, 3, 2), atol=1e-6)
    eight = deformable_offset_grid(8, 1, 1).view(8, 2)
    assert torch.allclose(eight[1], torch.tensor([1.0, 1.0]))  # 45 deg: the max-norm is 1


def test_transformer_decoder_as_multiscale_masked_transformer_decoder():
    g = _generator()
    t, c = g.transformer, CFG["hidden_dim"]
    in_proj_bound = math.sqrt(6 / (4 * c))  # nn.MultiheadAttention's (3C, C) in-projection, xavier
    for proj in t.input_projections:  # identity when conv_dim == hidden_dim (as in the reference)
        assert not list(proj.parameters())
    # conv_dim != hidden_dim (possible in Mask2Former, not with ODISE's mask embedding): a 1x1 conv each
    wide = Mask2FormerTransformerModule(in_features=32, config=hf_config(MaskGeneratorConfig(**CFG), [4, 8, 16, 32]))
    init_like_mask2former(wide)
    for proj in wide.input_projections:  # c2_xavier_fill
        _uniform(proj.weight, _c2(proj.weight))
        assert (proj.bias == 0).all()
    for layer in t.decoder.layers:
        sa = layer.self_attn
        _uniform(torch.cat([sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight]), in_proj_bound)
        _uniform(sa.out_proj.weight, _xavier(sa.out_proj.weight))
        for lin in (sa.q_proj, sa.k_proj, sa.v_proj, sa.out_proj):
            assert (lin.bias == 0).all()
        ca = layer.cross_attn
        _uniform(ca.in_proj_weight, in_proj_bound)
        _uniform(ca.out_proj.weight, _xavier(ca.out_proj.weight))
        assert (ca.in_proj_bias == 0).all() and (ca.out_proj.bias == 0).all()
        for lin in (layer.fc1, layer.fc2):
            _uniform(lin.weight, _xavier(lin.weight))
            assert 0 < lin.bias.abs().max() <= 1 / math.sqrt(lin.in_features)
        for norm in (layer.self_attn_layer_norm, layer.cross_attn_layer_norm, layer.final_layer_norm):
            assert (norm.weight == 1).all() and (norm.bias == 0).all()
    for emb in (t.queries_embedder, t.queries_features):  # nn.Embedding: N(0, 1)
        assert emb.weight.std().item() == pytest.approx(1.0, rel=0.15)
    for block in t.decoder.mask_predictor.mask_embedder.layers:  # nn.Linear's default
        lin = block.layers[0]
        _uniform(lin.weight, 1 / math.sqrt(lin.in_features))


def test_transformers_init_is_the_option_and_bad_values_are_named():
    hf = _generator("transformers")
    assert hf.pixel_decoder.mask_projection.weight.std().item() == pytest.approx(0.02, rel=0.15)  # N(0, 0.02)
    ours = _generator("mask2former")
    assert ours.pixel_decoder.mask_projection.weight.std().item() > 0.1
    with pytest.raises(ConfigError, match="init: 'xavier' is not one of mask2former, transformers"):
        _generator("xavier")
