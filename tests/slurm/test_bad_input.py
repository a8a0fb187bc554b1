"""`pretrain.launch --slurm` refuses bad input at submission, with a sentence that says what to do.

These need no cluster: each is refused before anything reaches sbatch.
"""

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT, run_cli

QUICK = ["--preset", "tiny_cpu", "--dataset", "synthetic", "--max-steps", "2"]


def launch(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "pretrain.launch", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_profile(tmp_path, **fields) -> str:
    path = tmp_path / "site.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in fields.items()))
    return str(path)


def test_slurm_without_profile(tmp_path):
    result = launch(*QUICK, "--run-dir", str(tmp_path / "run"), "--slurm")
    assert result.returncode == 1
    assert "--slurm needs --profile NAME" in result.stderr


def test_unknown_profile(tmp_path):
    result = launch(*QUICK, "--run-dir", str(tmp_path / "run"), "--slurm", "--profile", "nosite")
    assert result.returncode == 1
    assert "unknown SLURM profile 'nosite'" in result.stderr and "example.toml" in result.stderr
    assert not (tmp_path / "run").exists()


def test_profile_missing_required_fields(tmp_path):
    profile = write_profile(tmp_path, partition="debug")
    result = launch(*QUICK, "--slurm", "--profile", profile)
    assert result.returncode == 1
    assert "lacks the required fields time, shared_dir" in result.stderr


def test_unwritable_shared_dir(tmp_path):
    (tmp_path / "a-file").write_text("")  # a folder below a regular file cannot be created
    shared_dir = str(tmp_path / "a-file" / "shared")
    profile = write_profile(tmp_path, partition="debug", time=5, shared_dir=shared_dir)
    result = launch(*QUICK, "--slurm", "--profile", profile)
    assert result.returncode == 1
    assert f"cannot write to {shared_dir}/runs/tiny_cpu/slurm" in result.stderr
    assert "set shared_dir in the profile" in result.stderr


def test_sbatch_not_found(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = launch(
        *QUICK,
        "--run-dir",
        str(tmp_path / "run"),
        "--slurm",
        "--profile",
        "local",
        path=str(empty_bin),
    )
    assert result.returncode == 1
    assert "sbatch/srun not found on PATH" in result.stderr
    assert "slurm/local_cluster/start.sh" in result.stderr


def test_run_dir_with_another_config_is_refused_before_submission(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    from dataclasses import asdict, replace

    from pretrain.presets import tiny_cpu

    saved = replace(tiny_cpu(), dataset="synthetic", max_steps=2, base_lr=0.5)
    (run_dir / "config.json").write_text(json.dumps(asdict(saved)))
    result = launch(*QUICK, "--run-dir", str(run_dir), "--slurm", "--profile", "local")
    assert result.returncode == 1
    assert "base_lr: run has 0.5, now 0.2" in result.stderr
    assert not (run_dir / "slurm").exists()


def test_nproc_is_refused_with_slurm(tmp_path):
    result = launch(
        *QUICK, "--run-dir", str(tmp_path / "r"), "--slurm", "--profile", "local", "--nproc", "2"
    )
    assert result.returncode == 1
    assert "with --slurm use --gpus-per-node/--tasks-per-node" in result.stderr


def test_slurm_flags_without_slurm_are_refused(tmp_path):
    result = launch(*QUICK, "--run-dir", str(tmp_path / "r"), "--nodes", "2", "--time", "10")
    assert result.returncode == 2  # argparse's usage error
    assert "--nodes, --time only apply to SLURM jobs: add --slurm" in result.stderr
    assert not (tmp_path / "r").exists()


def test_evaluation_slurm_flags_without_slurm_are_refused(tmp_path):
    result = run_cli("evaluate.linear", "--ckpt", "random:resnet18", "--wait", "--fast")
    assert result.returncode != 0 and "--slurm" in result.stderr
    assert "Traceback" not in result.stderr


def test_old_gpus_flag_is_refused_not_read_as_gpus_per_node(tmp_path):
    """`--gpus 8` was --nproc; it must not become --gpus-per-node 8 by abbreviation either."""
    slurm = ["--slurm", "--profile", "local"]
    result = launch(*QUICK, "--run-dir", str(tmp_path / "r"), *slurm, "--gpus", "8")
    assert result.returncode == 2  # a usage error: nothing is submitted
    assert "--gpus is now --nproc" in result.stderr
    assert not (tmp_path / "r").exists()


def test_one_process_clis_do_not_abbreviate_slurm_flags():
    """The SLURM pre-parser of the one-process CLIs leaves `--gpus 8` to the CLI's own parser."""
    from slurm.submit import submit_cli_if_requested

    assert submit_cli_if_requested("evaluate.linear", ["--ckpt", "x.pt", "--gpus", "8"]) is False


def test_more_nodes_than_the_partition_has_are_refused_before_submission(tmp_path):
    """SLURM would accept the job and leave it pending for ever (PartitionNodeLimit)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answer = "PartitionName=debug MaxNodes=UNLIMITED Nodes=n[1-2] TotalCPUs=16 TotalNodes=2"
    scripts = {"scontrol": f"echo '{answer}'", "sbatch": "touch $0.ran", "srun": ""}
    for name, script in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / name).chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    run_dir = tmp_path / "run"
    slurm = ["--slurm", "--profile", "local2", "--nodes", "3"]
    result = launch(*QUICK, "--run-dir", str(run_dir), *slurm, path=path)
    assert result.returncode == 1
    assert "error: --nodes 3: partition debug has 2 node(s)" in result.stderr
    assert "could never start; ask for at most 2" in result.stderr
    assert not run_dir.exists() and not (bin_dir / "sbatch.ran").exists()
    assert launch(*QUICK, "--run-dir", str(run_dir), *slurm[:-1], "2", path=path).returncode != 0
    assert (bin_dir / "sbatch.ran").exists()  # 2 nodes pass the check and reach sbatch
