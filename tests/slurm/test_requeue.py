"""The requeue a time-limit signal triggers survives SLURM's SIGTERM to the job's processes.

A stand-in `scontrol` does what SLURM does to it on a busy node: the requeue succeeds, then the
job's processes, `scontrol` among them, get SIGTERM before it has exited.
"""

import os
import subprocess

import pytest
from submitit.slurm.slurm import SlurmJobEnvironment

from slurm.cluster import master_port
from slurm.submit import Job, requeue_surviving_its_own_sigterm

ONE_TASK = {  # what SLURM sets in the only task of a one-node job
    "SLURM_NTASKS": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_JOB_NODELIST": "localhost",
    "SLURM_JOB_NUM_NODES": "1",
    "SUBMITIT_EXECUTOR": "slurm",
}
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
    for name, value in ONE_TASK.items():
        monkeypatch.setenv(name, value)
    requeue = Job(lambda: SlurmJobEnvironment()._requeue(2))
    requeue()
    assert scontrol.read_text() == "requeue 4242\nsurvived\n"


def test_tasks_meet_at_a_port_from_the_job_id_below_the_ephemeral_ports(monkeypatch):
    """submitit's 20000-60000 overlaps the ephemeral ports gloo's sockets take (EADDRINUSE, or a
    rank connecting to another job's socket); every task derives the same port from the job id."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    ports = {job_id: master_port(job_id) for job_id in ("4242", "4243", "999999")}
    assert ports == {"4242": 24242, "4243": 24243, "999999": 20000 + 999999 % 12768}
    assert all(20000 <= port < min(low, 32768) for port in ports.values())
    monkeypatch.setattr(SlurmJobEnvironment, "_requeue", SlurmJobEnvironment._requeue)
    exported = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")
    for name in exported:  # recorded, so the values the job exports are undone afterwards
        monkeypatch.setenv(name, "")
    for name, value in {"SLURM_JOB_ID": "4242", "MASTER_PORT": "50000", **ONE_TASK}.items():
        monkeypatch.setenv(name, value)
    assert Job(lambda: os.environ["MASTER_PORT"])() == "24242"  # an inherited port is replaced
