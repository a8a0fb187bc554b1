"""Reading a run's log.jsonl (written by pretrain/train.py and pretrain/step_log.py); no torch.

Two kinds of line: one per epoch (no "kind"; loss, lr, tau, online-probe train/test top-1, img/s)
and one every `log_every_steps` steps ("kind": "step"; the loss and img/s since the previous
line, lr, tau, images seen, and on some lines the online probe's top-1 on a fixed held-out set).
A resumed run logs the steps between its checkpoint and the interruption twice: each step's last
line counts.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: str | Path) -> list[dict]:
    """The lines of a log.jsonl in file order, each (kind, step)'s last line only."""
    lines = [json.loads(text) for text in Path(path).read_text().splitlines() if text.strip()]
    last = {(line.get("kind"), line.get("step")): index for index, line in enumerate(lines)}
    return [
        line
        for index, line in enumerate(lines)
        if last[(line.get("kind"), line.get("step"))] == index
    ]


def epoch_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line.get("kind") != "step"]


def step_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line.get("kind") == "step"]
