"""slurm/local_cluster/start.sh switches between one node and two (`--nodes 2`) idempotently,
leaving no stray daemon; stop.sh stops every daemon it started and waits for each.

Runs before test_local_cluster.py (file order) and ends with the one-node cluster it needs.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.slurm.conftest import requeue_figures, start_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("as_root")]

STOP_SH = REPO_ROOT / "slurm" / "local_cluster" / "stop.sh"
DAEMONS = {"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"}


def live_daemons() -> list[tuple[str, str]]:
    """(name, command line) of every live (not zombie) cluster daemon on this machine."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError):
            continue  # not a process, or gone meanwhile
        name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
        if name in DAEMONS and state != "Z":
            found.append((name, cmdline))
    return sorted(found)


def slurmds() -> list[str]:
    """The node name of every live slurmd (`slurmd -N NAME`)."""
    lines = [line for name, line in live_daemons() if name == "slurmd"]
    return sorted(line.split("-N", 1)[1].strip() for line in lines)


def pids(*names: str) -> list[str]:
    files = {"slurmctld": ["/run/slurmctld.pid"], "slurmd": ["/run/slurmd.pid"]}
    files["slurmds"] = [f"/run/slurmd-n{i}.pid" for i in (1, 2)]
    return [Path(path).read_text().strip() for name in names for path in files[name]]


def node_states() -> list[str]:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True)
    return sorted(set(out.stdout.splitlines()))


def timed_start(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    result = start_cluster(*args)
    return time.monotonic() - started, result.stdout


def test_switching_between_one_and_two_nodes_is_idempotent_and_leaves_no_stray_daemon():
    host = socket.gethostname().split(".")[0]
    start_cluster()  # whatever ran before: the one-node cluster
    assert slurmds() == [host] and node_states() == [f"{host} idle"]

    switch_s, out = timed_start("--nodes", "2")
    assert "restarting slurmctld and slurmd" in out
    assert slurmds() == ["n1", "n2"]  # the one-node slurmd is gone, waited for
    assert node_states() == ["n1 idle", "n2 idle"]
    assert not os.path.exists("/run/slurmd.pid")
    two_node_pids = pids("slurmctld", "slurmds")
    srun = ["srun", "-N2", "-n2", "-l", "bash", "-c", "echo $SLURMD_NODENAME $SLURM_NODEID"]
    placed = subprocess.run(srun, capture_output=True, text=True, timeout=120, check=True)
    assert sorted(placed.stdout.splitlines()) == ["0: n1 0", "1: n2 1"]

    warm_s, out = timed_start("--nodes", "2")  # the same layout again: nothing restarts
    assert "restarting" not in out and pids("slurmctld", "slurmds") == two_node_pids
    assert slurmds() == ["n1", "n2"]

    back_s, out = timed_start()
    assert "restarting slurmctld and slurmd" in out
    assert slurmds() == [host] and node_states() == [f"{host} idle"]
    assert not any(os.path.exists(f"/run/slurmd-n{i}.pid") for i in (1, 2))
    one_node_pids = pids("slurmctld", "slurmd")
    timed_start()
    assert pids("slurmctld", "slurmd") == one_node_pids and slurmds() == [host]
    assert sorted(name for name, _ in live_daemons()) == sorted(DAEMONS)  # one of each
    requeue_figures.append(
        f"start.sh: one -> two nodes {switch_s:.1f} s, two again (warm) {warm_s:.1f} s, "
        f"back to one {back_s:.1f} s"
    )


def test_stop_stops_every_daemon_of_two_nodes_and_a_cold_start_follows():
    start_cluster("--nodes", "2")
    assert slurmds() == ["n1", "n2"]
    subprocess.run(["bash", str(STOP_SH)], check=True, capture_output=True, timeout=300)
    assert live_daemons() == []  # every slurmd waited for, not only /run/slurmd.pid's
    cold_s, out = timed_start("--nodes", "2")
    assert slurmds() == ["n1", "n2"] and node_states() == ["n1 idle", "n2 idle"]
    back_s, _ = timed_start()  # leave the one-node cluster test_local_cluster.py expects
    assert slurmds() == [socket.gethostname().split(".")[0]]
    requeue_figures.append(f"start.sh --nodes 2 cold (daemons stopped) {cold_s:.1f} s")
