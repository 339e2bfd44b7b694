"""Distributed evaluation sees every image exactly once."""

from __future__ import annotations

import pytest
from torch.utils.data import DistributedSampler

from odise_pl.data_modules.sampling import InferenceShardSampler


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [0, 1, 3, 7, 10, 13])
def test_every_index_exactly_once(world, size):
    shards = [list(InferenceShardSampler(size, num_replicas=world, rank=r)) for r in range(world)]
    flat = [i for shard in shards for i in shard]
    assert sorted(flat) == list(range(size))  # no duplicates, no gaps
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(InferenceShardSampler(size, num_replicas=world, rank=r)) for r in range(world)] == [len(s) for s in shards]


def test_is_a_distributed_sampler_so_lightning_keeps_it():
    sampler = InferenceShardSampler(list(range(5)), num_replicas=2, rank=1)
    assert isinstance(sampler, DistributedSampler) and list(sampler) == [3, 4]
    sampler.set_epoch(3)
    assert list(sampler) == [3, 4]
    with pytest.raises(ValueError):
        InferenceShardSampler(5, num_replicas=2, rank=2)


def test_resumable_shuffle_continues_mid_epoch_and_after_an_epoch():
    from odise_pl.data_modules.sampling import ResumableShuffleSampler

    def epoch(sampler, e):
        sampler.set_epoch(e)
        return list(sampler)

    full = ResumableShuffleSampler(10, seed=5, num_replicas=1, rank=0)
    first, second = epoch(full, 0), epoch(full, 1)
    assert sorted(i for i, _ in first) == list(range(10)) and first != second  # reshuffled per epoch
    assert len({s for _, s in first + second}) == 20  # one augmentation seed per (epoch, position)

    resumed = ResumableShuffleSampler(10, seed=5, num_replicas=1, rank=0)
    resumed.load_state_dict({"epoch": 0, "consumed": 4})
    assert epoch(resumed, 0) == first[4:]  # the rest of the epoch, with the same seeds
    assert epoch(resumed, 1) == second  # the next epoch is whole again

    at_end = ResumableShuffleSampler(10, seed=5, num_replicas=1, rank=0)
    at_end.load_state_dict({"epoch": 0, "consumed": 10})  # saved after the last batch of epoch 0
    assert list(at_end) == second

    shards = [ResumableShuffleSampler(10, seed=5, num_replicas=2, rank=r) for r in range(2)]
    assert sorted(i for s in shards for i, _ in s) == list(range(10))
    assert isinstance(shards[0], DistributedSampler)  # so Lightning keeps it under DDP


def test_resumable_loader_reports_batches_handed_out_not_prefetched():
    from odise_pl.data_modules.sampling import ResumableDataLoader, ResumableShuffleSampler

    class Indices(list):  # items are (index, sample_seed): returns the index
        def __getitem__(self, key):
            return key[0]

    sampler = ResumableShuffleSampler(12, seed=0, num_replicas=1, rank=0)
    loader = ResumableDataLoader(Indices(range(12)), batch_size=3, sampler=sampler, collate_fn=lambda items: items)
    it = iter(loader)
    next(it), next(it)
    assert loader.state_dict() == {"epoch": 0, "seed": 0, "num_samples": 12, "consumed": 6}
    other = ResumableDataLoader(
        Indices(range(12)),
        batch_size=3,
        sampler=ResumableShuffleSampler(12, seed=0, num_replicas=1, rank=0),
        collate_fn=lambda items: items,
    )
    other.load_state_dict(loader.state_dict())
    assert list(other) == list(it)  # the remaining two batches
