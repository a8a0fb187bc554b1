"""What became of the SLURM jobs whose logs are in a folder: state, requeues, nodes, log tails.

Reads the job-<id>.json notes that slurm.submit writes beside submitit's logs, and asks
accounting (`sacct -D`, which lists every requeued run of a job) or, failing that, the
controller (`scontrol show job`). A job of several nodes shows each task's node and log.
"""

import json
import re
import subprocess
from pathlib import Path


def job_notes(folder: str | Path) -> list[dict]:
    """The submission notes in ``folder``, oldest first."""
    notes = [json.loads(path.read_text()) for path in Path(folder).glob("job-*.json")]
    return sorted(notes, key=lambda note: note["submitted_unix"])


def _run(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def job_state(job_id: str) -> dict:
    """{"state", "requeues", "start", "end", "elapsed", "nodes"} of a job (its last run's; nodes
    as SLURM writes a node list, e.g. "n[1-2]"); state "UNKNOWN" if unseen."""
    fields = "JobID,State,Start,End,Elapsed,NodeList"
    out = _run(["sacct", "-D", "-X", "-n", "--parsable2", "-o", fields, "-j", str(job_id)])
    rows = [line.split("|") for line in (out or "").splitlines() if line.strip()]
    rows = [row for row in rows if row[0] == str(job_id)]
    if rows:
        # every run of a requeued job is a row; each earlier run ended REQUEUED (or PREEMPTED)
        _, state, start, end, elapsed, nodes = rows[-1]
        return {
            "state": state.split()[0],
            "requeues": len(rows) - 1,
            "start": start,
            "end": end,
            "elapsed": elapsed,
            "nodes": nodes,
        }
    out = _run(["scontrol", "show", "job", "-o", str(job_id)]) or ""
    info = dict(re.findall(r"(\w+)=(\S*)", out))
    return {
        "state": info.get("JobState", "UNKNOWN"),
        "requeues": int(info.get("Restarts", 0)),
        "start": info.get("StartTime", ""),
        "end": info.get("EndTime", ""),
        "elapsed": info.get("RunTime", ""),
        "nodes": info.get("NodeList", ""),
    }


def node_names(node_list: str) -> list[str]:
    """SLURM's compressed node list ("n[1-2]") as names, in order (`scontrol show hostnames`)."""
    if not node_list or node_list in ("None", "(null)", "None assigned"):
        return []
    out = _run(["scontrol", "show", "hostnames", node_list])
    return out.split() if out else [node_list]


def log_tail(path: str | Path, lines: int = 10) -> list[str]:
    """The last lines of a log, with progress-bar redraws (carriage returns) collapsed."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    collapsed = [line.rsplit("\r", 1)[-1] if "\r" in line else line for line in text.splitlines()]
    return [line for line in collapsed if line.strip()][-lines:]


def describe_jobs(folder: str | Path, tail: int = 10) -> list[str]:
    """Lines for a status report: every job submitted into ``folder``, and the newest log's tail
    (task 0's; in a job of several tasks, every other task's node, log and last line too)."""
    notes = job_notes(folder)
    if not notes:
        return [f"no SLURM jobs recorded in {folder}"]
    lines, states = [], {}
    for note in notes:
        state = states[note["job_id"]] = job_state(note["job_id"])
        nodes = f", nodes {state['nodes']}" if state.get("nodes") else ""
        lines.append(
            f"job {note['job_id']} ({note['name']}, profile {note['profile']}): {state['state']}, "
            f"requeued {state['requeues']}x, started {state['start']}, ended {state['end']}, "
            f"elapsed {state['elapsed']}{nodes}"
        )
    newest = notes[-1]
    lines.append(f"log: {newest['stderr']} (last {tail} lines)")
    lines += ["  " + line for line in log_tail(newest["stderr"], tail)]
    return lines + task_lines(newest, states[newest["job_id"]])


def task_lines(note: dict, state: dict) -> list[str]:
    """One line per task of a job of several: its node, its log and the log's last line."""
    count = (note.get("nodes") or 1) * (note.get("tasks_per_node") or 1)
    derived = [note["stderr"].replace("_0_log.err", f"_{task}_log.err") for task in range(count)]
    logs = note.get("task_stderr", derived)  # notes written before task_stderr: derived
    if len(logs) < 2:
        return []
    names, per_node = node_names(state.get("nodes", "")), note.get("tasks_per_node") or 1
    lines = ["tasks (node by node; the node is the last run's):"]
    for task, log in enumerate(logs):
        node = names[task // per_node] if task // per_node < len(names) else "?"
        last = (log_tail(log, 1) or ["(empty)"])[0]
        lines.append(f"  task {task} on {node}: {log}: {last}")
    return lines
