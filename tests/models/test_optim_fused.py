"""``model.speed.fused_optimizer``: the same AdamW update as the per-parameter loop, within float32 rounding.

The loop, ``foreach`` and ``fused`` implementations evaluate the same formula with other groupings of the
same float32 operations; each step can differ by a few units in the last place (ulp, 2^-23 relative) of
the update, and the differences add up over the steps. Bound after N steps: ``N * 8 * 2^-23 * max|p|``
(a step changes p by at most ~lr = 1e-2 here, so 8 ulp of |p| per step is generous; measured after 20 steps:
foreach vs loop 0, the fused kernel vs loop 1.2e-7, one ulp of |p| ~ 1).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odise_pl.config.schema import OptimConfig
from odise_pl.models.optim import build_optimizer

STEPS = 20


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4))


def _train(optimizer_of) -> list[torch.Tensor]:
    model = _model()
    optimizer = optimizer_of(model)
    gen = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def _loop(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.999), weight_decay=0.05, foreach=False)


def _check(ref: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    bound = STEPS * 8 * 2.0**-23 * max(float(p.abs().max()) for p in ref)
    worst = max(float((a - b).abs().max()) for a, b in zip(ref, got))
    assert worst <= bound, f"largest difference {worst:.3g} above {bound:.3g}"
    return worst


def test_build_optimizer_fused_switch_picks_foreach_on_cpu():
    cfg = OptimConfig(lr=1e-2, weight_decay=0.05)
    opt = build_optimizer(_model(), cfg, fused=True)
    assert opt.defaults["foreach"] is True and not opt.defaults.get("fused")
    plain = build_optimizer(_model(), cfg)
    assert plain.defaults["foreach"] is None and not plain.defaults.get("fused")  # torch's own choice


def test_foreach_matches_the_loop_within_float32_rounding():
    """On the CPU the switch gives ``foreach``; off, PyTorch runs its per-parameter loop there."""
    cfg = OptimConfig(lr=1e-2, weight_decay=0.05, betas=[0.9, 0.999])
    got = _train(lambda m: build_optimizer(m, cfg, fused=True))
    plain = _train(lambda m: build_optimizer(m, cfg))
    worst = _check(plain, got)
    print(f"foreach vs loop after {STEPS} steps: {worst:.3g}")


def test_fused_kernel_matches_the_loop_within_float32_rounding():
    """The fused kernel (what CUDA runs with the switch; PyTorch also has it on the CPU) against the loop."""
    try:
        got = _train(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.05, fused=True))
    except RuntimeError as err:  # an older PyTorch without the CPU kernel
        pytest.skip(f"no fused AdamW on the CPU: {err}")
    worst = _check(_train(_loop), got)
    print(f"fused vs loop after {STEPS} steps: {worst:.3g}")
