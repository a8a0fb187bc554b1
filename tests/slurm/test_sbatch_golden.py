"""The sbatch script generated from slurm/profiles/example.toml matches sbatch_golden.txt.

Regenerate after an intended change: BYOL_BENCH_REGOLD=1 pytest tests/slurm/test_sbatch_golden.py
"""

import os
import shlex
import shutil
import sys
from pathlib import Path

from slurm.profile import load_profile
from slurm.submit import executor_from_profile, sbatch_script

GOLDEN = Path(__file__).with_name("sbatch_golden.txt")


def test_sbatch_script_matches_golden_file(monkeypatch):
    # Render the script without a cluster: pretend sbatch and srun are installed.
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    profile = load_profile("example", nodes=2)
    executor = executor_from_profile(
        profile, "/shared/byol-bench/runs/r50/slurm", name="byol-r50", after=["1234", "1235"]
    )
    script = sbatch_script(executor).replace(shlex.quote(sys.executable), "PYTHON")
    if os.environ.get("BYOL_BENCH_REGOLD"):
        GOLDEN.write_text(script)
    assert script == GOLDEN.read_text()
