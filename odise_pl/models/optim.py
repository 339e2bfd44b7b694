"""AdamW without weight decay on norms and biases; linear warm-up then step decay (the reference recipe)."""

from __future__ import annotations

import torch
from torch import nn

from odise_pl.config.schema import OptimConfig

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.BatchNorm1d, nn.SyncBatchNorm, nn.InstanceNorm2d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group and a no-decay group (norms and biases)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, _NORMS) or name == "bias":
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of the base learning rate at ``step``."""
    factor = 1.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        alpha = step / cfg.warmup_steps
        factor = cfg.warmup_factor * (1 - alpha) + alpha
    for m in cfg.milestones:
        if step >= int(round(float(m) * max_steps)):
            factor *= cfg.gamma
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, max_steps))
