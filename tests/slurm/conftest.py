"""The local SLURM cluster for tests marked `slurm` (slurm/local_cluster/start.sh).

As root the fixtures start the cluster in the layout their tests need: `slurm_cluster` one node
(profile local), `slurm_two_nodes` two nodes n1, n2 (profile local2). start.sh is idempotent
(~0.5 s when that layout is up; a switch restarts slurmctld and the slurmds in ~3 s, after
running jobs end). CI's .ci/run starts the one-node cluster before `make test`;
tests/slurm/test_two_nodes.py runs last in tests/slurm and switches to two nodes, and the next
one-node fixture switches back.
Without root, and with no cluster of that layout already up, the SLURM tests are skipped, and
the terminal summary says so in capitals.
"""

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pretrain.checkpoint import last_checkpoint_path
from tests.conftest import REPO_ROOT

START_SH = REPO_ROOT / "slurm" / "local_cluster" / "start.sh"
NOT_ROOT = "not root: the local SLURM cluster (slurm/local_cluster/start.sh) needs root"
_skipped_not_root: list[str] = []
requeue_figures: list[str] = []  # requeue and start.sh figures, printed in the summary


def _cluster_up(nodes: int = 1) -> bool:
    """A controller answers and (for several nodes) the partition has at least ``nodes`` nodes."""
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
        listed = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "UP" in ping.stdout and len(set(listed.stdout.split())) >= nodes


def start_cluster(*args: str) -> subprocess.CompletedProcess:
    """`start.sh ARGS` as root (pytest.fail with its output if it fails)."""
    command = ["bash", str(START_SH), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        pytest.fail(f"{START_SH} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def _start_or_skip(nodes: int) -> None:
    if os.geteuid() != 0:
        if _cluster_up(nodes):
            return
        _skipped_not_root.append("x")
        pytest.skip(NOT_ROOT)
    start_cluster(*(["--nodes", str(nodes)] if nodes > 1 else []))


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node local cluster (started here as root); the SLURM tests skip only without root."""
    _start_or_skip(1)


@pytest.fixture(scope="session")
def slurm_two_nodes():
    """The two-node local cluster, nodes n1 and n2 (`start.sh --nodes 2`, as root)."""
    _start_or_skip(2)


@pytest.fixture
def as_root():
    """Tests that start and stop the cluster themselves need root; skipped (and counted) without."""
    if os.geteuid() != 0:
        _skipped_not_root.append("x")
        pytest.skip(NOT_ROOT)


def lift_time_limit_once_requeued_with_a_checkpoint(job_id: str, run_dir: Path) -> None:
    """In the background: once the 1-minute limit has requeued the job while its run dir held a
    checkpoint (so the next attempt resumes from a step > 0), give it 30 minutes.

    One such requeue is what the test needs; each further one only costs ~30 s (SIGKILL KillWait
    after the requeue, cred_expire before the restart, start-up). On a loaded machine start-up
    can outlast the signal (25-55 s in) before step 1 is saved; that requeue restarts from step 0
    and the limit stays, so the next attempt is timed out again. Without root the update fails
    and the job is simply requeued again.
    """
    checkpoint, seen = last_checkpoint_path(run_dir), 0

    def watch() -> None:
        nonlocal seen
        for _ in range(3600):
            out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True)
            text = out.stdout.decode(errors="replace")
            restarts = int((re.search(r"Restarts=(\d+)", text) or [0, 0])[1])
            if restarts > seen:
                seen = restarts
                if checkpoint.is_file():  # written by the attempt the limit just ended
                    update = ["scontrol", "update", f"JobId={job_id}", "TimeLimit=30"]
                    subprocess.run(update, capture_output=True)
                    return
            if out.returncode or re.search(r"JobState=(COMPLETED|FAILED|CANCELLED)", text):
                return
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def pytest_terminal_summary(terminalreporter):
    if requeue_figures:
        terminalreporter.section("SLURM figures (local cluster: requeues, start.sh)")
        for line in requeue_figures:
            terminalreporter.write_line(line)
    if _skipped_not_root:
        skipped = [
            report
            for report in terminalreporter.stats.get("skipped", [])
            if NOT_ROOT in str(report.longrepr)
        ]
        terminalreporter.section("SLURM TESTS NOT RUN", sep="!", red=True, bold=True)
        terminalreporter.write_line(
            f"{len(skipped)} SLURM TESTS WERE SKIPPED: NOT ROOT. The local cluster needs root; "
            "run `sudo slurm/local_cluster/start.sh` (then the tests use it) or run the tests as "
            "root. Submission, requeue and DDP under SLURM are UNTESTED in this run.",
            red=True,
            bold=True,
        )
