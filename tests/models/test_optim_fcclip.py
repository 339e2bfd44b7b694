"""FC-CLIP's optimizer recipe: its no-decay rule and its schedule without warm-up (FCCLIP_REFERENCE.md 1.8)."""

import pytest
import torch
from torch import nn

from odise_pl.config.schema import OptimConfig
from odise_pl.models.optim import build_optimizer, lr_factor, param_groups


class Head(nn.Module):
    """The kinds of parameter FC-CLIP's trainable part has: queries (nn.Embedding), norms, linears with
    biases, a learnable logit scale (plain parameter) and the void vector (nn.Embedding)."""

    def __init__(self):
        super().__init__()
        self.query_feat = nn.Embedding(4, 8)
        self.level_embed = nn.Embedding(3, 8)
        self.norm = nn.LayerNorm(8)
        self.gn = nn.GroupNorm(2, 8)
        self.proj = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))
        self.void_embedding = nn.Embedding(1, 8)


def _names(model, group):
    name = {id(p): n for n, p in model.named_parameters()}
    return {name[id(p)] for p in group["params"]}


def test_norm_and_embedding_rule_decays_biases_and_logit_scale():
    m = Head()
    decay, no_decay = param_groups(m, 0.05, "norm_and_embedding")
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    assert _names(m, no_decay) == {
        "query_feat.weight",
        "level_embed.weight",
        "void_embedding.weight",
        "norm.weight",
        "norm.bias",
        "gn.weight",
        "gn.bias",
    }
    assert _names(m, decay) == {
        "proj.weight",
        "proj.bias",
        "attn.in_proj_weight",
        "attn.in_proj_bias",
        "attn.out_proj.weight",
        "attn.out_proj.bias",
        "logit_scale",
    }


def test_default_rule_is_odise_and_differs_on_the_same_model():
    m = Head()
    decay, no_decay = param_groups(m, 0.05)  # norm_and_bias
    assert "query_feat.weight" in _names(m, decay) and "proj.bias" in _names(m, no_decay)
    opt = build_optimizer(m, OptimConfig(no_decay="norm_and_embedding"))
    assert "void_embedding.weight" in _names(m, opt.param_groups[1])


def test_no_warmup_and_fcclip_milestones():
    # 368,750 steps x0.1 at 327,778 and 355,092: the same fractions as ODISE's 163889/184375, 177546/184375
    cfg = OptimConfig(warmup_steps=0)
    steps = 368_750
    assert lr_factor(0, cfg, steps) == 1.0
    assert [lr_factor(s, cfg, steps) for s in (327_777, 355_091)] == [1.0, pytest.approx(0.1)]
    assert lr_factor(327_778, cfg, steps) == pytest.approx(0.1)
    assert lr_factor(355_092, cfg, steps) == pytest.approx(0.01)
