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
    assert [len(InferenceShardSampler(size, num_replicas=world, rank=r)) for r in range(world)] == \
        [len(s) for s in shards]


def test_is_a_distributed_sampler_so_lightning_keeps_it():
    sampler = InferenceShardSampler(list(range(5)), num_replicas=2, rank=1)
    assert isinstance(sampler, DistributedSampler) and list(sampler) == [3, 4]
    sampler.set_epoch(3)
    assert list(sampler) == [3, 4]
    with pytest.raises(ValueError):
        InferenceShardSampler(5, num_replicas=2, rank=2)
