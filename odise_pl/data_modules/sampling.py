"""Samplers for distributed evaluation and seeding of DataLoader workers.

A padded ``DistributedSampler`` repeats images to give every rank the same count,
so metrics would count those images twice.  :class:`InferenceShardSampler` gives each
rank a contiguous, disjoint shard; together the shards hold every index exactly once
(ranks may differ by one image).  It subclasses ``DistributedSampler`` so that
Lightning keeps it instead of wrapping it in a padded one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sized

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, get_worker_info


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

    def __init__(self, dataset: Sized | int, num_replicas: int | None = None, rank: int | None = None) -> None:
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


class ResumableShuffleSampler(DistributedSampler):
    """Training order: a permutation drawn from ``(seed, epoch)``, sharded by rank, resumable mid-epoch.

    Each item is ``(index, sample_seed)``: the dataset seeds that sample's random augmentation
    with ``sample_seed`` (a function of seed, epoch and position), so the augmentations do not
    depend on the number of workers, on prefetching, or on where a run was interrupted.
    :class:`ResumableDataLoader` saves the position in checkpoints; ``start`` skips the samples
    of the epoch already trained on, once.

    Args:
        dataset: the dataset or its length.
        seed: the shuffling seed (the same on every rank).
        num_replicas, rank: as :class:`InferenceShardSampler`.
        drop_last: drop the tail instead of padding the shards to equal length.

    Example:
        >>> s = ResumableShuffleSampler(4, seed=0, num_replicas=1, rank=0)
        >>> s.load_state_dict({"epoch": 0, "consumed": 3}); len(list(s))
        1
    """

    def __init__(
        self, dataset: Sized | int, *, seed: int, num_replicas: int | None = None, rank: int | None = None, drop_last: bool = False
    ) -> None:
        size = dataset if isinstance(dataset, int) else len(dataset)
        world, here = current_world()
        super().__init__(
            range(size),
            num_replicas=world if num_replicas is None else num_replicas,
            rank=here if rank is None else rank,
            shuffle=True,
            seed=int(seed) % 2**63,
            drop_last=drop_last,
        )
        self.start = 0  # position in this rank's epoch where the next iteration begins
        self.iter_start = 0  # where the current iteration began

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        super().set_epoch(epoch)

    def _sample_seed(self, position: int) -> int:
        sequence = np.random.SeedSequence([self.seed, self.epoch, self.rank, position])
        return int(sequence.generate_state(1, np.uint64)[0] % 2**63)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        self.iter_start, self.start = min(self.start, len(indices)), 0
        return iter([(i, self._sample_seed(p)) for p, i in enumerate(indices) if p >= self.iter_start])

    def state_dict(self, consumed_in_iteration: int = 0) -> dict:
        """Epoch and samples of it consumed: those before this iteration plus ``consumed_in_iteration``."""
        return {
            "epoch": int(self.epoch),
            "seed": int(self.seed),
            "num_samples": int(self.num_samples),
            "consumed": min(self.iter_start + int(consumed_in_iteration), int(self.num_samples)),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state``: a finished epoch resumes at the start of the next one."""
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if consumed >= self.num_samples:
            epoch, consumed = epoch + 1, 0
        super().set_epoch(epoch)
        self.start = consumed


class ResumableDataLoader(DataLoader):
    """A training DataLoader over a :class:`ResumableShuffleSampler` whose position Lightning checkpoints.

    Lightning saves ``state_dict()`` of a training loader that has one (in the fit loop's state) and
    calls ``load_state_dict`` on resume before iterating, so training continues at the sample that
    followed the checkpoint.  The position counts batches handed to the training loop, not those
    prefetched by workers.  Without a ``generator`` it gets a private one (seeded from the sampler),
    so that starting an epoch never draws from the global RNG that training uses: a resumed run and
    an uninterrupted one then draw the same numbers.
    """

    def __init__(self, dataset, *args, generator: torch.Generator | None = None, **kwargs) -> None:
        sampler = kwargs.get("sampler")
        if generator is None:
            generator = torch.Generator().manual_seed(int(getattr(sampler, "seed", 0)) % 2**63)
        super().__init__(dataset, *args, generator=generator, **kwargs)

    def __iter__(self):
        self._live = super().__iter__()
        return self._live

    def _consumed_in_iteration(self) -> int:
        live = getattr(self, "_live", None)
        return int(getattr(live, "_num_yielded", 0)) * int(self.batch_size or 1)

    def state_dict(self) -> dict:
        return self.sampler.state_dict(self._consumed_in_iteration())

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
