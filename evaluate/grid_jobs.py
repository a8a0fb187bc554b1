"""A fine-tuning grid on SLURM: one array task per cell (`<command> --cell K`), then the command
itself as a job that starts when every cell succeeded (afterok): it reads the cells' results,
picks the winner and writes the record. Used by evaluate/semisup.py (the 1% / 10% grids) and
transfer/classification/finetune.py (the transfer grid, whose final job also retrains).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from slurm import submit as slurm_submit


def submit_cells_then_final(
    args: argparse.Namespace,
    command: Sequence[str],
    num_cells: int,
    name: str,
    *,
    final_trains: bool = False,
):
    """Submit `num_cells` array tasks of `command --cell K` and the final `command` after them;
    returns the final job (waited for with `--wait`). `args`: the parsed --slurm flags
    (slurm_submit.add_slurm_arguments). The final job runs as one task with at most one GPU
    (slurm_submit.single_task), unless `final_trains` (the transfer grid retrains the winner):
    then it gets the profile's full resources, as each cell does."""
    profile = slurm_submit.profile_from_args(args)
    command = list(command)
    folder = Path(profile.shared_dir) / "logs" / name
    array = slurm_submit.submit_array(
        profile,
        slurm_submit.run_command,
        [([*command, "--cell", str(index)],) for index in range(num_cells)],
        name=f"{name}-cell",
        folder=folder,
        after=slurm_submit.after_from_args(args),
    )
    final_profile = profile if final_trains else slurm_submit.single_task(profile)
    final = slurm_submit.submit(
        final_profile,
        slurm_submit.run_command,
        command,
        name=name,
        folder=folder,
        after=[job.job_id for job in array],
    )
    each = f"{profile.nodes} node(s) x {profile.tasks} task(s) each"
    ids = ", ".join(job.job_id for job in array)
    lines = [f"  cells:   {num_cells} array tasks {ids} ({each})"]
    print(slurm_submit.describe(final, final_profile, [*lines, f"  command: {' '.join(command)}"]))
    if args.wait:
        slurm_submit.wait(final)
    return final
