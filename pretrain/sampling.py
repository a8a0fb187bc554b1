"""THE sample order of every training loop: `sample_seed` and one seeded, resumable batch sampler.

Used by pretraining (pretrain/views.py), the linear probe (evaluate/transforms.py), fine-tuning
(evaluate/finetune.py), detection (transfer/detection/train.py) and segmentation
(transfer/segmentation/engine.py).

Every random draw of a sample is seeded from `sample_seed(seed, ...)`, never from worker RNG
state, so a run's batches and views depend neither on the number of loader workers nor on whether
(or where) it was interrupted and resumed.

`SeededBatches` cuts the data into global batches, one per step, and gives rank r the r-th of
`world_size` near-equal slices of each (so the ranks of one step together see exactly the global
batch). Epoch e's order is `randperm(num_samples)` seeded by `sample_seed(seed, e)`. Its `last`
argument says what happens at the end of an epoch:
    "drop"      epochs of whole global batches; the incomplete last one is dropped (pretraining);
    "keep"      the last batch may be smaller (the linear probe; `min_last` images at least);
    "stream"    iterations run through an endless sequence of epochs, a batch may span two of
                them (detectron2/mmseg's iteration-based training).
Epoch modes yield (epoch, index) keys and `set_epoch(epoch, start_step)` resumes mid-epoch by
skipping batches without touching data; stream mode yields (position, index) keys, where
`position` counts samples since the start of training, and `set_steps(start, stop)` selects the
iterations.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from results.errors import ByolBenchError

LAST_BATCH = ("drop", "keep", "stream")


class SamplingError(ByolBenchError, ValueError):
    """Sampler settings that make no batch; the message says what to change."""


def sample_seed(seed: int, *keys: int) -> int:
    """The 63-bit seed of the draw named by `keys` in a run seeded `seed`.

    (seed, epoch): the order of that epoch; (seed, epoch, index) or (seed, position, index):
    sample `index`'s augmentations. A hash of (seed, *keys): a splitmix64 chain (Steele, Lea and
    Flood 2014), in pure Python so that it is the same on every platform and library version. Each
    step is a bijection of 64 bits, so different indices of one epoch get different states; the
    length of the tuple is mixed in first, so (seed, epoch) never equals a 3-tuple's seed. The top
    63 bits are returned (a valid `torch.Generator.manual_seed`).
    """
    mask = (1 << 64) - 1
    values = (seed, *keys)
    state = 0
    for value in (len(values), *values):
        state = (state ^ value) & mask
        state = (state + 0x9E3779B97F4A7C15) & mask  # splitmix64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & mask
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & mask
        state ^= state >> 31
    return state >> 1


def epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of all `num_samples` indices in `epoch`, the same on every rank."""
    generator = torch.Generator().manual_seed(sample_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


class SeededBatches(Sampler):
    """Batches of keys for this rank, one per step (see the module docstring); a batch_sampler."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        last: str = "drop",
        min_last: int = 1,
    ) -> None:
        """`batch_size` is the global batch (all ranks together)."""
        if last not in LAST_BATCH:
            raise SamplingError(f"last must be one of {LAST_BATCH}, not {last!r}")
        if not 0 <= rank < world_size:
            raise SamplingError(f"rank {rank} is outside world size {world_size}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.last = rank, world_size, last
        full, rest = divmod(num_samples, batch_size) if batch_size > 0 else (0, 0)
        keep_rest = last == "keep" and rest >= max(min_last, 1)
        self.steps_per_epoch = full + keep_rest if last != "stream" else full
        if batch_size < world_size or (self.steps_per_epoch == 0 and last != "stream"):
            raise SamplingError(
                f"{num_samples} images make no global batch of {batch_size} on {world_size} "
                "ranks; lower the batch size or use more data"
            )
        self.epoch, self.start, self.stop = 0, 0, self.steps_per_epoch
        self._orders: dict[int, list[int]] = {}

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Yield `epoch` next, starting after its first `start_step` batches (epoch modes)."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise SamplingError(f"start_step {start_step} is outside 0..{self.steps_per_epoch}")
        self.epoch, self.start, self.stop = epoch, start_step, self.steps_per_epoch

    def set_steps(self, start: int, stop: int) -> None:
        """Yield the batches of iterations start..stop-1 next (stream mode)."""
        self.start, self.stop = start, max(stop, start)

    def order(self, epoch: int) -> list[int]:
        """`epoch_order` of `epoch` (one epoch kept in memory)."""
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.num_samples, self.seed, epoch).tolist()}
        return self._orders[epoch]

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """The keys of every rank at `step` of the current epoch (stream: of training)."""
        first = step * self.batch_size
        if self.last == "stream":
            positions = range(first, first + self.batch_size)
            return [(p, self.order(p // self.num_samples)[p % self.num_samples]) for p in positions]
        indices = self.order(self.epoch)[first : first + self.batch_size]
        return [(self.epoch, index) for index in indices]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            batch = self.global_batch(step)
            size, rank, world = len(batch), self.rank, self.world_size
            yield batch[rank * size // world : (rank + 1) * size // world]

    def __len__(self) -> int:
        return self.stop - self.start
