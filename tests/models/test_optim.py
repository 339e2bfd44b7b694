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


def _reference_multiplier(step: int, max_steps: int = 92188) -> float:
    """detectron2's LRMultiplier(WarmupParamScheduler(MultiStepParamScheduler(...))) of the reference config,
    written out from fvcore's formulas (configs/Panoptic/odise_label_coco_50e.py)."""
    import bisect

    eps = 1e-6
    where = step / max_steps

    def multistep(w):
        return [1.0, 0.1, 0.01][bisect.bisect_right([163889, 177546], int((w + eps) * 184375))]

    warmup_length = 500 / 184375
    if where + eps <= warmup_length:  # CompositeParamScheduler: the warm-up part, where rescaled
        w = where / warmup_length
        return multistep(warmup_length) * w + 0.067 * multistep(0.0) * (1 - w)
    return multistep(where)


def test_default_schedule_is_the_reference_warmup_and_steps():
    cfg = OptimConfig()
    assert cfg.warmup_steps == 250 and cfg.warmup_factor == pytest.approx(0.067)
    assert lr_factor(0, cfg, 92188) == pytest.approx(0.067)
    for step in (0, 1, 2, 100, 125, 249, 250, 251, 1000):
        assert lr_factor(step, cfg, 92188) == pytest.approx(_reference_multiplier(step), abs=1e-5), step
    # x0.1 and x0.01 start exactly where the reference's do
    for step in (81943, 81944, 81945, 81946, 88772, 88773, 88774, 88775, 92187):
        assert lr_factor(step, cfg, 92188) == pytest.approx(_reference_multiplier(step), rel=1e-9), step
    assert lr_factor(81944, cfg, 92188) == 1.0 and lr_factor(81945, cfg, 92188) == pytest.approx(0.1)
    assert lr_factor(88773, cfg, 92188) == pytest.approx(0.1)
    assert lr_factor(88774, cfg, 92188) == pytest.approx(0.01)


def test_reference_recipe_yaml_has_the_reference_schedule():
    from pathlib import Path

    from omegaconf import OmegaConf

    yaml = OmegaConf.load(Path(__file__).resolve().parents[2] / "experiments/base/reference.yaml")
    cfg = OptimConfig(**OmegaConf.to_container(yaml.optim))
    steps = int(yaml.trainer.max_steps)
    changes = [s for s in range(1, steps) if lr_factor(s, cfg, steps) != lr_factor(s - 1, cfg, steps)]
    assert changes[-2:] == [81945, 88774]
    assert [round(lr_factor(s, cfg, steps), 6) for s in (0, 250, 81945, 88774)] == [0.067, 1.0, 0.1, 0.01]


def test_weight_decay_groups_follow_detectron2():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.ln = nn.LayerNorm(8)
            self.gn = nn.GroupNorm(2, 8)
            self.bn3d = nn.BatchNorm3d(8)  # in detectron2's norm list
            self.inorm = nn.InstanceNorm1d(8, affine=True)
            self.fc = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2, bias=False)
            self.frozen = nn.Linear(8, 8)
            self.frozen.requires_grad_(False)
            self.scale = nn.Parameter(torch.ones(1))  # a plain parameter: decayed

    m = Block()
    groups = param_groups(m, 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    name = {id(p): n for n, p in m.named_parameters()}
    assert {name[i] for i in decay} == {
        "attn.in_proj_weight",
        "attn.in_proj_bias",
        "attn.out_proj.weight",
        "fc.weight",
        "head.weight",
        "scale",
    }
    assert {name[i] for i in no_decay} == {
        "attn.out_proj.bias",
        "ln.weight",
        "ln.bias",
        "gn.weight",
        "gn.bias",
        "bn3d.weight",
        "bn3d.bias",
        "inorm.weight",
        "inorm.bias",
        "fc.bias",
    }
