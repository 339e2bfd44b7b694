import pytest
import torch
from torch import nn

from odise_pl.config.schema import OptimConfig
from odise_pl.models.optim import build_optimizer, lr_factor, param_groups


def test_no_weight_decay_on_norms_and_biases_and_frozen_excluded():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[2].requires_grad_(False)
    groups = param_groups(model, 0.05)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert decay == {id(model[0].weight)}
    assert no_decay == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    opt = build_optimizer(model, OptimConfig())
    assert sum(len(g["params"]) for g in opt.param_groups) == 4


def test_warmup_then_step_decay():
    cfg = OptimConfig(warmup_steps=10, warmup_factor=0.001, milestones=[0.5, 0.75], gamma=0.1)
    assert lr_factor(0, cfg, 100) == pytest.approx(0.001)
    assert lr_factor(5, cfg, 100) == pytest.approx(0.5005)
    assert lr_factor(10, cfg, 100) == 1.0
    assert lr_factor(49, cfg, 100) == 1.0
    assert lr_factor(50, cfg, 100) == pytest.approx(0.1)
    assert lr_factor(99, cfg, 100) == pytest.approx(0.01)
