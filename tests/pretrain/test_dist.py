"""Replica check across real gloo ranks: identical copies pass, one changed bias is caught."""

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch import nn

from pretrain.dist import ReplicaMismatchError, check_replicas_agree


def _check(rank: int, world_size: int, init_file: str, perturb: bool, results) -> None:
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    if perturb and rank == 1:
        with torch.no_grad():
            module[0].bias[0] += 1e-3
    try:
        check_replicas_agree(module, "target network")
        results.put((rank, "agree"))
    except ReplicaMismatchError as error:
        results.put((rank, str(error)))
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.parametrize("perturb", [False, True])
def test_replica_check_across_two_gloo_ranks(tmp_path, perturb):
    results = mp.get_context("spawn").SimpleQueue()
    init_file = str(tmp_path / f"init-{perturb}")
    mp.spawn(_check, args=(2, init_file, perturb, results), nprocs=2, join=True)
    outcomes = dict(results.get() for _ in range(2))
    if not perturb:
        assert outcomes == {0: "agree", 1: "agree"}
    else:  # every rank sees the mismatch, so every rank stops
        expected = "the target network differs between ranks in 1 of 4 tensors (first: #1)"
        for message in outcomes.values():
            assert expected in message


def test_replica_check_is_a_no_op_in_one_process():
    check_replicas_agree(nn.Linear(2, 2), "target network")  # no process group: nothing to do
