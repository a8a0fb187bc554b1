"""A run's identity (a dict of plain values) and how two of them differ; imports no torch.

pretrain/rundir.py:claim refuses a run directory whose config.json holds another identity, and
pretrain/launch.py refuses it before a SLURM submission (login nodes do not import torch).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable


def as_plain(identity: dict) -> dict:
    """The identity as stored (JSON types: tuples become lists)."""
    return json.loads(json.dumps(identity))


def identity_differences(saved: dict, current: dict, ignore: Iterable[str] = ()) -> list[str]:
    """`name: run has A, now B` for every field (not in `ignore`) where the two differ."""
    current = as_plain(current)
    names = (set(saved) | set(current)) - set(ignore)
    return sorted(
        f"{name}: run has {_short(saved.get(name))}, now {_short(current.get(name))}"
        for name in names
        if saved.get(name) != current.get(name)
    )


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def settings_identity(settings, added_fields: Iterable[str]) -> dict:
    """A settings dataclass as it enters a run's identity: every field, except those of
    `added_fields` (fields added after run directories were made with these settings) that hold
    their defaults, so that such a run directory still resumes."""
    added = set(added_fields)
    defaults = {f.name: f.default for f in dataclasses.fields(settings) if f.name in added}
    return {
        name: value
        for name, value in dataclasses.asdict(settings).items()
        if name not in defaults or value != defaults[name]
    }
