"""Samplers for distributed evaluation and seeding of DataLoader workers.

A padded ``DistributedSampler`` repeats images to give every rank the same count,
so metrics would count those images twice.  :class:`InferenceShardSampler` gives each
rank a contiguous, disjoint shard; together the shards hold every index exactly once
(ranks may differ by one image).  It subclasses ``DistributedSampler`` so that
Lightning keeps it instead of wrapping it in a padded one.
"""

from __future__ import annotations

import random
from typing import Iterator, Sized

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, get_worker_info


def current_world(trainer=None) -> tuple[int, int]:
    """(world_size, rank) from a Lightning trainer, else torch.distributed, else (1, 0)."""
    if trainer is not None:
        return int(trainer.world_size), int(trainer.global_rank)
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def shard_range(size: int, num_replicas: int, rank: int) -> range:
    """The indices of ``rank``'s shard: the first ``size % num_replicas`` shards get one more."""
    base, extra = divmod(size, num_replicas)
    begin = rank * base + min(rank, extra)
    return range(begin, begin + base + (1 if rank < extra else 0))


class InferenceShardSampler(DistributedSampler):
    """Each rank iterates its own contiguous shard; every index is seen exactly once overall.

    Args:
        dataset: the dataset (only its length is used) or the length itself.
        num_replicas: world size (default: from ``torch.distributed``, else 1).
        rank: this process' rank (default: from ``torch.distributed``, else 0).

    Example:
        >>> [list(InferenceShardSampler(5, num_replicas=2, rank=r)) for r in range(2)]
        [[0, 1, 2], [3, 4]]
    """

    def __init__(self, dataset: Sized | int, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        size = dataset if isinstance(dataset, int) else len(dataset)
        world, here = current_world()
        num_replicas = world if num_replicas is None else num_replicas
        rank = here if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = shard_range(size, num_replicas, rank)
        self.num_samples = len(self.indices)
        self.total_size = size

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a distinct RNG per (rank, worker, epoch).

    Seeds ``random``, ``numpy`` and the dataset's own generator (``dataset.reseed``) from the
    worker seed PyTorch draws from the main process RNG (so ``seed_everything`` governs it).
    """
    info = get_worker_info()
    seed = info.seed if info is not None else torch.initial_seed()
    sequence = np.random.SeedSequence([seed % 2**63, rank, worker_id])
    python_seed, numpy_seed = sequence.spawn(2)
    random.seed(int(python_seed.generate_state(1)[0]))
    np.random.seed(numpy_seed.generate_state(1)[0])
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(sequence)
