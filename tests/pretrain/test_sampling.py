"""pretrain/sampling.py: the one sampler of every loop partitions ranks, reproduces its seed's order
and resumes mid-epoch (and mid-stream) exactly; sample_seed mixes every argument."""

from __future__ import annotations

import pytest

from pretrain.sampling import SamplingError, SeededBatches, epoch_order, sample_seed


def _epoch(sampler: SeededBatches, epoch: int, start_step: int = 0) -> list[int]:
    sampler.set_epoch(epoch, start_step)
    batches = list(sampler)
    keys = [key for batch in batches for key in batch]
    assert len(batches) == len(sampler) and {e for e, _ in keys} <= {epoch}
    return [index for _, index in keys]


def _ranks(num_samples, batch, world, **kwargs) -> list[SeededBatches]:
    return [
        SeededBatches(num_samples, batch * world, 7, rank=r, world_size=world, **kwargs)
        for r in range(world)
    ]


def test_sampler_ranks_partition_each_global_batch() -> None:
    batch, world = 4, 3
    samplers = _ranks(50, batch, world)
    assert samplers[0].steps_per_epoch == 50 // 12 and len(samplers[0]) == 4  # batches
    order = epoch_order(50, 7, 2).tolist()
    per_rank = [_epoch(s, epoch=2) for s in samplers]
    for step in range(samplers[0].steps_per_epoch):
        union = [i for r in range(world) for i in per_rank[r][step * batch : (step + 1) * batch]]
        assert union == order[step * batch * world : (step + 1) * batch * world]
    everything = sum(per_rank, [])
    assert len(set(everything)) == len(everything) == 48  # drop_last: 2 of 50 unused


def test_sampler_epochs_seeds_and_resume() -> None:
    sampler = SeededBatches(64, 8, seed=3)
    full = _epoch(sampler, 5)
    assert sorted(full) == list(range(64))
    assert full == _epoch(SeededBatches(64, 8, seed=3), 5)  # same seed reproduces
    assert full != _epoch(sampler, 6) and full != _epoch(SeededBatches(64, 8, seed=4), 5)
    assert _epoch(sampler, 5, start_step=3) == full[3 * 8 :]  # the uninterrupted tail
    assert _epoch(sampler, 5, start_step=8) == []
    with pytest.raises(SamplingError):
        sampler.set_epoch(5, start_step=9)
    with pytest.raises(SamplingError, match="no global batch"):
        SeededBatches(10, 16, seed=3, world_size=2)


def test_a_resumed_rank_continues_mid_epoch_where_it_stopped() -> None:
    """Two ranks, killed after step 2 of epoch 1: resumed samplers yield the rest of the epoch."""
    for last in ("drop", "keep"):
        straight = [_epoch(s, 1) for s in _ranks(30, 4, 2, last=last)]
        resumed = [_epoch(s, 1, start_step=2) for s in _ranks(30, 4, 2, last=last)]
        assert [r[2 * 4 :] for r in straight] == resumed
        assert not set(straight[0]) & set(straight[1])  # the ranks' shares are disjoint


def test_keep_mode_keeps_a_smaller_last_batch() -> None:
    sampler = SeededBatches(10, 4, seed=3, last="keep")
    sampler.set_epoch(2)
    assert [len(batch) for batch in sampler] == [4, 4, 2]
    assert [i for batch in sampler for _, i in batch] == epoch_order(10, 3, 2).tolist()
    assert SeededBatches(9, 4, seed=3, last="keep", min_last=2).steps_per_epoch == 2  # 1 left


def test_stream_mode_resumes_mid_stream_and_covers_each_pass() -> None:
    full = SeededBatches(5, 3, seed=1, last="stream")
    full.set_steps(0, 6)
    resumed = SeededBatches(5, 3, seed=1, last="stream")
    resumed.set_steps(4, 6)
    batches = list(full)
    assert list(resumed) == batches[4:] and len(resumed) == 2
    positions = [p for batch in batches for p, _ in batch]
    assert positions == list(range(18))
    first_pass = sorted(i for batch in batches for p, i in batch if p < 5)
    assert first_pass == [0, 1, 2, 3, 4]  # every image once per pass


def test_sample_seed_mixes_every_argument() -> None:
    seeds = {sample_seed(0, epoch, index) for epoch in range(4) for index in range(1000)}
    assert len(seeds) == 4000 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(1, 0, 0) != sample_seed(0, 1, 0) != sample_seed(0, 0, 1)
    assert sample_seed(12, 3, 45) == sample_seed(12, 3, 45)
    assert sample_seed(12, 3) != sample_seed(12, 3, 0)  # the length is mixed in
