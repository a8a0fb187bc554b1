"""The local SLURM cluster for tests marked `slurm` (slurm/local_cluster/start.sh).

As root the fixture starts the cluster itself (start.sh is idempotent: ~0.5 s when it is up; CI's
.ci/run starts it before `make test`). Without root, and with no cluster already up, the SLURM tests
are skipped, and the terminal summary says so in capitals.
"""

import os
import subprocess

import pytest

from tests.conftest import REPO_ROOT

START_SH = REPO_ROOT / "slurm" / "local_cluster" / "start.sh"
NOT_ROOT = "not root: the local SLURM cluster (slurm/local_cluster/start.sh) needs root"
_skipped_not_root: list[str] = []
requeue_figures: list[str] = []  # filled by test_local_cluster, printed in the summary


def _cluster_up() -> bool:
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "UP" in ping.stdout


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running local cluster (started here as root); the SLURM tests skip only without root."""
    if os.geteuid() != 0:
        if _cluster_up():
            return
        _skipped_not_root.append("x")
        pytest.skip(NOT_ROOT)
    result = subprocess.run(["bash", str(START_SH)], capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        pytest.fail(f"{START_SH} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


def pytest_terminal_summary(terminalreporter):
    if requeue_figures:
        terminalreporter.section("SLURM requeue figures (local cluster)")
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
