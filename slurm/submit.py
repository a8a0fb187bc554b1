"""SLURM submission on submitit, used by every CLI's `--slurm --profile NAME`.

    profile (slurm/profiles/NAME.toml) -> executor_from_profile() -> submitit.AutoExecutor
    submit(profile, fn, *args)          one job running fn(*args) in every task, resubmitted on
                                        preemption and time-out (Job.checkpoint)
    submit_array(profile, fn, arg_list) a job array (sweeps, checkpoint series), one task per
                                        argument tuple
    after=[job ids]                     starts only if those jobs succeed (afterok; pipelines)

Preemption and time limits: SLURM sends USR2 `signal_delay_s` before the limit (or on preemption);
submitit then calls Job.checkpoint(), which only resubmits the same call, and requeues the job.
The state is in the run directory, not in the pickle: the requeued job's fn resumes from its last
checkpoint (pretrain.train resumes from run_dir/checkpoints/last.pt), so what is lost is the work
since that checkpoint. `scontrol requeue` and node failures restart the same call the same way.

Distributed: each task exports RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT with
submitit's TorchDistributedEnvironment, which torch.distributed reads with init_method="env://".
"""

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import submitit
from submitit.core.logger import get_logger
from submitit.helpers import Checkpointable, DelayedSubmission, TorchDistributedEnvironment
from submitit.slurm.slurm import SlurmJobEnvironment

from results.errors import ByolBenchError
from slurm.cluster import check_nodes_exist, master_port
from slurm.profile import Profile, ProfileError, load_profile, parse_time

JOB_NOTE = "job-{job_id}.json"  # one small file per submission, beside the submitit logs


class SlurmJobError(ByolBenchError, RuntimeError):
    """A SLURM job that failed or was cancelled; the message names its log."""


class Job(Checkpointable):
    """fn(*args, **kwargs) run in every task of a SLURM job, resubmitted unchanged on requeue."""

    def __init__(self, fn: Callable, *args, **kwargs) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self):
        # env:// rendezvous for torch.distributed at the job's first node. Keep every GPU of the
        # node visible: a task picks cuda:LOCAL_RANK itself (pretrain.dist), so
        # CUDA_VISIBLE_DEVICES is left alone. submitit keeps a MASTER_PORT it finds set.
        os.environ["MASTER_PORT"] = str(master_port(os.environ["SLURM_JOB_ID"]))
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        SlurmJobEnvironment._requeue = requeue_surviving_its_own_sigterm
        return self.fn(*self.args, **self.kwargs)

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Resubmit the same call: fn resumes from the checkpoint it keeps in its run dir."""
        return DelayedSubmission(self, *args, **kwargs)


def requeue_surviving_its_own_sigterm(env: SlurmJobEnvironment, countdown: int) -> None:
    """`scontrol requeue` of this job, immune to the SIGTERM that the requeue itself sends.

    SLURM signals every process of a requeued job, and `scontrol` is one of them until it exits.
    On a busy node it can lose that race and die of SIGTERM after the requeue succeeded; submitit's
    own `_requeue` (check_call) then raises, and the job writes a failed result that its requeued
    run never replaces. The child ignores SIGTERM; SIGKILL still ends it KillWait later.
    """
    ignore_sigterm = lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)  # noqa: E731
    command = ["scontrol", "requeue", env.job_id]
    subprocess.run(command, check=True, timeout=60, preexec_fn=ignore_sigterm)
    get_logger().info(f"Requeued job {env.job_id} ({countdown} remaining timeouts)")


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--slurm` flags every CLI shares (overrides of the profile's values)."""
    group = parser.add_argument_group(
        "SLURM (submit this command as a job instead of running it; slurm/profiles/*.toml)"
    )
    add = group.add_argument
    add("--slurm", action="store_true", help="submit this command as a SLURM job (submitit)")
    add("--profile", help="cluster profile: slurm/profiles/NAME.toml, or a path to a .toml file")
    add("--nodes", type=int, help="nodes of the job (default: the profile's)")
    add("--gpus-per-node", type=int, help="GPUs reserved on each node (default: the profile's)")
    tasks = "the profile's, else one per GPU, 1 without GPUs"
    add("--tasks-per-node", type=int, help=f"processes on each node (default: {tasks})")
    add("--cpus-per-task", type=int, help="CPU cores of each process (default: the profile's)")
    add("--mem-gb", type=float, help="memory per node in GB (default: the profile's)")
    add("--time", help="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS (default: profile's)")
    add("--after", help="comma-separated SLURM job ids that must succeed first (afterok)")
    add("--wait", action="store_true", help="wait for the job and report how it ended")


SLURM_ONLY_FLAGS = (
    "profile",
    "nodes",
    "gpus_per_node",
    "tasks_per_node",
    "cpus_per_task",
    "mem_gb",
    "time",
    "after",
    "wait",
)


def check_slurm_flags(args: argparse.Namespace) -> None:
    """Refuse SLURM flags given without --slurm (they would be silently ignored)."""
    given = [name for name in SLURM_ONLY_FLAGS if getattr(args, name) not in (None, False)]
    if given and not args.slurm:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ProfileError(f"{flags} only apply to SLURM jobs: add --slurm (and --profile NAME)")


def profile_from_args(args: argparse.Namespace) -> Profile:
    """The profile named by --profile with the resource flags applied; validated."""
    if not args.profile:
        raise ProfileError("--slurm needs --profile NAME (a file in slurm/profiles/)")
    overrides = {
        key: getattr(args, key)
        for key in ("nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb", "time")
    }
    if overrides["time"] is not None:
        overrides["time"] = parse_time(overrides["time"])
    return load_profile(args.profile, **overrides)


def after_from_args(args: argparse.Namespace) -> list[str]:
    return [job_id for job_id in (args.after or "").split(",") if job_id.strip()]


def executor_from_profile(
    profile: Profile, folder: str | Path, name: str = "byol-bench", after: Iterable[str] = ()
) -> submitit.AutoExecutor:
    """A submitit AutoExecutor for SLURM with the profile's resources; logs go to ``folder``."""
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise ProfileError(
            "sbatch/srun not found on PATH: submit from a SLURM login node, or start the local "
            "test cluster with `sudo slurm/local_cluster/start.sh`"
        )
    executor = submitit.AutoExecutor(
        folder=folder,
        cluster="slurm",
        slurm_max_num_timeout=profile.max_num_timeout,
        slurm_python=profile.python,
    )
    parameters = {
        "job_name": name,
        "partition": profile.partition,
        "account": profile.account,
        "qos": profile.qos,
        "constraint": profile.constraint,
        "time": profile.time_min,
        "nodes": profile.nodes,
        "ntasks_per_node": profile.tasks,
        "cpus_per_task": profile.cpus_per_task,
        "gpus_per_node": profile.gpus_per_node or None,  # no GRES request on CPU-only nodes
        "mem": _sbatch_mem(profile.mem_gb),
        "signal_delay_s": profile.signal_delay_s,
        "array_parallelism": profile.array_parallelism,
        "setup": list(profile.setup) or None,
        "dependency": "afterok:" + ":".join(after) if after else None,
        "additional_parameters": dict(profile.extra) or None,
    }
    executor.update_parameters(
        **{f"slurm_{key}": value for key, value in parameters.items() if value is not None}
    )
    return executor


def _sbatch_mem(mem_gb: float | None) -> str | None:
    if not mem_gb:
        return None  # the partition's default
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{round(mem_gb * 1024)}MB"


def sbatch_script(executor: submitit.AutoExecutor) -> str:
    """The sbatch script this executor submits for a single job (the golden-file test reads it)."""
    slurm_executor = executor._executor  # submitit has no public accessor for the script
    return slurm_executor._make_submission_file_text(slurm_executor._submitit_command_str, "uid")


def log_folder(profile: Profile, name: str) -> Path:
    """Where a job's logs go by default: <shared_dir>/logs/<name>."""
    return Path(profile.shared_dir) / "logs" / name


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` and prove it writable (nodes write logs and results there)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ProfileError(
            f"cannot write to {folder} ({error.strerror or error}); set shared_dir in the profile "
            "(or --run-dir) to a folder on the shared file system that you can write"
        ) from error
    return folder.resolve()


def submit(
    profile: Profile,
    fn: Callable,
    *args,
    name: str,
    folder: str | Path | None = None,
    after: Iterable[str] = (),
    **kwargs,
) -> submitit.Job:
    """Submit fn(*args, **kwargs) as one checkpointable job; records the job id beside its logs."""
    check_nodes_exist(profile)
    folder = ensure_writable(Path(folder) if folder else log_folder(profile, name))
    executor = executor_from_profile(profile, folder, name=name, after=list(after))
    job = executor.submit(Job(fn, *args, **kwargs))
    _write_note(job, profile, name, list(after))
    return job


def submit_array(
    profile: Profile,
    fn: Callable,
    arg_list: Sequence[tuple],
    name: str,
    folder=None,
    after: Iterable[str] = (),
) -> list[submitit.Job]:
    """Submit fn(*args) for each args in ``arg_list`` as one job array (a sweep); with ``after``,
    the array starts only if those jobs succeed (afterok)."""
    check_nodes_exist(profile)
    folder = ensure_writable(Path(folder) if folder else log_folder(profile, name))
    executor = executor_from_profile(profile, folder, name=name, after=list(after))
    with executor.batch():
        jobs = [executor.submit(Job(fn, *args)) for args in arg_list]
    for job in jobs:
        _write_note(job, profile, name, list(after))
    return jobs


def _write_note(job: submitit.Job, profile: Profile, name: str, after: list[str]) -> None:
    note = {
        "job_id": job.job_id,
        "name": name,
        "profile": profile.name,
        "partition": profile.partition,
        "nodes": profile.nodes,
        "tasks_per_node": profile.tasks,
        "gpus_per_node": profile.gpus_per_node,
        "time_min": profile.time_min,
        "after": after,
        "submitted_unix": time.time(),
        "stdout": str(job.paths.stdout),
        "stderr": str(job.paths.stderr),
        # one log per task (global rank); tasks fill the nodes in order, tasks_per_node each
        "task_stderr": [str(task.paths.stderr) for task in job._sub_jobs or [job]],
    }
    (job.paths.folder / JOB_NOTE.format(job_id=job.job_id)).write_text(json.dumps(note, indent=2))


def describe(job: submitit.Job, profile: Profile, extra_lines: Iterable[str] = ()) -> str:
    """What was submitted, where its logs are, and how to follow, inspect and cancel it."""
    gpus = f", {profile.gpus_per_node} GPUs per node" if profile.gpus_per_node else ""
    tasks = profile.nodes * profile.tasks
    per_task = str(job.paths.stderr).replace("_0_log.err", "_<task>_log.err")
    lines = [
        f"submitted SLURM job {job.job_id} (profile {profile.name}, partition "
        f"{profile.partition}): {profile.nodes} node(s) x {profile.tasks} task(s){gpus}, "
        f"time limit {profile.time_min} min",
        *extra_lines,
        f"  stdout:  {job.paths.stdout}",
        f"  stderr:  {job.paths.stderr}   (progress and logging; other tasks: *_<task>_log.*)",
        *(
            [
                f"  tasks:   {tasks}, node by node ({profile.tasks} per node): task k logs to "
                f"{per_task}; which node ran it: --status, or sacct -j {job.job_id} -o NodeList"
            ]
            if profile.nodes > 1
            else []
        ),
        f"  follow:  tail -f {job.paths.stderr}",
        f"  queue:   squeue -j {job.job_id}   accounting: sacct -D -j {job.job_id}",
        f"  cancel:  scancel {job.job_id}",
    ]
    return "\n".join(lines)


def wait(job: submitit.Job):
    """Block until the job ends; its result (task 0's, in a job of several tasks), or
    SlurmJobError naming the error and the log of the first failed task (and the others')."""
    job.wait()
    tasks = job._sub_jobs or [job]  # job.result() refuses a job of several tasks
    failures = [(task, _failure(job, task)) for task in tasks]
    failures = [(task, message) for task, message in failures if message]
    if not failures:
        return tasks[0].result()
    (task, message), rest = failures[0], failures[1:]
    also = "".join(f"; task {other.task_id} failed too: {other.paths.stderr}" for other, _ in rest)
    raise SlurmJobError(f"{message}. Full log: {task.paths.stderr}{also}")


def _failure(job: submitit.Job, task: submitit.Job) -> str | None:
    """Why one task of ``job`` has no result (None if it has one)."""
    try:
        task.result()
    except submitit.core.utils.FailedJobError as error:  # fn raised: the traceback is in the text
        trace = str(error).split("-" * 22)
        lines = (
            [line.strip() for line in trace[1].splitlines() if line.strip()] if trace[1:] else []
        )
        cause = lines[-1] if lines else "see the log"
        return f"SLURM job {job.job_id} failed: {cause}"
    except submitit.core.utils.UncompletedJobError as error:  # cancelled, killed, node lost, ...
        state = re.search(r"has not produced any output \(state: ([^)]*)\)", str(error))
        return (
            f"SLURM job {job.job_id} ended without a result "
            f"(state {state.group(1) if state else job.state})"
        )
    return None


def run_command(command: Sequence[str]) -> None:
    """Run one command line in the job, its output going to the job's log; fail if it fails."""
    import subprocess

    subprocess.run(list(command), check=True)


def single_task(profile: Profile) -> Profile:
    """The profile cut to what one process uses: one node, one task, at most one GPU, and that
    task's share of the node's memory; `exclusive` is dropped.

    A profile made for DDP pretraining (e.g. 8 GPUs, so 8 tasks, the whole node) would otherwise
    run a one-process command once per task, or block a whole node for one GPU's work.
    """
    share = max(profile.gpus_per_node, profile.tasks_per_node or 0, 1)  # tasks the node was cut in
    return dataclasses.replace(
        profile,
        nodes=1,
        tasks_per_node=1,
        gpus_per_node=min(profile.gpus_per_node, 1),
        mem_gb=None if profile.mem_gb is None else profile.mem_gb / share,
        extra={key: value for key, value in profile.extra.items() if key != "exclusive"},
    )


def one_process(profile: Profile, args: argparse.Namespace, module: str) -> Profile:
    """:func:`single_task`; --nodes / --tasks-per-node above 1 are refused, not dropped, and an
    explicit --mem-gb is taken as given."""
    if (args.nodes or 1) > 1 or (args.tasks_per_node or 1) > 1:
        raise ProfileError(
            f"{module} runs in one process: leave out --nodes / --tasks-per-node (or give 1)"
        )
    task = single_task(profile)
    return task if args.mem_gb is None else dataclasses.replace(task, mem_gb=args.mem_gb)


def submit_cli_if_requested(
    module: str,
    argv: Sequence[str] | None = None,
    *,
    tasks: Callable[[list[str]], list[list[str]]] | None = None,
) -> bool:
    """`--slurm --profile NAME [...]` on a one-process CLI: submit `python -m module <its other
    flags>` as a one-task job (:func:`one_process`), print where it runs, and return True; without
    --slurm return False (run here). `tasks` splits the other flags into one argument list per
    task (a checkpoint series, evaluate/series.py); more than one becomes a job array of one-task
    jobs, one per argument list."""
    import sys

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # --gpus is not --gpus-*
    add_slurm_arguments(parser)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    check_slurm_flags(args)
    if not args.slurm:
        return False
    profile = one_process(profile_from_args(args), args, module)
    commands = [[sys.executable, "-m", module, *task] for task in (tasks or _one_task)(rest)]
    name = module.replace(".", "-")
    folder = Path(profile.shared_dir) / "logs" / name
    after = after_from_args(args)
    if len(commands) == 1:
        jobs = [submit(profile, run_command, commands[0], name=name, folder=folder, after=after)]
    else:
        arg_list = [(command,) for command in commands]
        jobs = submit_array(profile, run_command, arg_list, name=name, folder=folder, after=after)
        print(f"submitted a SLURM job array of {len(jobs)} one-task jobs:", flush=True)
    for job, command in zip(jobs, commands):
        print(describe(job, profile, [f"  command: {' '.join(command)}"]), flush=True)
    if args.wait:
        for job in jobs:
            wait(job)
    return True


def _one_task(rest: list[str]) -> list[list[str]]:
    return [rest]
