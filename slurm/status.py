"""What became of the SLURM jobs whose logs are in a folder: state, requeues, log tail.

Reads the job-<id>.json notes that slurm.submit writes beside submitit's logs, and asks
accounting (`sacct -D`, which lists every requeued run of a job) or, failing that, the
controller (`scontrol show job`).
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
    """{"state", "requeues", "start", "end", "elapsed"} of a job; state "UNKNOWN" if unseen."""
    fields = "JobID,State,Start,End,Elapsed"
    out = _run(["sacct", "-D", "-X", "-n", "--parsable2", "-o", fields, "-j", str(job_id)])
    rows = [line.split("|") for line in (out or "").splitlines() if line.strip()]
    rows = [row for row in rows if row[0] == str(job_id)]
    if rows:
        # every run of a requeued job is a row; each earlier run ended REQUEUED (or PREEMPTED)
        _, state, start, end, elapsed = rows[-1]
        return {
            "state": state.split()[0],
            "requeues": len(rows) - 1,
            "start": start,
            "end": end,
            "elapsed": elapsed,
        }
    out = _run(["scontrol", "show", "job", "-o", str(job_id)]) or ""
    info = dict(re.findall(r"(\w+)=(\S*)", out))
    return {
        "state": info.get("JobState", "UNKNOWN"),
        "requeues": int(info.get("Restarts", 0)),
        "start": info.get("StartTime", ""),
        "end": info.get("EndTime", ""),
        "elapsed": info.get("RunTime", ""),
    }


def log_tail(path: str | Path, lines: int = 10) -> list[str]:
    """The last lines of a log, with progress-bar redraws (carriage returns) collapsed."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    collapsed = [line.rsplit("\r", 1)[-1] if "\r" in line else line for line in text.splitlines()]
    return [line for line in collapsed if line.strip()][-lines:]


def describe_jobs(folder: str | Path, tail: int = 10) -> list[str]:
    """Lines for a status report: every job submitted into ``folder``, and the newest log's tail."""
    notes = job_notes(folder)
    if not notes:
        return [f"no SLURM jobs recorded in {folder}"]
    lines = []
    for note in notes:
        state = job_state(note["job_id"])
        lines.append(
            f"job {note['job_id']} ({note['name']}, profile {note['profile']}): {state['state']}, "
            f"requeued {state['requeues']}x, started {state['start']}, ended {state['end']}, "
            f"elapsed {state['elapsed']}"
        )
    newest = notes[-1]
    lines.append(f"log: {newest['stderr']} (last {tail} lines)")
    lines += ["  " + line for line in log_tail(newest["stderr"], tail)]
    return lines
