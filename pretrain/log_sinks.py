"""Where log.jsonl's lines also go with `--log-to tensorboard,wandb`: the same numbers, nothing
computed twice (pretrain/step_log.py:record_line sends each line to log.jsonl and to these).

- tensorboard: event files in <run dir>/tensorboard (torch.utils.tensorboard), one scalar per
  numeric field, tagged `step/<field>` for step lines and `epoch/<field>` for epoch lines, at the
  line's training step;
- wandb: a Weights & Biases run in <run dir>/wandb, offline unless WANDB_MODE says otherwise
  (`wandb sync <run dir>/wandb/offline-run-*` uploads it later), the run's config attached; the
  same `step/...` and `epoch/...` keys at the line's step.

Neither package is a dependency of byol-bench: a missing one is a one-sentence error naming the
pip command (`pip install byol-bench[log]`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pretrain.config import LOG_TO, ConfigError, log_destinations


class TensorBoardSink:
    def __init__(self, run_dir: Path, config: dict) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ConfigError(_missing("tensorboard")) from error
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def write(self, line: dict) -> None:
        prefix = line.get("kind", "epoch")
        for key, value in numeric_fields(line).items():
            self.writer.add_scalar(f"{prefix}/{key}", value, global_step=line["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, config: dict) -> None:
        try:
            import wandb
        except ImportError as error:
            raise ConfigError(_missing("wandb")) from error
        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "byol-bench"),
            name=Path(run_dir).name,
            dir=str(run_dir),
            config=config,
            mode=os.environ.get("WANDB_MODE", "offline"),
            resume="allow",
            id=os.environ.get("WANDB_RUN_ID"),
        )

    def write(self, line: dict) -> None:
        prefix = line.get("kind", "epoch")
        values = {f"{prefix}/{key}": value for key, value in numeric_fields(line).items()}
        self.run.log(values, step=line["step"])

    def close(self) -> None:
        self.run.finish()


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink}


def numeric_fields(line: dict) -> dict[str, float]:
    """The line's numbers but its step (the x axis)."""
    return {
        key: float(value)
        for key, value in line.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }


def open_sinks(run_dir: Path, log_to: str, config: dict) -> list:
    """The sinks `log_to` names, opened for `run_dir` (rank 0 only)."""
    return [SINKS[name](run_dir, config) for name in log_destinations(log_to)]


def _missing(package: str) -> str:
    return (
        f"--log-to {package} needs the {package} package: pip install {package} "
        "(or pip install 'byol-bench[log]')"
    )


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    """--log-to of the trainer CLIs (fine-tuning, detection, segmentation, depth): the run's
    log.jsonl step lines also to TensorBoard / W&B, as pretraining's (pretrain/step_log.py)."""
    parser.add_argument(
        "--log-to",
        help="also send each run's log.jsonl step lines to tensorboard, wandb or both "
        "(comma-separated; W&B offline unless WANDB_MODE says otherwise; pip install "
        "'byol-bench[log]')",
    )


def check_log_to(log_to: str) -> str:
    """`log_to` if every name in it is a known destination, else a one-sentence ConfigError."""
    unknown = [name for name in log_destinations(log_to) if name not in LOG_TO]
    if unknown:
        raise ConfigError(f"--log-to takes {' and '.join(LOG_TO)}, not {', '.join(unknown)}")
    return log_to
