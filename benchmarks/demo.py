"""`make demo`, measured: pretraining throughput before/after the CPU fast path, wall times and
the demo's numbers, BYOL vs random initialisation, printed as one JSON line (not a test).

    python -m benchmarks.demo                    # both throughput runs, then the whole demo
    python -m benchmarks.demo --skip-demo        # only the throughput runs (a few minutes)

1. Throughput, back to back on the same machine: the demo preset for `--steps` steps, four times,
   through the real entry point (`python -m pretrain.launch`), one change of the CPU fast path
   added at a time: "before" with the views augmented one image at a time in two loader workers,
   every convolution as a convolution, fp32 (the path of the demo until issue 20); then views
   finished as batched ops in the training process with no workers; then the convolutions with
   one output position as matrix products (pretrain/small_inputs.py); "after" is the preset as it
   stands (+ bf16 autocast). Each figure is the run's own img/s (log.jsonl), so start-up is not
   counted.
2. The demo itself: `python -m results.pipeline --preset byol_r18_fmnist_demo` in a fresh run dir
   (what `make demo` runs after its set-up); its wall time, the pretraining's wall time and img/s,
   and the test top-1 of every evaluation for the export and for `random:resnet18`.

The machine is noisy: compare figures of one run only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results.record import read_records

PRESET = "byol_r18_fmnist_demo"
CONVOLUTIONS = ("--single-position-matmul", "false", "--precision", "fp32")
STEPS_OF_THE_FAST_PATH = {  # label -> flags on top of the preset, from the old path to the preset
    "before (loader workers, fp32, convolutions)": (
        *("--augment-on", "loader", "--num-workers", "2", *CONVOLUTIONS),
    ),
    "+ batched views, no workers": CONVOLUTIONS,
    "+ single-position matmuls": ("--precision", "fp32"),
    "after (the preset: + bf16)": (),
}


def pretrain_img_per_s(run_dir: Path, steps: int, overrides: tuple[str, ...] = ()) -> float:
    """img/s of the demo preset's first `steps` steps (python -m pretrain.launch, fresh run dir)."""
    command = [sys.executable, "-m", "pretrain.launch", "--preset", PRESET]
    command += ["--run-dir", str(run_dir), "--max-steps", str(steps), *overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["img_per_s"]


def demo_figures(work: Path) -> dict:
    """Run the demo pipeline in `work`/demo and collect its figures."""
    run_dir, records = work / "demo", work / "records"
    command = [sys.executable, "-m", "results.pipeline", "--preset", PRESET]
    command += ["--run-dir", str(run_dir), "--records", str(records)]
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    figures: dict = {
        "demo_wall_s": round(wall, 1),
        "pretrain_img_per_s_per_epoch": [round(line["img_per_s"], 1) for line in log],
        "online_probe_test_top1_per_epoch": [line["online_probe_test_top1"] for line in log],
    }
    for record in read_records(records):
        if record.kind == "pretrain":
            figures["pretrain_wall_s"] = round(record.provenance.wall_seconds or 0.0, 1)
            continue
        if record.status != "complete" or record.task is None:
            continue
        name = record.task.family
        if name == "semisup":
            name = f"semisup{record.config.get('fraction')}"
        who = "random" if record.checkpoint.method == "random-init" else "byol"
        figures.setdefault(name, {})[who] = record.metrics.get("top1")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.demo",
        description="make demo, measured: throughput before/after and the demo's figures.",
        allow_abbrev=False,
    )
    parser.add_argument("--steps", type=int, default=150, help="steps per throughput run")
    parser.add_argument("--skip-demo", action="store_true", help="only the throughput runs")
    parser.add_argument("--work-dir", default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="byol-bench-demo-"))
    for name in (*(f"path{i}" for i in range(len(STEPS_OF_THE_FAST_PATH))), "demo", "records"):
        shutil.rmtree(work / name, ignore_errors=True)
    result = {
        "pretrain_img_per_s": {
            label: round(pretrain_img_per_s(work / f"path{i}", args.steps, flags), 1)
            for i, (label, flags) in enumerate(STEPS_OF_THE_FAST_PATH.items())
        },
        "steps": args.steps,
    }
    if not args.skip_demo:
        result.update(demo_figures(work))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
