"""One parity check's result and the float-tensor comparison every parity module shares.

Float tensors are compared by relative L2 error ``||ours - ref|| / ||ref|| <= REL_TOL`` (1e-4):
the same function computed by other kernels (diffusers' SDPA for ldm's vanilla attention,
transformers' deformable attention, another summation order or SIMD path) differs here by
1e-7 .. 2e-5; every functional deviation the parity work found moves some tensor by >= 1e-2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

REL_TOL = 1e-4


@dataclass
class Check:
    """One named comparison: passed or not, and what was measured."""

    name: str
    ok: bool
    detail: str


def rel_l2(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``||ours - ref|| / ||ref||`` (float32, ``ours`` reshaped to ``ref``)."""
    ref = ref.detach().float().cpu()
    ours = ours.detach().float().cpu()
    return float((ours.reshape(ref.shape) - ref).norm() / ref.norm().clamp(min=1e-12))


def max_abs(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """The largest absolute difference (0 for empty tensors)."""
    if ours.numel() == 0:
        return 0.0
    ref = ref.detach().float().cpu()
    return float((ours.detach().float().cpu().reshape(ref.shape) - ref).abs().max())


__all__ = ["Check", "REL_TOL", "max_abs", "rel_l2"]
