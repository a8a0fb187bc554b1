"""Series of runs of one CLI: checkpoints (`--ckpt` with several files, a glob or a run
directory) and seeds (`--seeds A B ...`, per_seed_argvs: one run and record per seed, whose
mean ± std the tables show).

    python -m evaluate.knn --ckpt RUNS/r18 --dataset cifar10            (every keeper of a run)
    python -m evaluate.knn --ckpt 'RUNS/r18/checkpoints/epoch_*.pt' --dataset cifar10
    python -m evaluate.linear --fast --ckpt A.pt B.pt random:resnet18 --dataset cifar10

Each `--ckpt` value expands, in the order given, to checkpoint specs:
  - a run directory (one with checkpoints/ or exports/): its keepers checkpoints/epoch_XXXX.pt in
    epoch order, then its newest export exports/backbone-*.pt unless a keeper holds the same
    training step (the export of a finished run is its last online encoder, so a keeper at the
    final epoch already has those weights: one record per weights, not two);
  - a glob (a value with * ? [ that names no file): the matching files, sorted; no match is refused;
  - anything else (a file, random:<arch>, a path that does not exist) as it is: load_encoder
    judges it.
Paths named twice are evaluated once. The CLIs that accept a series (evaluate.knn and
evaluate.linear --fast) run one evaluation per checkpoint, in sequence here and as a SLURM job
array with --slurm (slurm/submit.py:submit_cli_if_requested, one one-process task each); each
writes its own record, whose checkpoint block carries the run's label and pretrain_epochs, so
results/report.py:accuracy_curves draws accuracy against pretraining epochs.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from results.errors import ByolBenchError

GLOB_CHARACTERS = re.compile(r"[*?\[]")
KEEPER = re.compile(r"epoch_(\d+)\.pt")


class SeriesError(ByolBenchError, ValueError):
    """A --ckpt value that names no checkpoint; the message says what to pass."""


def expand_checkpoints(specs: Sequence[str]) -> list[str]:
    """The checkpoint specs of the --ckpt values `specs` (see the module docstring)."""
    expanded: list[str] = []
    for spec in specs:
        for item in _expand_one(spec):
            if item not in expanded:
                expanded.append(item)
    return expanded


def _expand_one(spec: str) -> list[str]:
    path = Path(spec)
    if path.is_dir():
        return [str(item) for item in run_dir_checkpoints(path)]
    if GLOB_CHARACTERS.search(spec) and not path.exists():
        matches = sorted(glob.glob(spec))
        if not matches:
            raise SeriesError(f"--ckpt {spec!r} matches no file; check the pattern")
        return matches
    return [spec]


def run_dir_checkpoints(run_dir: Path) -> list[Path]:
    """A run directory's keepers in epoch order, then its newest export unless a keeper holds the
    same step (pretrain/train.py writes both from the same online encoder)."""
    epoch_of = {
        path: int(match.group(1))
        for path in (run_dir / "checkpoints").glob("epoch_*.pt")
        if (match := KEEPER.fullmatch(path.name))
    }
    keepers = sorted(epoch_of, key=epoch_of.get)
    exports = sorted(  # newest last: most pretraining epochs, then the latest written
        (run_dir / "exports").glob("backbone-*.pt"),
        key=lambda path: (_export_epochs(path) or -1.0, path.stat().st_mtime),
    )
    if not keepers and not exports:
        raise SeriesError(
            f"--ckpt {run_dir} is a directory without checkpoints/epoch_*.pt or "
            "exports/backbone-*.pt; pass a run directory (pretrain with --keep-every-epochs N to "
            "keep a checkpoint every N epochs), checkpoint files or a glob"
        )
    series = list(keepers)
    if exports:
        epochs = _export_epochs(exports[-1])
        if epochs is None or epochs not in epoch_of.values():
            series.append(exports[-1])
    return series


def _export_epochs(path: Path) -> float | None:
    """pretrain_epochs from the export's .json (None when it is missing or unreadable)."""
    try:
        return json.loads(path.with_suffix(".json").read_text()).get("pretrain_epochs")
    except (OSError, ValueError):
        return None


def per_checkpoint_argvs(argv: Sequence[str]) -> list[list[str]]:
    """`argv` once per checkpoint of its --ckpt values: the other flags unchanged, then
    `--ckpt <one>`. Without --ckpt, `argv` itself (the CLI's parser names the missing flag)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(
        "--ckpt",
        nargs="+",
        action="extend",
        help="checkpoints: files, globs, run directories or random:<arch>; one run each",
    )
    args, rest = parser.parse_known_args(list(argv))
    if not args.ckpt:
        return [list(argv)]
    return [[*rest, "--ckpt", spec] for spec in expand_checkpoints(args.ckpt)]


def run_series(
    argvs: Sequence[list[str]], run_one: Callable[[list[str]], None], what: str = "checkpoint"
) -> None:
    """run_one(argv) for each argv of a series (`what`: checkpoint or seed; each argv ends with
    its checkpoint or seed), in order. One: as it is. Several: one that fails (its record says
    so) does not stop the others; the command then exits with status 1 naming the failed ones.
    A usage error (status 2) stops at once."""
    if len(argvs) == 1:
        run_one(list(argvs[0]))
        return
    failed = []
    for number, argv in enumerate(argvs, 1):
        print(f"{what} {number}/{len(argvs)}: {argv[-1]}", flush=True)
        try:
            run_one(list(argv))
        except SystemExit as exit:
            if exit.code == 2:
                raise
            if exit.code not in (0, None):
                print(exit.code if isinstance(exit.code, str) else "", file=sys.stderr, flush=True)
                failed.append(argv[-1])
    if failed:
        sys.exit(f"error: {len(failed)} of {len(argvs)} {what}s failed: {', '.join(failed)}")


SEEDS_HELP = (
    "run the whole protocol once per seed, one record each (held-out draws, subsets, sample "
    "order, head init); the tables show their mean ± std and count (replaces --seed)"
)


def per_seed_argvs(argv: list[str]) -> list[list[str]]:
    """`--seeds A B ...` as one argument list per seed (`--seed A`, ...); without it, [argv].
    A seed named twice runs once."""
    if "--seeds" not in argv:
        return [list(argv)]
    start = argv.index("--seeds")
    values = []
    for item in argv[start + 1 :]:
        if item.startswith("--"):
            break
        values.append(item)
    if not values or not all(value.lstrip("-").isdigit() for value in values):
        raise SeriesError(f"--seeds takes one or more integers, not {values or 'nothing'}")
    rest = argv[:start] + argv[start + 1 + len(values) :]
    if "--seed" in rest:
        raise SeriesError("--seed and --seeds do not go together: pass the seeds to --seeds")
    return [[*rest, "--seed", value] for value in dict.fromkeys(values)]
