"""log.jsonl's lines: one per epoch (train.py:end_of_epoch) and one every `log_every_steps` steps
(`step_line`), so that a short run (the demo) still draws curves (results/report.py).

A step line holds the mean loss and the img/s of the steps since the previous line, the lr and
tau of the last step, the epoch as a fraction and the images seen so far (all ranks), and on every
PROBE_EVERY_LINES-th line the online probe's top-1 on a fixed held-out set: the first
HELDOUT_IMAGES images of the probe's test split, decoded once and kept in memory (read from the
data set, not a DataLoader, so the random-number streams, and with them exact resume, are
untouched). Lines are marked `"kind": "step"`; epoch lines have no kind. After a resume the
steps between the checkpoint and the interruption are logged again: the reader
(results/runlog.py) keeps the last line of each step.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HELDOUT_IMAGES = 256
PROBE_EVERY_LINES = 10


def record_line(run_dir: Path, line: dict, sinks: list = ()) -> None:
    """Append one JSON line to run_dir/log.jsonl and send it to the `--log-to` sinks
    (pretrain/log_sinks.py)."""
    with open(Path(run_dir) / "log.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\n")
    for sink in sinks:
        sink.write(line)


def heldout_batch(dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first HELDOUT_IMAGES (view, label) pairs of `dataset` as two tensors on `device`."""
    pairs = [dataset[index] for index in range(min(HELDOUT_IMAGES, len(dataset)))]
    images = torch.stack([image for image, _ in pairs]).to(device)
    return images, torch.tensor([int(label) for _, label in pairs], device=device)


@torch.no_grad()
def heldout_top1(encoder, probe, batch, chunk: int = 128) -> float:
    """Top-1 (%) of the probe on the encoder's eval-mode features of the held-out batch."""
    images, labels = batch
    was_training = encoder.training
    encoder.eval()
    correct = sum(
        int(
            (probe(encoder(images[i : i + chunk]).float()).argmax(1) == labels[i : i + chunk]).sum()
        )
        for i in range(0, len(labels), chunk)
    )
    encoder.train(was_training)
    return 100.0 * correct / max(len(labels), 1)


class TrainerLog:
    """log.jsonl step lines of an evaluation trainer (a fine-tuning cell, a detection,
    segmentation or depth run) in its run directory, every `every` steps and at the last, each
    `{"kind": "step", "step": ..., <numbers>}` as pretraining's; with `--log-to` the same lines
    go to TensorBoard / W&B (pretrain/log_sinks.py). `close()` ends the sinks' runs."""

    def __init__(self, run_dir: Path, every: int = 10, sinks: list | None = None) -> None:
        self.run_dir, self.every, self.sinks = Path(run_dir), max(int(every), 1), sinks or []

    def step(self, step: int, *, last: bool = False, **values) -> None:
        """Record the numbers of training step `step` (1-based: steps done) when due."""
        if step % self.every == 0 or last:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            record_line(self.run_dir, {"kind": "step", "step": step, **values}, self.sinks)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_trainer_log(run_dir: Path, log_to: str, config: dict, every: int = 10) -> TrainerLog:
    """A TrainerLog for `run_dir` with the `log_to` sinks opened (`config`: the run's settings,
    attached to a W&B run)."""
    from pretrain.log_sinks import open_sinks  # the sinks import their packages only when named

    return TrainerLog(run_dir, every, open_sinks(Path(run_dir), log_to, config) if log_to else [])
