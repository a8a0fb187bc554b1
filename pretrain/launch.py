"""Command line for BYOL pretraining.

    python -m pretrain.launch --preset byol_r50_in1k --data /imagenet --run-dir /shared/runs/r50
    python -m pretrain.launch --preset tiny_cpu --dataset synthetic --run-dir /tmp/r --max-steps 20
    python -m pretrain.launch --preset byol_r18_cifar10 --data /data/cifar10 --nproc 4   # 4 GPUs
    python -m pretrain.launch --preset byol_r50_in1k --data /imagenet --slurm --profile mysite \
        --nodes 4 --gpus-per-node 8           # a SLURM job (slurm/profiles/mysite.toml)
    python -m pretrain.launch --status /shared/runs/r50     # job state, step, requeues, log tail

Every PretrainConfig field has a flag (--base-lr, --epochs, ...) that overrides the preset's value.
A run directory that already holds a run resumes it; one that holds a different config is refused.
"""

import argparse
import json
import os
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path

from pretrain.config import (
    RUNTIME_FIELDS,
    ConfigError,
    PretrainConfig,
    add_config_arguments,
    added_defaults,
    config_from_args,
)
from pretrain.identity import identity_differences
from pretrain.presets import PRESETS
from results import runlog
from results.errors import ByolBenchError
from slurm import status as slurm_status
from slurm import submit as slurm_submit

RENAMED_FLAGS = {"--gpus": "--nproc"}  # old spelling -> the contract's; the old one is refused


def build_parser() -> argparse.ArgumentParser:
    """`python -m pretrain.launch`'s parser: run flags, SLURM flags, one flag per config field."""
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.launch",
        description="BYOL pretraining (Grill et al. 2020), faithful to the paper's protocol.",
        epilog="Presets: " + ", ".join(sorted(PRESETS)),
        allow_abbrev=False,  # --gpus must not silently mean --gpus-per-node
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
        "existing run resumes (default: runs/<preset>; with --slurm, "
        "<profile's shared_dir>/runs/<preset>, and SLURM logs in <run dir>/slurm/)",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available"
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="local processes, torchrun-style: one per GPU, or gloo processes on CPU (default 1)",
    )
    parser.add_argument(
        "--status",
        metavar="RUN_DIR",
        default=None,
        help="show a run's step, last checkpoint, SLURM jobs (state, requeues) and log tail",
    )
    slurm_submit.add_slurm_arguments(parser)
    add_config_arguments(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; usage errors (unknown, renamed or SLURM-only flags) exit with status 2."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    for old in sorted({arg.split("=")[0] for arg in argv} & RENAMED_FLAGS.keys()):
        parser.error(f"{old} is now {RENAMED_FLAGS[old]}: local processes, one per GPU")
    args = parser.parse_args(argv)
    try:
        slurm_submit.check_slurm_flags(args)
    except ValueError as error:
        parser.error(str(error))
    return args


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


def train_on_slurm(config: PretrainConfig, run_dir: str, device: str):
    """One SLURM task (slurm.submit.Job has exported the torch.distributed environment).

    A requeued job calls this again and train() resumes from run_dir/checkpoints/last.pt.
    """
    from pretrain import dist
    from pretrain.train import train

    try:
        return train(config, run_dir, device)
    finally:
        dist.cleanup()


def submit_to_slurm(args: argparse.Namespace, config: PretrainConfig) -> None:
    """Submit this run as a SLURM job (profile + flags); print where it runs and logs."""
    profile = slurm_submit.profile_from_args(args)
    if args.nproc != 1:
        raise ConfigError(
            "--nproc is for local runs; with --slurm use --gpus-per-node/--tasks-per-node"
        )
    run_dir = Path(args.run_dir or Path(profile.shared_dir) / "runs" / args.preset).absolute()
    config_path = run_dir / "config.json"
    saved = json.loads(config_path.read_text()) if config_path.exists() else None
    saved = {**added_defaults(), **saved} if saved else None
    differences = identity_differences(saved, asdict(config), RUNTIME_FIELDS) if saved else []
    if differences:  # refuse here, not minutes later on a node
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({'; '.join(differences)}). "
            "Use another --run-dir, or the same settings to resume it."
        )
    device = args.device or ("cuda" if profile.gpus_per_node else "cpu")
    job = slurm_submit.submit(
        profile,
        train_on_slurm,
        config,
        str(run_dir),
        device,
        name=f"byol-{run_dir.name}",
        folder=run_dir / "slurm",
        after=slurm_submit.after_from_args(args),
    )
    status = f"  status:  python -m pretrain.launch --status {run_dir}"
    print(slurm_submit.describe(job, profile, [f"  run dir: {run_dir}", status]), flush=True)
    if args.wait:
        print(f"export:  {slurm_submit.wait(job)}")


def print_status(run_dir: str) -> None:
    """Step and last checkpoint of a run dir, then its SLURM jobs and the newest log's tail."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        sys.exit(f"error: {run_dir} holds no run (no config.json); pass the --run-dir of a run")
    import torch

    from pretrain.checkpoint import last_checkpoint_path

    print(f"run dir: {run_dir.resolve()}")
    last = last_checkpoint_path(run_dir)
    if last.exists():
        saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.stat().st_mtime))
        try:
            state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["state"]
            print(f"step:    {state['step']} (last checkpoint {last}, saved {saved})")
        except Exception as error:  # damaged: training falls back to previous.pt on resume
            print(f"step:    unknown: {last} (saved {saved}) cannot be read ({error})")
    else:
        print("step:    0 (no checkpoint yet)")
    log_path = run_dir / "log.jsonl"
    log_lines = runlog.read_log(log_path) if log_path.exists() else []
    epochs, steps = runlog.epoch_lines(log_lines), runlog.step_lines(log_lines)
    if epochs:
        print(f"last epoch: {json.dumps(epochs[-1])}")
    if steps:
        print(f"last step line: {json.dumps(steps[-1])}")
    exports = sorted((run_dir / "exports").glob("backbone-*.pt"))
    print(f"export:  {exports[-1] if exports else 'none yet'}")
    print("\n".join(slurm_status.describe_jobs(run_dir / "slurm")))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.status:
        return print_status(args.status)
    try:
        config = config_from_args(args)
        if args.slurm:  # submission imports no torch: login nodes stay quick
            return submit_to_slurm(args, config)
        run_dir = args.run_dir or os.path.join("runs", args.preset)
        export_path = run_local(config, run_dir, args.device, args.nproc)
    except slurm_submit.SlurmJobError as error:
        sys.exit(f"error: {error} The run dir is intact: rerun the same command to resume.")
    except (ByolBenchError, ValueError) as error:  # ValueError: build_run's size checks
        sys.exit(f"error: {error}")
    print(f"run dir: {os.path.abspath(run_dir)}")
    if export_path is not None:
        print(f"export:  {export_path}")


if __name__ == "__main__":
    main()
