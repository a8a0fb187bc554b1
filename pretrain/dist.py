"""Process-group set-up and collectives that no-op at world size 1.

The same training code runs as one process with no process group, as N local processes started by
``pretrain.launch --nproc N`` (torchrun-style environment), or under SLURM after submitit's
``TorchDistributedEnvironment().export()``: all of them set RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT, which is all :func:`init_from_env` reads.
"""

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from results.errors import ByolBenchError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group described by the environment; a single process needs none.

    NCCL on CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not torch_dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        torch_dist.init_process_group(backend=backend, init_method="env://")
    return info


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (identity at world size 1)."""
    if is_distributed():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


class ReplicaMismatchError(ByolBenchError, RuntimeError):
    """Ranks hold different copies of a network that must be identical on every rank."""


def check_replicas_agree(module: torch.nn.Module, name: str) -> None:
    """Raise unless every rank holds the same parameters in `module` (no-op on 1 rank).

    One all-reduce of a per-tensor checksum vector, MAX and MIN compared: cheap enough for every
    epoch. DDP keeps the online network in step; this covers what DDP does not touch (the target
    network's EMA). BN running statistics are left out: without SyncBatchNorm (CPU) each rank's
    come from its own batches, and the target uses batch statistics anyway.
    """
    if not is_distributed():
        return
    tensors = list(module.parameters())
    checksum = torch.stack(
        [t.detach().double().sum() for t in tensors]
        + [torch.zeros((), dtype=torch.float64, device=tensors[0].device)]
    )
    high, low = checksum.clone(), checksum.clone()
    torch_dist.all_reduce(high, op=torch_dist.ReduceOp.MAX)
    torch_dist.all_reduce(low, op=torch_dist.ReduceOp.MIN)
    differ = (high != low).nonzero().flatten().tolist()
    if differ:
        raise ReplicaMismatchError(
            f"the {name} differs between ranks in {len(differ)} of {len(tensors)} tensors "
            f"(first: #{differ[0]}); ranks must apply identical updates"
        )


def barrier() -> None:
    if is_distributed():
        torch_dist.barrier()


def cleanup() -> None:
    if is_distributed():
        torch_dist.destroy_process_group()


class RankFilter(logging.Filter):
    """Let only rank 0 log below WARNING."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_logging(rank: int) -> None:
    """Plain logging to stderr with a rank prefix; non-zero ranks show warnings only."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s"))
    handler.addFilter(RankFilter(rank))
    handler.byol_bench = True  # marks our handler, so a second call replaces it and keeps others
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "byol_bench", False)] + [handler]
    root.setLevel(logging.INFO)
