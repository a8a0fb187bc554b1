"""The requeue a time-limit signal triggers survives SLURM's SIGTERM to the job's processes.

A stand-in `scontrol` does what SLURM does to it on a busy node: the requeue succeeds, then the
job's processes, `scontrol` among them, get SIGTERM before it has exited.
"""

import os
import subprocess

import pytest
from submitit.slurm.slurm import SlurmJobEnvironment

from slurm.submit import Job, requeue_surviving_its_own_sigterm

SCONTROL_KILLED_BY_ITS_OWN_REQUEUE = """#!/bin/bash
echo "$@" > "$REQUEUED"
kill -TERM $$
echo survived >> "$REQUEUED"
"""


@pytest.fixture
def scontrol(tmp_path, monkeypatch):
    """A `scontrol` on PATH that records its arguments, then is SIGTERMed; the record's path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(SCONTROL_KILLED_BY_ITS_OWN_REQUEUE)
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("REQUEUED", str(tmp_path / "requeued"))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setattr(SlurmJobEnvironment, "_requeue", SlurmJobEnvironment._requeue)
    return tmp_path / "requeued"


def test_submitits_own_requeue_fails_when_scontrol_gets_the_sigterm(scontrol):
    with pytest.raises(subprocess.CalledProcessError, match="SIGTERM"):
        SlurmJobEnvironment()._requeue(3)
    assert scontrol.read_text() == "requeue 4242\n"


def test_requeue_surviving_its_own_sigterm_requeues_and_returns(scontrol):
    requeue_surviving_its_own_sigterm(SlurmJobEnvironment(), 3)
    assert scontrol.read_text() == "requeue 4242\nsurvived\n"


def test_a_running_job_requeues_through_the_surviving_call(scontrol, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_JOB_NUM_NODES": "1",
        "SUBMITIT_EXECUTOR": "slurm",
    }.items():
        monkeypatch.setenv(name, value)
    requeue = Job(lambda: SlurmJobEnvironment()._requeue(2))
    requeue()
    assert scontrol.read_text() == "requeue 4242\nsurvived\n"
