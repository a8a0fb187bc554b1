"""Command line for BYOL pretraining.

    python -m pretrain.launch --preset byol_r50_in1k --data /imagenet --run-dir /shared/runs/r50
    python -m pretrain.launch --preset tiny_cpu --dataset synthetic --run-dir /tmp/r --max-steps 20
    python -m pretrain.launch --preset byol_r18_cifar10 --data /data/cifar10 --nproc 4   # 4 GPUs

Every PretrainConfig field has a flag (--base-lr, --epochs, ...) that overrides the preset's value.
A run directory that already holds a run resumes it; one that holds a different config is refused.
"""

import argparse
import os
import socket
import sys

from pretrain.config import PRESETS, PretrainConfig, add_config_arguments, config_from_args


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.launch",
        description="BYOL pretraining (Grill et al. 2020), faithful to the paper's protocol.",
        epilog="Presets: " + ", ".join(sorted(PRESETS)),
    )
    parser.add_argument(
        "--preset",
        default="byol_r50_in1k",
        choices=sorted(PRESETS),
        help="named config (default: byol_r50_in1k, the paper's 1000-epoch R50)",
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        help="where config.json, log.jsonl, checkpoints/ and exports/ go; an "
        "existing run resumes (default: runs/<preset>)",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available"
    )
    parser.add_argument(
        "--nproc",
        "--gpus",
        dest="nproc",
        type=int,
        default=1,
        help="local processes (one per GPU; gloo processes on CPU), torchrun-style",
    )
    add_config_arguments(parser)
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(local_rank: int, nproc: int, port: int, config, run_dir, device) -> None:
    os.environ.update(
        {
            "RANK": str(local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    from pretrain import dist
    from pretrain.train import train

    try:
        train(config, run_dir, device)
    finally:
        dist.cleanup()


def run_local(config: PretrainConfig, run_dir: str, device: str | None, nproc: int):
    """Train here: one process, or ``nproc`` spawned ranks (torchrun-style environment)."""
    from pretrain.train import train

    if nproc == 1:
        return train(config, run_dir, device)
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(nproc, _free_port(), config, run_dir, device), nprocs=nproc)
    return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from pretrain.checkpoint import CheckpointError
    from pretrain.data import DataError
    from pretrain.train import ConfigMismatchError, NonFiniteLossError

    try:
        config = config_from_args(args)
        run_dir = args.run_dir or os.path.join("runs", args.preset)
        export_path = run_local(config, run_dir, args.device, args.nproc)
    except (DataError, ConfigMismatchError, CheckpointError, ValueError) as error:
        sys.exit(f"error: {error}")
    except NonFiniteLossError as error:
        sys.exit(f"stopped: {error}")
    print(f"run dir: {os.path.abspath(run_dir)}")
    if export_path is not None:
        print(f"export:  {export_path}")


if __name__ == "__main__":
    main()
