"""Collectives the losses need: a differentiable all-gather of per-rank batches.

``torch.distributed.all_gather`` returns tensors without a gradient.
:func:`all_gather_with_grad` returns the rows of every rank concatenated in rank
order, and in the backward pass sends each rank the gradient that *all* ranks
computed for its rows (an all-reduce sum of the gathered gradient, then this
rank's slice).  So when every rank computes a loss from the gathered batch, the
gradient reaching this rank's inputs is ``d(sum over ranks of the losses)/d(rows)``.

Ranks may hold different batch sizes: the rows are padded to the largest batch
for the collective and the padding is cut out again.  Every rank must call the
same gathers in the same order, forward and backward (as with any collective).
Outside ``torch.distributed`` (or with one process) the functions are identities.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_sizes(size: int, device: torch.device | str = "cpu") -> list[int]:
    """The batch size of every rank, in rank order (``[size]`` outside distributed runs).

    ``device`` must suit the backend (a CUDA device for NCCL).
    """
    if not is_distributed():
        return [int(size)]
    mine = torch.tensor([int(size)], dtype=torch.long, device=device)
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return [int(t.item()) for t in every]


class _AllGatherEqual(torch.autograd.Function):
    """(N, ...) on every rank -> (W, N, ...); backward: all-reduce sum, keep this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank = dist.get_rank()
        send = tensor.contiguous()
        wire = send.to(torch.uint8) if send.dtype == torch.bool else send  # gloo has no bool
        out = [torch.empty_like(wire) for _ in range(dist.get_world_size())]
        dist.all_gather(out, wire)
        return torch.stack(out).to(tensor.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank]


def all_gather_with_grad(tensor: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate every rank's rows along dim 0, keeping the autograd graph.

    Args:
        tensor: (B_r, ...) this rank's rows; the trailing shape and the dtype must
            agree on all ranks.
        sizes: every rank's B_r (from :func:`gather_sizes`); asked for when ``None``.

    Returns:
        (sum_r B_r, ...) the rows of rank 0, then rank 1, ...  Gradients flow back
        to every rank's ``tensor`` (summed over the ranks that used them).
    """
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = gather_sizes(tensor.shape[0], tensor.device)
    if len(sizes) != dist.get_world_size() or sizes[dist.get_rank()] != tensor.shape[0]:
        raise ValueError(f"sizes {sizes} do not match world size {dist.get_world_size()} and this rank's batch of {tensor.shape[0]}")
    longest = max(sizes)
    if tensor.shape[0] < longest:  # (B_r, ...) -> (max B, ...)
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    gathered = _AllGatherEqual.apply(tensor)  # (W, max B, ...)
    if all(s == longest for s in sizes):
        return gathered.flatten(0, 1)
    return torch.cat([gathered[r, :s] for r, s in enumerate(sizes)])
