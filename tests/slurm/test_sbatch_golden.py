"""The sbatch scripts generated from slurm/profiles/example.toml match their golden files:
sbatch_golden.txt (a 2-node job) and sbatch_golden_pipeline_eval.txt (an evaluation job of
results.pipeline --slurm: one task, one GPU).

Regenerate after an intended change: BYOL_BENCH_REGOLD=1 pytest tests/slurm/test_sbatch_golden.py
"""

import os
import shlex
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

from results import pipeline
from slurm import submit as slurm_submit
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


PIPELINE_EVAL_GOLDEN = Path(__file__).with_name("sbatch_golden_pipeline_eval.txt")


def test_pipeline_evaluation_job_asks_for_one_task_and_at_most_one_gpu(monkeypatch):
    """results.pipeline --slurm on the 8-GPU example profile: pretraining gets the profile's 8
    GPUs; each evaluation job (a one-process command) one task and one GPU, as golden sbatch."""
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    scripts = {}

    def render(profile, fn, *args, name, folder=None, after=(), **kwargs):
        executor = executor_from_profile(profile, folder, name=name, after=list(after))
        scripts[name] = sbatch_script(executor).replace(shlex.quote(sys.executable), "PYTHON")
        paths = SimpleNamespace(stderr=f"{folder}/{name}.err")
        return SimpleNamespace(job_id=str(1000 + len(scripts)), paths=paths)

    monkeypatch.setattr(slurm_submit, "submit", render)
    argv = [
        "--preset",
        "byol_r50_in1k",
        "--data",
        "/imagenet",
        "--evals",
        "linear",
        "--run-dir",
        "/shared/byol-bench/runs/r50",
        "--slurm",
        "--profile",
        "example",
    ]
    config, args = pipeline.parse_config(argv)
    pipeline.submit_jobs(config, slurm_submit.profile_from_args(args))
    assert list(scripts) == ["byol-r50", "byol-r50-linear-export", "byol-r50-tables"]
    assert "#SBATCH --gpus-per-node=8" in scripts["byol-r50"]  # pretraining: the whole profile
    for name, after in (("byol-r50-linear-export", "1001"), ("byol-r50-tables", "1002")):
        lines = scripts[name].splitlines()
        assert "#SBATCH --nodes=1" in lines and "#SBATCH --ntasks-per-node=1" in lines
        assert (
            "#SBATCH --gpus-per-node=1" in lines
            and f"#SBATCH --dependency=afterok:{after}" in lines
        )
    script = scripts["byol-r50-linear-export"]
    if os.environ.get("BYOL_BENCH_REGOLD"):
        PIPELINE_EVAL_GOLDEN.write_text(script)
    assert script == PIPELINE_EVAL_GOLDEN.read_text()
