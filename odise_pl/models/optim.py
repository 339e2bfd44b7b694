"""AdamW with a no-decay parameter group; linear warm-up (or none) then step decay.

The reference (ODISE ``configs/Panoptic/odise_label_coco_50e.py`` on detectron2 / fvcore) builds the
parameter groups with detectron2's ``get_default_optimizer_params(weight_decay_norm=0,
weight_decay_bias=0)`` and the schedule with ``WarmupParamScheduler(MultiStepParamScheduler(values=[1,
0.1, 0.01], milestones=[163889, 177546], num_updates=184375), warmup_length=500 / 184375,
warmup_factor=0.067)`` read through ``LRMultiplier`` at ``where = step / max_steps``.  :func:`lr_factor`
is that multiplier with the milestones and the warm-up length given as ``optim.milestones`` (fractions
of ``trainer.max_steps``) and ``optim.warmup_steps``.

Which parameters skip weight decay is ``optim.no_decay`` (:data:`NO_DECAY_RULES`): ODISE's
``norm_and_bias`` (the default) or FC-CLIP's ``norm_and_embedding`` (``train_net.py:188-234`` of
bytedance/fc-clip: ``WEIGHT_DECAY_NORM = WEIGHT_DECAY_EMBED = 0``, biases and ``logit_scale`` decayed).
FC-CLIP has no warm-up (``WARMUP_FACTOR 1.0``): ``optim.warmup_steps: 0``.
"""

from __future__ import annotations

import torch
from torch import nn

from odise_pl.config.schema import OptimConfig

#: detectron2's ``norm_module_types`` of ``get_default_optimizer_params`` (its own norms subclass these)
NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)

#: fvcore's ``ParamScheduler.WHERE_EPSILON``: milestone m applies from ``step / max_steps >= m - eps``
WHERE_EPSILON = 1e-6


def _norm_or_bias(module: nn.Module, name: str) -> bool:
    return isinstance(module, NORM_TYPES) or name == "bias"


def _norm_or_embedding(module: nn.Module, name: str) -> bool:
    return isinstance(module, (*NORM_TYPES, nn.Embedding))


#: ``optim.no_decay`` -> ``f(module, parameter's own name)``: True where the parameter gets no weight decay
NO_DECAY_RULES = {"norm_and_bias": _norm_or_bias, "norm_and_embedding": _norm_or_embedding}


def param_groups(model: nn.Module, weight_decay: float, no_decay: str = "norm_and_bias") -> list[dict]:
    """Trainable parameters split into a decayed group and a no-decay group.

    Args:
        no_decay: the rule (:data:`NO_DECAY_RULES`, both detectron2's ``get_default_optimizer_params``
            by module type). ``"norm_and_bias"`` (ODISE: ``weight_decay_norm=0, weight_decay_bias=0``):
            every parameter of a norm layer (:data:`NORM_TYPES`) and every parameter whose own name is
            exactly ``bias``; so an attention's ``in_proj_bias`` *is* decayed. ``"norm_and_embedding"``
            (FC-CLIP: ``weight_decay_norm=0, weight_decay_embed=0``): norm layers and every
            ``nn.Embedding`` (queries, level embeddings, the void vector); biases and plain
            ``nn.Parameter`` s such as ``logit_scale`` are decayed.

    Frozen parameters are left out; a parameter shared by several modules appears once.
    """
    rule = NO_DECAY_RULES[no_decay]
    decay, no_decay_params, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if rule(module, name):
                no_decay_params.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay_params, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig, *, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`.

    Args:
        fused: ``model.speed.fused_optimizer``: one fused kernel per parameter group (``fused=True``) when
            every trainable parameter is on CUDA, else the multi-tensor ``foreach`` implementation. Off:
            PyTorch's default (``foreach`` on CUDA, a per-parameter loop on the CPU). The three compute the
            same update in another order (float32 rounding; ``tests/models/test_optim_fused.py``).
    """
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    kwargs = {}
    if fused:
        on_cuda = all(p.is_cuda for g in groups for p in g["params"])
        kwargs = {"fused": True} if on_cuda else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), **kwargs)


def decay_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """``gamma`` to the number of milestones reached at ``step`` (fvcore's ``MultiStepParamScheduler``)."""
    where = step / max(1, max_steps)
    return cfg.gamma ** sum(where + WHERE_EPSILON >= float(m) for m in cfg.milestones)


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based, the step it is used for).

    During the warm-up (``step < warmup_steps``) it rises linearly from ``warmup_factor`` times the
    schedule's value at step 0 to the schedule's value at the end of the warm-up; afterwards it is the
    step schedule: ``gamma`` per milestone reached (milestone ``m`` from the first step with
    ``step / max_steps >= m - 1e-6``).  With the reference's numbers (``warmup_steps=250``,
    ``warmup_factor=0.067``, milestones 163889/184375 and 177546/184375 of 92,188 steps) that is 0.067 at
    step 0, ``0.067 + 0.933 * step / 250`` up to step 249, 1.0 from step 250, 0.1 from step 81,945 and
    0.01 from step 88,774.  (The reference's warm-up is 500/184375 of the run, 250.0014 steps: its
    multipliers differ from these by less than 6e-6.)
    """
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        alpha = step / cfg.warmup_steps
        start = cfg.warmup_factor * decay_factor(0, cfg, max_steps)
        return start * (1 - alpha) + decay_factor(cfg.warmup_steps, cfg, max_steps) * alpha
    return decay_factor(step, cfg, max_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, max_steps))
