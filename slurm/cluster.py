"""Node-level facts of a SLURM job: whether the partition has the nodes it asks for, and the
port its tasks meet at.

    check_nodes_exist(profile)   more nodes than the partition has (or allows per job): refused
                                 before submission (`scontrol show partition`)
    master_port(job_id)          the rendezvous port (MASTER_PORT) every task derives alike

Kept apart from slurm/profile.py (site facts as written) and slurm/submit.py (submission).
"""

import re
import subprocess

from slurm.profile import Profile, ProfileError


def check_nodes_exist(profile: Profile) -> None:
    """Refuse a job that asks for more nodes than its partition has (`scontrol show partition`).

    SLURM accepts such a job and leaves it pending for ever (Reason=PartitionNodeLimit) unless
    the site sets EnforcePartLimits, so `--wait` would never return: refuse before submitting.
    Without an answer from scontrol (no controller, unknown partition) sbatch decides.
    """
    try:
        command = ["scontrol", "show", "partition", "-o", profile.partition]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return
    fields = dict(re.findall(r"(\w+)=(\S*)", result.stdout)) if result.returncode == 0 else {}
    # 0 or not a number: dynamic nodes, UNLIMITED, no answer; leave it to SLURM
    total, per_job = (fields.get(key, "") for key in ("TotalNodes", "MaxNodes"))
    limits = {
        "has": int(total) if total.isdigit() and int(total) else None,
        "allows per job at most": int(per_job) if per_job.isdigit() and int(per_job) else None,
    }
    for says, most in limits.items():
        if most is not None and profile.nodes > most:
            raise ProfileError(
                f"--nodes {profile.nodes}: partition {profile.partition} {says} {most} node(s) "
                f"(scontrol show partition {profile.partition}), so the job could never start; "
                f"ask for at most {most} (--nodes, or nodes in profile {profile.name})"
            )


MASTER_PORTS = range(20000, 32768)  # below Linux's ephemeral ports (32768-60999 by default)


def master_port(job_id: str) -> int:
    """The rendezvous port every task of a job derives from the job id: 20000 + id mod 12768.

    submitit draws it from 20000-60000, which overlaps the ephemeral ports that gloo's own
    sockets and every outgoing connection take: a job sharing a node with another DDP job then
    found its port taken (EADDRINUSE), or, worse, its ranks connected to the other job's gloo
    socket and broke that job too (seen on the two-node test cluster). Below the ephemeral
    range only another job's rendezvous port can collide, and jobs with nearby ids never do.
    """
    number = int(job_id) if job_id.isdigit() else int.from_bytes(job_id.encode(), "big")
    return MASTER_PORTS[number % len(MASTER_PORTS)]
