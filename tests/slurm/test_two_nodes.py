"""Across two nodes on the local cluster (`slurm/local_cluster/start.sh --nodes 2`, nodes n1 and
n2, profile `local2`: one task per node, gloo on CPU).

The node boundary must change nothing: the quick check on 2 nodes x 1 task ends bit-identical to
two processes on one node (`pretrain.launch --nproc 2`), same seed, config, global batch, per-rank
data and threads (OMP_NUM_THREADS=1, as local2's setup). The two long runs (uninterrupted, and
over a 1-minute time limit) are submitted first and run while the shorter tests use the cluster.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
import torch

from pretrain.checkpoint import load_checkpoint
from results.record import read_records
from slurm.cluster import master_port
from slurm.profile import load_profile
from slurm.status import job_state
from slurm.submit import submit
from tests.conftest import REPO_ROOT, run_cli
from tests.slurm import jobs
from tests.slurm.conftest import lift_time_limit_once_requeued_with_a_checkpoint
from tests.slurm.test_local_cluster import TINY, finish, report_figures

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_two_nodes")]

TWO_NODES = ["--slurm", "--profile", "local2", "--nodes", "2"]
QUICK = ["--preset", "tiny_cpu", "--dataset", "synthetic", "--max-steps", "20"]
# 100 steps of 2 x 8 images: outlasts the first time-limit signal, 25-55 s into a 1-minute job
LONG = [*TINY, "--epochs", "20"]
LONG_STEPS = 100


def submit_two_node_run(run_dir: Path, *args: str) -> str:
    """`python -m pretrain.launch ... --slurm --profile local2 --nodes 2`; the job id it printed."""
    result = run_cli("pretrain.launch", *args, "--run-dir", str(run_dir), *TWO_NODES, check=True)
    assert "2 node(s) x 1 task(s)" in result.stdout
    return re.search(r"submitted SLURM job (\d+)", result.stdout).group(1)


@pytest.fixture(scope="module", autouse=True)
def long_runs(slurm_two_nodes, tmp_path_factory):
    """The uninterrupted and the time-limited two-node runs, submitted together."""
    root = tmp_path_factory.mktemp("two-node-long")
    runs = {
        name: (root / name, submit_two_node_run(root / name, *LONG, *extra))
        for name, extra in [("reference", []), ("timeout", ["--time", "1"])]
    }
    lift_time_limit_once_requeued_with_a_checkpoint(runs["timeout"][1], runs["timeout"][0])
    return runs


def assert_same_training_state(state_a: dict, state_b: dict, steps: int) -> None:
    """Weights, probe and optimizer momentum equal bit for bit, both at ``steps``."""
    assert state_a["step"] == state_b["step"] == steps
    for key in ("model", "probe"):
        assert state_a[key].keys() == state_b[key].keys()
        for name, tensor in state_a[key].items():
            assert torch.equal(tensor, state_b[key][name]), f"{key}.{name} differs"
    for index, state in state_a["optimizer"]["state"].items():
        buffer_b = state_b["optimizer"]["state"][index]["momentum_buffer"]
        assert torch.equal(state["momentum_buffer"], buffer_b), f"momentum {index} differs"


def two_processes_here(run_dir: Path, *args: str) -> subprocess.Popen:
    """`pretrain.launch --nproc 2` on this machine, one thread per process like local2's tasks."""
    command = [sys.executable, "-m", "pretrain.launch", *args, "--nproc", "2", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*command, "--run-dir", str(run_dir)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_each_node_runs_one_rank_and_they_meet_at_the_first_node(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the job imports tests.slurm.jobs
    job = submit(load_profile("local2"), jobs.node_facts, name="node-facts", folder=tmp_path)
    facts = sorted(job.results(), key=lambda fact: fact["rank"])
    assert [(f["node"], f["node_id"], f["rank"], f["local_rank"]) for f in facts] == [
        ("n1", 0, 0, 0),
        ("n2", 1, 1, 0),
    ]
    port = master_port(job.job_id)  # below the ephemeral ports: see slurm/cluster.py
    assert {(f["world_size"], f["master"], f["port"], f["sum"]) for f in facts} == {
        (2, "n1", port, 3.0)
    }


def test_quick_check_on_two_nodes_is_bit_identical_to_two_processes_on_one_node(tmp_path):
    two_nodes, one_node = tmp_path / "slurm" / "quick", tmp_path / "local" / "quick"
    local = two_processes_here(one_node, *QUICK)  # runs while the job does
    result = run_cli("pretrain.launch", *QUICK, "--run-dir", str(two_nodes), *TWO_NODES, "--wait")
    local_output, _ = local.communicate(timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert local.returncode == 0, local_output[-3000:]
    job_id = re.search(r"submitted SLURM job (\d+)", result.stdout).group(1)
    logs = two_nodes / "slurm"
    assert f"task k logs to {logs}/{job_id}_<task>_log.err" in result.stdout
    (export,) = (two_nodes / "exports").glob("backbone-*.pt")
    assert f"export:  {export}" in result.stdout
    # both tasks ended; rank 1 (on n2) returns nothing, rank 0 the export
    job = submitit.SlurmJob(folder=logs, job_id=job_id, tasks=[0, 1])
    assert job.results() == [export, None] and job_state(job_id)["nodes"] == "n[1-2]"
    task_1 = (logs / f"{job_id}_1_log.out").read_text()
    assert "local_rank=0(1), node=1(2), global_rank=1(2)" in task_1
    # the per-epoch replica check ran on both ranks and passed
    replicas = "target networks identical on all 2 ranks"
    assert replicas in (logs / f"{job_id}_0_log.err").read_text()
    (record,) = read_records(tmp_path / "slurm" / "records")
    provenance = record.provenance
    assert (provenance.slurm_job_id, provenance.slurm_nodes, provenance.world_size) == (
        job_id,
        "n[1-2]",
        2,
    )
    status = run_cli("pretrain.launch", "--status", str(two_nodes), check=True).stdout
    assert f"job {job_id} " in status and "COMPLETED" in status and "nodes n[1-2]" in status
    assert f"task 1 on n2: {logs}/{job_id}_1_log.err" in status
    # the node boundary changes nothing: same weights, probe and momentum, so the same export
    state = load_checkpoint(two_nodes / "checkpoints" / "last.pt")
    assert_same_training_state(state, load_checkpoint(one_node / "checkpoints" / "last.pt"), 20)
    assert [path.name for path in (one_node / "exports").glob("backbone-*.pt")] == [export.name]


def test_more_nodes_than_the_cluster_has_are_refused_before_submission(tmp_path):
    run_dir = tmp_path / "three-nodes"
    cli = [*QUICK, "--run-dir", str(run_dir), "--slurm", "--profile", "local2", "--nodes", "3"]
    result = run_cli("pretrain.launch", *cli)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: --nodes 3: partition debug has 2 node(s)" in result.stderr
    assert "ask for at most 2" in result.stderr
    assert not run_dir.exists()  # refused before the log folder, so before sbatch


def test_one_process_cli_on_the_two_node_profile_runs_one_task_on_one_node(tmp_path):
    records = tmp_path / "records"
    cli = ["--ckpt", "random:resnet18", "--dataset", "synthetic", "--device", "cpu"]
    cli += ["--records", str(records), "--num-workers", "0", "--cache-dir", str(tmp_path / "c")]
    result = run_cli("evaluate.knn", *cli, "--slurm", "--profile", "local2", "--wait", check=True)
    assert "1 node(s) x 1 task(s)" in result.stdout and "  tasks:   " not in result.stdout
    (record,) = read_records(records)
    assert record.task.family == "knn" and record.status == "complete"
    assert record.provenance.slurm_nodes in ("n1", "n2")
    assert job_state(record.provenance.slurm_job_id)["nodes"] == record.provenance.slurm_nodes


def test_semisup_fine_tuning_cell_uses_both_nodes(tmp_path):
    """The grid's cells use every task of the profile (DDP across n1 and n2); the final job that
    picks the winner and writes the record runs as one task."""
    records, cell_dir = tmp_path / "records", tmp_path / "cells"
    cli = ["--ckpt", "random:resnet18", "--dataset", "synthetic", "--fraction", "10"]
    cli += ["--batch-size", "16", "--num-workers", "0", "--lrs", "0.1", "--epochs", "1"]
    cli += ["--device", "cpu", "--records", str(records), "--run-dir", str(cell_dir)]
    result = run_cli("evaluate.semisup", *cli, "--slurm", "--profile", "local2", "--wait")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 node(s) x 1 task(s)" in result.stdout.splitlines()[0]  # the final job
    cells = re.search(r"cells:   1 array tasks (\S+) \((.*) each\)", result.stdout)
    assert cells.group(2) == "2 node(s) x 1 task(s)"
    cell_id = cells.group(1)  # one cell: a plain job id, not an array's
    cell = job_state(cell_id)
    assert (cell["state"], cell["nodes"]) == ("COMPLETED", "n[1-2]")
    (record,) = read_records(records)
    assert record.task.family == "semisup" and record.status == "complete"
    assert record.provenance.slurm_nodes in ("n1", "n2")  # the final job: one task
    (candidate,) = record.selection["candidates"]
    # 51 labelled images in global batches of 16 (2 ranks x 8): the last 3 are fewer than 2 per
    # rank and dropped, so 3 steps (one process would keep them: 4 steps)
    assert candidate["steps"] == 3
    logs = Path(load_profile("local2").shared_dir) / "logs" / "evaluate-semisup"
    for task in (0, 1):  # each rank ran the cell (`--cell 0`) in its own task, one per node
        assert "semisup cell" in (logs / f"{cell_id}_{task}_log.out").read_text()


def test_time_limit_requeue_of_the_two_node_job_resumes_to_the_same_weights(long_runs):
    reference = finish(*long_runs["reference"])
    assert job_state(long_runs["reference"][1])["nodes"] == "n[1-2]"
    run_dir, job_id = long_runs["timeout"]
    timed_out = finish(run_dir, job_id)
    state = job_state(job_id)
    assert state["requeues"] >= 1 and state["nodes"] == "n[1-2]"
    log = (run_dir / "slurm" / f"{job_id}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log
    assert re.search(r"resumed at step [1-9]", log)  # from its last checkpoint, not from 0
    assert_same_training_state(timed_out, reference, LONG_STEPS)
    report_figures("time limit (USR2), two nodes", run_dir, job_id)
    status = run_cli("pretrain.launch", "--status", str(run_dir), check=True).stdout
    assert re.search(rf"job {job_id} .*COMPLETED, requeued [1-9]\d*x.*nodes n\[1-2\]", status)
