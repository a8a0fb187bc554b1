"""Functions the SLURM tests run on the cluster (imported there by reference, so kept light)."""

import os
import time
from pathlib import Path


def train_and_digest(config, run_dir: str) -> dict:
    """pretrain.launch.train_on_slurm, plus a digest of this rank's BYOL parameters afterwards."""
    import pretrain.train as train_module
    from pretrain.checkpoint import weights_sha256
    from pretrain.launch import train_on_slurm

    captured = {}
    build_run = train_module.build_run

    def capturing_build_run(*args, **kwargs):
        captured["run"] = build_run(*args, **kwargs)
        return captured["run"]

    train_module.build_run = capturing_build_run
    export = train_on_slurm(config, run_dir, "cpu")
    run = captured["run"]
    parameters = {name: p.detach().clone() for name, p in run.network.named_parameters()}
    return {
        "rank": int(os.environ["RANK"]),
        "world_size": int(os.environ["WORLD_SIZE"]),
        "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        "ddp": type(run.model).__name__,
        "step": run.step,
        "export": str(export) if export else None,
        "parameters_sha256": weights_sha256(parameters),
    }


def list_exports(run_dir: str) -> dict:
    """A stand-in for an evaluation job: when it started and which exports it found."""
    exports = sorted(Path(run_dir, "exports").glob("backbone-*.pt"))
    return {"start": time.time(), "exports": [str(path) for path in exports]}


def array_task(value: int) -> dict:
    """One task of a job array: its argument and SLURM's array ids."""
    return {
        "value": value,
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }


def node_facts() -> dict:
    """What one task of a multi-node job sees (node, ranks, rendezvous address), after joining
    the process group as pretraining does (pretrain.dist) and summing rank + 1 over all ranks."""
    import torch

    from pretrain import dist

    info = dist.init_from_env("cpu")
    total = dist.all_reduce_sum(torch.tensor([float(info.rank + 1)]))
    dist.cleanup()
    return {
        "node": os.environ["SLURMD_NODENAME"],
        "node_id": int(os.environ["SLURM_NODEID"]),
        "rank": info.rank,
        "local_rank": info.local_rank,
        "world_size": info.world_size,
        "master": os.environ["MASTER_ADDR"],
        "port": int(os.environ["MASTER_PORT"]),
        "sum": total.item(),
    }
