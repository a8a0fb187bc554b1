"""One command: pretrain, evaluate the export (and a random-init baseline), then tables and report.

    python -m results.pipeline --preset byol_r18_fmnist_demo --run-dir runs/demo     # make demo
    python -m results.pipeline --preset tiny_cpu --dataset synthetic --max-steps 4 --run-dir DIR
    python -m results.pipeline --preset byol_r50_in1k --data /imagenet --evals linear,knn \\
        --run-dir /shared/runs/r50 --slurm --profile mysite

Steps: `python -m pretrain.launch` (an existing run dir resumes) -> for each of --evals, the
evaluation CLI on the run's newest export (with --series, the default for demo presets: linear and
kNN on the run directory, i.e. each keeper checkpoints/epoch_*.pt and then the export) and, with
--baseline random, on `random:<arch>` at the run's image size (same data set, same records dir)
-> results.tables (markdown in <run dir>/tables) and results.report (<run dir>/report.html). It
ends by printing the linear and semi-supervised tables and the report's path. Other CLIs run as
commands (subprocesses here, SLURM jobs with --slurm), never as imports, so results/ stays
torch-free. A failed evaluation leaves a "failed" record and the pipeline goes on (the tables say
"failed"); it exits non-zero at the end.

With --slurm (slurm/submit.py, profile slurm/profiles/NAME.toml): pretraining is one job with the
profile's resources (every task runs pretrain.launch in the torch.distributed environment the job
exported; a requeued job resumes from the run dir); each evaluation is a one-task job that starts
only if pretraining succeeded (afterok); the tables+report job starts after the evaluation jobs
(afterok: an evaluation job completes even when its evaluation fails, so the tables say so).
--wait blocks until the tables job ends and prints its output; without it, follow the jobs with
`python -m pretrain.launch --status RUN_DIR` and squeue.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from results import render, report, tables
from results.errors import ByolBenchError
from results.record import read_records
from slurm import submit as slurm_submit

DEMO_PRESETS = ("byol_r18_fmnist_demo", "tiny_cpu")  # default: --baseline random, fast evals
DEFAULT_EVALS = ("linear", "knn")
DEMO_EVALS = {"byol_r18_fmnist_demo": ("linear", "knn", "semisup1", "semisup10")}  # else DEFAULT
EVALS = {  # name -> (module, extra flags)
    "linear": ("evaluate.linear", ()),
    "knn": ("evaluate.knn", ()),
    "semisup1": ("evaluate.semisup", ("--fraction", "1")),
    "semisup10": ("evaluate.semisup", ("--fraction", "10")),
    "transfer-linear": ("transfer.classification", ("--protocol", "byol-transfer-linear/1")),
    "transfer-finetune": ("transfer.classification", ("--protocol", "byol-transfer-finetune/1")),
}
# the transfer suite reads the 12 releases from --transfer-data, not the pretraining data set
TRANSFER_EVALS = ("transfer-linear", "transfer-finetune")
# --series: the run directory (each keeper checkpoints/epoch_*.pt, then the export;
# evaluate/series.py) instead of the export alone, for the report's accuracy against epochs
SERIES_EVALS = ("linear", "knn")
# --fast: linear's cached-centercrop/2 protocol; semisup's demo grid (demo-{1,10}pct/1); kNN has
# no cheaper variant (and refuses --fast)
FAST_EVALS = ("linear", "semisup1", "semisup10")


@dataclass(frozen=True)
class PipelineConfig:
    """pretrain -> evaluations (export and baseline) -> tables + report; see the module docstring.

    `fast` runs the linear probe as protocol cached-centercrop/2 (features cached once; minutes on
    a CPU) instead of byol-paper/2 (80 epochs of augmented views through the encoder), and the
    semi-supervised fine-tunes on the demo grid (demo-{1,10}pct/1) instead of the paper's ten cells.
    """

    preset: str
    run_dir: str  # absolute; default runs/<preset> (with --slurm: <shared_dir>/runs/<preset>)
    records: str  # absolute; default: records/ beside the run dir (the CLI contract's)
    data: str | None = None
    dataset: str | None = None  # default: the preset's
    evals: tuple[str, ...] = DEFAULT_EVALS  # the demo preset's: DEMO_EVALS
    baseline: str = "none"  # random | none; default random for DEMO_PRESETS
    fast: bool = False  # default True for DEMO_PRESETS
    series: bool = False  # linear and kNN on every keeper too; default True for DEMO_PRESETS
    max_steps: int | None = None
    device: str | None = None
    after: tuple[str, ...] = ()  # SLURM job ids the pretraining job waits for (afterok)
    transfer_data: str | None = None  # the folder of the transfer releases (TRANSFER_EVALS)
    transfer_datasets: tuple[str, ...] = ("all",)


def pretrain_command(config: PipelineConfig) -> list[str]:
    """`python -m pretrain.launch ...` with the pipeline's overrides."""
    command = [sys.executable, "-m", "pretrain.launch", "--preset", config.preset]
    command += ["--run-dir", config.run_dir]
    for flag, value in (
        ("--dataset", config.dataset),
        ("--data", config.data),
        ("--max-steps", config.max_steps),
        ("--device", config.device),
    ):
        if value is not None:
            command += [flag, str(value)]
    return command


def latest_export(run_dir: str | Path) -> Path:
    """The run's newest export (most pretraining steps), from exports/backbone-*.json."""
    exports = []
    for path in Path(run_dir).glob("exports/backbone-*.json"):
        steps = json.loads(path.read_text(encoding="utf-8")).get("pretrain_steps", 0)
        exports.append((steps, path.stat().st_mtime, path.with_suffix(".pt")))
    if not exports:
        raise FileNotFoundError(f"{run_dir}/exports has no backbone-*.pt: pretraining did not end")
    return max(exports)[2]


def eval_plan(config: PipelineConfig) -> list[tuple[str, str]]:
    """(evaluation, target) pairs; target is "export" or "baseline"."""
    targets = ["export", "baseline"] if config.baseline == "random" else ["export"]
    return [(name, target) for name in config.evals for target in targets]


def eval_command(config: PipelineConfig, name: str, target: str) -> list[str]:
    """The evaluation CLI for `target`, on the data set and image size of the run's config.json."""
    pretrain = json.loads((Path(config.run_dir) / "config.json").read_text(encoding="utf-8"))
    module, extra = EVALS[name]
    if name in TRANSFER_EVALS:
        return transfer_command(config, pretrain, name, target)
    if target == "export" and config.series and name in SERIES_EVALS:
        ckpt = [config.run_dir]  # its keepers, then its newest export (evaluate/series.py)
    elif target == "export":
        ckpt = [str(latest_export(config.run_dir))]
    else:  # the same architecture at its seeded initialisation, at the run's image size
        arch = pretrain["backbone"] + (":cifar" if pretrain.get("cifar_stem") else "")
        ckpt = [f"random:{arch}", "--image-size", str(pretrain["image_size"])]
    command = [sys.executable, "-m", module, "--ckpt", *ckpt, "--dataset", pretrain["dataset"]]
    command += ["--records", config.records, "--num-workers", str(pretrain["num_workers"])]
    command += ["--data", pretrain["data"]] if pretrain.get("data") else []
    command += ["--device", config.device] if config.device else []
    return command + list(extra) + (["--fast"] if config.fast and name in FAST_EVALS else [])


def transfer_command(config: PipelineConfig, pretrain: dict, name: str, target: str) -> list:
    """transfer.classification on the export (or the random-init baseline at the protocol's own
    input size, 224), every data set of config.transfer_datasets, one record each."""
    module, extra = EVALS[name]
    arch = pretrain["backbone"] + (":cifar" if pretrain.get("cifar_stem") else "")
    ckpt = str(latest_export(config.run_dir)) if target == "export" else f"random:{arch}"
    command = [sys.executable, "-m", module, "--ckpt", ckpt, "--data", config.transfer_data]
    command += ["--dataset", *config.transfer_datasets, "--records", config.records]
    command += ["--num-workers", str(pretrain["num_workers"])]
    command += ["--device", config.device] if config.device else []
    return (
        command + list(extra) + (["--grid", "demo"] if config.fast and "finetune" in name else [])
    )


def run_command(command: list[str]) -> None:
    """Run one CLI, its output passing through; raise CalledProcessError if it fails."""
    print(f"\n== {shlex.join(command)}", flush=True)
    subprocess.run(command, check=True)


def run_eval(config: PipelineConfig, name: str, target: str) -> int:
    """One evaluation; its exit code. A failed one leaves a "failed" record for the tables, so
    it does not raise: as a SLURM job it completes and the tables job (afterok) still runs."""
    try:
        run_command(eval_command(config, name, target))
    except subprocess.CalledProcessError as error:
        print(f"evaluation {name} ({target}) failed with exit code {error.returncode}", flush=True)
        return error.returncode
    return 0


def finish(config: PipelineConfig) -> Path:
    """Tables (markdown, <run dir>/tables) and the report; print the run data set's linear and
    semi-supervised tables and any transfer tables, return the report's path."""
    records = read_records(config.records)
    built = tables.build_tables(records)
    paths = tables.write_tables(built, "md", Path(config.run_dir) / "tables")
    title = f"byol-bench: {config.preset} ({Path(config.run_dir).name})"
    out = Path(config.run_dir) / "report.html"
    path = report.write_report(report.ReportConfig(config.records, config.run_dir, str(out), title))
    config_path = Path(config.run_dir) / "config.json"
    dataset = json.loads(config_path.read_text(encoding="utf-8"))["dataset"]
    prefixes = tuple(f"{family}-{tables.slug(dataset)}-" for family in ("linear", "semisup"))
    prefixes += ("transfer-",)
    shown = [table for table in built if table.id.startswith(prefixes)] or built
    print("\n" + "\n".join(render.to_markdown(table) for table in shown), flush=True)
    print(f"tables: {', '.join(str(path) for path in paths)}")
    print(f"report: {path.resolve()}", flush=True)
    return path


def run_here(config: PipelineConfig) -> None:
    """Every step in this process's children, one after the other."""
    try:
        run_command(pretrain_command(config))
    except subprocess.CalledProcessError as error:
        # The child printed its one `error:` sentence; this line only says what happens next.
        print(
            f"pipeline stopped: pretraining failed (exit {error.returncode}). The run dir keeps "
            "its last good checkpoint: fix the cause and rerun to resume.",
            file=sys.stderr,
        )
        sys.exit(1)
    plan = eval_plan(config)
    failed = [f"{name} ({target})" for name, target in plan if run_eval(config, name, target)]
    finish(config)
    if failed:
        sys.exit(f"error: evaluations failed: {', '.join(failed)}; see their records in the report")


def submit_jobs(config: PipelineConfig, profile) -> list:
    """Pretraining job -> evaluation jobs (afterok) -> tables+report job (afterok on them)."""
    single = slurm_submit.single_task(profile)  # evaluations, tables: one task, at most one GPU
    folder = Path(config.run_dir) / "slurm"
    name = f"byol-{Path(config.run_dir).name}"
    pretrain = slurm_submit.submit(
        profile, run_command, pretrain_command(config), name=name, folder=folder, after=config.after
    )
    evals = [
        slurm_submit.submit(
            single,
            run_eval,
            config,
            eval_name,
            target,
            name=f"{name}-{eval_name}-{target}",
            folder=folder,
            after=[pretrain.job_id],
        )
        for eval_name, target in eval_plan(config)
    ]
    after = [job.job_id for job in evals] or [pretrain.job_id]
    tables_job = slurm_submit.submit(
        single, finish, config, name=f"{name}-tables", folder=folder, after=after
    )
    steps = ["pretrain", *(" ".join(step) for step in eval_plan(config)), "tables + report"]
    for job, step in zip([pretrain, *evals, tables_job], steps):
        print(f"submitted SLURM job {job.job_id}: {step}  (log {job.paths.stderr})")
    report_path = Path(config.run_dir) / "report.html"
    print(f"run dir: {config.run_dir}\nreport (when job {tables_job.job_id} ends): {report_path}")
    return [pretrain, *evals, tables_job]


def build_parser() -> argparse.ArgumentParser:
    """The pipeline's flags (parse_config turns them into a PipelineConfig)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m results.pipeline",
        description="pretrain -> evaluations (+ random-init baseline) -> tables and HTML report",
    )
    add = parser.add_argument
    add("--preset", required=True, help="pretraining preset (pretrain/config.py)")
    add("--run-dir", help="run directory (default runs/<preset>; an existing run resumes)")
    add("--data", help="data set root (default: the preset's; fmnist: Debian's copy)")
    add("--dataset", help="override the preset's data set (e.g. synthetic)")
    add(
        "--evals",
        help=f"comma-separated, from {', '.join(EVALS)} (default: linear,knn; all four for "
        "byol_r18_fmnist_demo)",
    )
    add("--baseline", choices=["random", "none"], help="default: random for " + str(DEMO_PRESETS))
    add("--fast", action=argparse.BooleanOptionalAction, help="default: on for demo presets")
    add(
        "--series",
        action=argparse.BooleanOptionalAction,
        help="linear and kNN also on every keeper checkpoints/epoch_*.pt of the run (the report "
        "plots top-1 against pretraining epochs); default: on for demo presets",
    )
    add(
        "--transfer-data",
        help="folder holding the transfer releases side by side (transfer.classification "
        "--dataset all); needed by --evals transfer-linear / transfer-finetune",
    )
    add(
        "--transfer-datasets",
        help="comma-separated transfer data sets (default: all 12 of Table 3)",
    )
    add("--records", help="records directory (default: records/ beside the run dir)")
    add("--max-steps", type=int, help="stop pretraining early (the schedule is unchanged)")
    add("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    slurm_submit.add_slurm_arguments(parser)
    return parser


def parse_config(argv: list[str] | None) -> tuple[PipelineConfig, argparse.Namespace]:
    """PipelineConfig (paths made absolute, demo defaults applied) and the raw arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.evals is None:
        args.evals = ",".join(DEMO_EVALS.get(args.preset, DEFAULT_EVALS))
    evals = tuple(name.strip() for name in args.evals.split(",") if name.strip())
    unknown = [name for name in evals if name not in EVALS]
    if unknown or not evals:
        parser.error(f"--evals {args.evals!r}: choose from {', '.join(EVALS)}")
    if any(name in TRANSFER_EVALS for name in evals) and not args.transfer_data:
        parser.error("--evals transfer-*: pass --transfer-data DIR (the transfer releases)")
    try:
        slurm_submit.check_slurm_flags(args)
        shared = slurm_submit.profile_from_args(args).shared_dir if args.slurm else "."
    except ValueError as error:
        parser.error(str(error))
    run_dir = Path(args.run_dir or Path(shared) / "runs" / args.preset).absolute()
    demo = args.preset in DEMO_PRESETS
    config = PipelineConfig(
        preset=args.preset,
        run_dir=str(run_dir),
        records=str(Path(args.records).absolute() if args.records else run_dir.parent / "records"),
        data=str(Path(args.data).absolute()) if args.data else None,
        dataset=args.dataset,
        evals=evals,
        baseline=args.baseline or ("random" if demo else "none"),
        fast=demo if args.fast is None else args.fast,
        series=demo if args.series is None else args.series,
        max_steps=args.max_steps,
        device=args.device,
        after=tuple(slurm_submit.after_from_args(args)),
        transfer_data=str(Path(args.transfer_data).absolute()) if args.transfer_data else None,
        transfer_datasets=tuple(
            name.strip() for name in (args.transfer_datasets or "all").split(",") if name.strip()
        ),
    )
    return config, args


def main(argv: list[str] | None = None) -> None:
    config, args = parse_config(argv)
    if not args.slurm:
        return run_here(config)
    try:
        jobs = submit_jobs(config, slurm_submit.profile_from_args(args))
        if args.wait:
            wait_for(jobs)
    except ByolBenchError as error:  # SlurmJobError, ProfileError, ...: one sentence, exit 1
        sys.exit(f"error: {error}")


def wait_for(jobs: list) -> None:
    """Wait for pretraining (if it fails, cancel the jobs that would never start), then print the
    tables job's output."""
    try:
        slurm_submit.wait(jobs[0])
    except slurm_submit.SlurmJobError:
        for job in jobs[1:]:
            job.cancel(check=False)
        raise
    slurm_submit.wait(jobs[-1])
    print(jobs[-1].stdout() or "", end="")


if __name__ == "__main__":
    # Run the importable module's main, so that SLURM jobs pickle `results.pipeline.run_eval` and
    # `PipelineConfig` by reference rather than as `__main__` objects.
    from results.pipeline import main as importable_main

    importable_main()
