"""End to end on the local SLURM cluster (slurm/local_cluster/start.sh, profile `local`).

The three long runs (uninterrupted, `scontrol requeue`d, and over a 1-minute time limit) are
submitted together first and run while the shorter tests use the cluster; all three must end with
bit-identical weights.
"""

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import submitit
import torch

from pretrain.checkpoint import load_checkpoint
from results.record import read_records
from slurm.profile import load_profile
from slurm.status import job_state
from slurm.submit import SlurmJobError, submit, submit_array, wait
from tests.conftest import REPO_ROOT, run_cli
from tests.slurm import jobs
from tests.slurm.conftest import lift_time_limit_once_requeued_with_a_checkpoint, requeue_figures

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# tiny_cpu on 80 synthetic images: 5 steps per epoch; a checkpoint after every step
TINY = ["--preset", "tiny_cpu", "--train-subset-per-class", "8", "--ckpt-every-min", "0"]
# 100 steps (about 2 minutes on one core; 50 steps ran out before the signal on a quiet machine):
# outlasts the first time-limit signal, which comes 25-55 s into a 1-minute job
# (slurm/profiles/local.toml)
LONG = [*TINY, "--epochs", "20"]
TOTAL_STEPS = 100
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


def submit_cli(run_dir: Path, *args: str) -> str:
    """`python -m pretrain.launch ... --slurm --profile local`; returns the job id it printed."""
    cli = [*args, "--run-dir", str(run_dir), "--slurm", "--profile", "local"]
    result = run_cli("pretrain.launch", *cli, check=True)
    return re.search(r"submitted SLURM job (\d+)", result.stdout).group(1)


def list_exports_after(pretrain_id: str, run_dir: Path, name: str, folder: Path) -> submitit.Job:
    """jobs.list_exports(run_dir) on the local profile, submitted to start after `pretrain_id`."""
    profile, after = load_profile("local"), [pretrain_id]
    return submit(profile, jobs.list_exports, str(run_dir), name=name, folder=folder, after=after)


def slurm_job(run_dir: Path, job_id: str) -> submitit.Job:
    return submitit.SlurmJob(folder=run_dir / "slurm", job_id=job_id)


def checkpoint_step(run_dir: Path) -> int:
    """The step in last.pt (0 if none yet), read without loading the tensors."""
    try:
        blob = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, mmap=True)
        return blob["state"]["step"]
    except Exception:  # not written yet, or being replaced
        return 0


def wait_until(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module", autouse=True)
def long_runs(tmp_path_factory):
    """Submit the reference, requeue and time-out runs at once; requeue the second at step >= 3;
    the time-out run's limit is lifted once it has been requeued with a checkpoint to resume."""
    root = tmp_path_factory.mktemp("long")
    runs = {}
    for name, extra in [("reference", []), ("requeue", []), ("timeout", ["--time", "1"])]:
        run_dir = root / name
        runs[name] = (run_dir, submit_cli(run_dir, *LONG, *extra))
    lift_time_limit_once_requeued_with_a_checkpoint(runs["timeout"][1], runs["timeout"][0])
    run_dir, job_id = runs["requeue"]
    wait_until(lambda: checkpoint_step(run_dir) >= 3, 300, "step 3 of the run to requeue")
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    return runs


def assert_bit_identical(state_a: dict, state_b: dict) -> None:
    assert state_a["step"] == state_b["step"] == TOTAL_STEPS
    for key in ("model", "probe"):
        for name, tensor in state_a[key].items():
            assert torch.equal(tensor, state_b[key][name]), f"{key}.{name} differs"
    for index, state in state_a["optimizer"]["state"].items():
        buffer_b = state_b["optimizer"]["state"][index]["momentum_buffer"]
        assert torch.equal(state["momentum_buffer"], buffer_b), f"momentum {index} differs"


def test_quick_check_submitted_to_local_profile_leaves_export(tmp_path):
    run_dir = tmp_path / "quick"
    args = ["--preset", "tiny_cpu", "--dataset", "synthetic", "--max-steps", "20"]
    result = run_cli(
        "pretrain.launch",
        *args,
        "--run-dir",
        str(run_dir),
        "--slurm",
        "--profile",
        "local",
        "--wait",
        check=True,
    )
    job_id = re.search(r"submitted SLURM job (\d+)", result.stdout).group(1)
    for line in (f"stderr:  {run_dir}/slurm/{job_id}_0_log.err", "follow:  tail -f", "scancel"):
        assert line in result.stdout
    (export,) = (run_dir / "exports").glob("backbone-*.pt")
    assert f"export:  {export}" in result.stdout
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 20
    (record,) = read_records(tmp_path / "records")  # the pretrain record, beside the run dir
    assert record.kind == "pretrain" and export.name.startswith(
        f"backbone-{record.checkpoint.weights_sha256[:8]}"
    )
    assert record.provenance.slurm_job_id == job_id
    status = run_cli("pretrain.launch", "--status", str(run_dir), check=True).stdout
    assert "step:    20" in status and f"job {job_id} " in status and "COMPLETED" in status


def test_two_tasks_train_with_ddp_and_end_with_the_same_weights(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the job imports tests.slurm.jobs
    run_dir = tmp_path / "ddp"
    profile = load_profile("local", tasks_per_node=2)
    job = submit(
        profile,
        jobs.train_and_digest,
        tiny_config(epochs=1),
        str(run_dir),
        name="ddp",
        folder=run_dir / "slurm",
    )
    results = sorted(job.results(), key=lambda result: result["rank"])
    assert [(r["rank"], r["world_size"], r["step"]) for r in results] == [(0, 2, 5), (1, 2, 5)]
    assert {r["ddp"] for r in results} == {"DistributedDataParallel"}
    assert results[0]["master"] == results[1]["master"]
    # BN running statistics are per rank on CPU (DEVIATION cpu-bn); every parameter is shared
    assert results[0]["parameters_sha256"] == results[1]["parameters_sha256"]
    assert Path(results[0]["export"]).exists() and results[1]["export"] is None


def test_job_array_runs_one_task_per_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    arguments = [(3,), (5,), (7,)]
    array = submit_array(load_profile("local"), jobs.array_task, arguments, "sweep", tmp_path)
    results = [job.result() for job in array]
    assert [result["value"] for result in results] == [3, 5, 7]
    assert [result["array_task_id"] for result in results] == ["0", "1", "2"]
    assert len({result["array_job_id"] for result in results}) == 1
    assert sorted(path.name for path in tmp_path.glob("job-*.json")) == sorted(
        f"job-{job.job_id}.json" for job in array
    )


def test_dependent_job_starts_only_after_pretraining_succeeds(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    run_dir = tmp_path / "pretrain"
    pretrain_id = submit_cli(run_dir, *TINY, "--max-steps", "3")
    evaluation = list_exports_after(pretrain_id, run_dir, "after-ok", tmp_path / "evaluation")
    result = evaluation.result()
    assert len(result["exports"]) == 1  # it saw the export the pretraining job wrote
    pretrain, dependent = job_state(pretrain_id), job_state(evaluation.job_id)
    assert pretrain["state"] == "COMPLETED"
    assert dependent["start"] >= pretrain["end"]  # ISO times from sacct


def test_crashing_job_names_its_log_keeps_the_run_dir_and_never_starts_dependents(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    run_dir = tmp_path / "crash"
    command = [sys.executable, "-m", "pretrain.launch", *TINY, "--epochs", "3"]
    command += ["--base-lr", "1e30", "--run-dir", str(run_dir), "--slurm", "--profile", "local"]
    process = subprocess.Popen(
        [*command, "--wait"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    first_line = process.stdout.readline()
    pretrain_id = re.search(r"submitted SLURM job (\d+)", first_line).group(1)
    dependent = list_exports_after(pretrain_id, run_dir, "after-crash", tmp_path / "evaluation")
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1
    assert f"SLURM job {pretrain_id} failed: pretrain.rundir.NonFiniteLossError: " in stderr
    assert "the BYOL loss became non-finite at step 2" in stderr
    assert f"Full log: {run_dir}/slurm/{pretrain_id}_0_log.err" in stderr
    assert "The run dir is intact" in stderr
    # the run dir keeps its config and the last good checkpoint (step 2 is the first bad one)
    assert (run_dir / "config.json").exists()
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 2
    # the dependent job is cancelled (kill_invalid_depend) without ever running
    state = wait_until(
        lambda: (s := job_state(dependent.job_id))["state"] in TERMINAL and s, 120, "dependent"
    )
    assert state["state"] == "CANCELLED" and state["start"] in ("None", "Unknown", "")
    with pytest.raises(SlurmJobError, match=r"ended without a result \(state CANCELLED"):
        wait(dependent)
    status = run_cli("pretrain.launch", "--status", str(run_dir), check=True).stdout
    assert f"job {pretrain_id} " in status and "FAILED" in status and "non-finite" in status


def test_scontrol_requeue_resumes_to_the_same_weights(long_runs):
    reference = finish(*long_runs["reference"])
    run_dir, job_id = long_runs["requeue"]
    requeued = finish(run_dir, job_id)
    assert job_state(job_id)["requeues"] >= 1
    assert_bit_identical(requeued, reference)
    report_figures("scontrol requeue", run_dir, job_id)
    status = run_cli("pretrain.launch", "--status", str(run_dir), check=True).stdout
    assert re.search(rf"job {job_id} .*COMPLETED, requeued [1-9]\d*x", status), status


def test_time_limit_requeue_resumes_to_the_same_weights(long_runs):
    reference = finish(*long_runs["reference"])
    run_dir, job_id = long_runs["timeout"]
    timed_out = finish(run_dir, job_id)
    assert job_state(job_id)["requeues"] >= 1
    log = (run_dir / "slurm" / f"{job_id}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log
    assert_bit_identical(timed_out, reference)
    report_figures("time limit (USR2)", run_dir, job_id)


def finish(run_dir: Path, job_id: str) -> dict:
    """Wait for a long run; its final training state."""
    export = slurm_job(run_dir, job_id).result()
    assert Path(export).exists()
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


TQDM_STEP = re.compile(r"epoch (\d+)/\d+:.*\|\s*(\d+)/(\d+) \[")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \[rank 0\]")


def report_figures(kind: str, run_dir: Path, job_id: str) -> None:
    """Per requeue: completed steps lost, and seconds from the first signal to resumed training."""
    text = (run_dir / "slurm" / f"{job_id}_0_log.err").read_text()
    last_step, signal_at, figures = 0, None, []
    for piece in re.split(r"[\r\n]", text):
        if match := TQDM_STEP.search(piece):
            epoch, step_in_epoch, per_epoch = map(int, match.groups())
            last_step = (epoch - 1) * per_epoch + step_in_epoch
        if not (stamp := STAMP.match(piece)):
            continue
        when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
        if signal_at is None and re.search(r"Caught signal SIGUSR2|signal SIGTERM", piece):
            signal_at = when  # USR2 (time limit) or SIGTERM (scontrol requeue; SIGKILL follows)
        elif (resumed := re.search(r"resumed at step (\d+)", piece)) and signal_at:
            # no step of the new run has been shown yet: last_step is the old run's last one
            lost = last_step - int(resumed.group(1))
            seconds = (when - signal_at).total_seconds()
            figures.append(f"{lost} steps lost, {seconds:.1f} s from signal to resumed training")
            signal_at = None
    requeue_figures.append(f"{kind}: {len(figures)} requeue(s): " + "; ".join(figures))


def test_evaluation_cli_submitted_with_slurm_writes_its_record(tmp_path):
    """The evaluation CLIs take the same --slurm flags: the same command runs as a job."""
    records = tmp_path / "records"
    result = run_cli(
        "evaluate.knn",
        "--ckpt",
        "random:resnet18",
        "--dataset",
        "synthetic",
        "--device",
        "cpu",
        "--records",
        str(records),
        "--num-workers",
        "0",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--slurm",
        "--profile",
        "local",
        "--wait",
        check=True,
    )
    assert "submitted SLURM job" in result.stdout
    (record,) = read_records(records)
    assert record.task.family == "knn" and record.status == "complete"
    assert record.provenance.slurm_job_id is not None
