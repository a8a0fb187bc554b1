"""The one-command pipeline: its commands, its defaults, and end to end on tiny_cpu / synthetic."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from results import pipeline
from results.record import read_records
from tests.conftest import REPO_ROOT, run_cli
from tests.slurm.conftest import slurm_cluster  # noqa: F401  (the local cluster fixture)

TINY = ["--preset", "tiny_cpu", "--dataset", "synthetic", "--max-steps", "2"]


def fake_run(run_dir: Path, **config) -> Path:
    """A run dir as pretrain.launch leaves it: config.json and two exports (steps 10 and 20)."""
    (run_dir / "exports").mkdir(parents=True)
    values = {"dataset": "fmnist", "data": None, "image_size": 32, "backbone": "resnet18"}
    values |= {"cifar_stem": False, "num_workers": 2, **config}
    (run_dir / "config.json").write_text(json.dumps(values))
    for sha, steps in (("aaaaaaaa", 20), ("bbbbbbbb", 10)):
        (run_dir / "exports" / f"backbone-{sha}.json").write_text(
            json.dumps({"pretrain_steps": steps})
        )
    return run_dir / "exports" / "backbone-aaaaaaaa.pt"


def test_demo_defaults_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = ["--preset", "byol_r18_fmnist_demo", "--run-dir", "runs/demo"]  # as `make demo`
    config, _ = pipeline.parse_config(demo)
    assert config.run_dir == str(tmp_path / "runs" / "demo")
    assert config.records == str(tmp_path / "runs" / "records")  # the CLI contract's default
    assert (config.baseline, config.fast) == ("random", True)
    assert config.evals == ("linear", "knn", "semisup1", "semisup10")  # issue 7: demo fine-tunes
    paper, _ = pipeline.parse_config(["--preset", "byol_r50_in1k", "--data", "/imagenet"])
    assert (paper.baseline, paper.fast, paper.run_dir, paper.evals) == (
        "none",
        False,
        str(tmp_path / "runs" / "byol_r50_in1k"),
        ("linear", "knn"),
    )
    override, _ = pipeline.parse_config(
        ["--preset", "tiny_cpu", "--baseline", "none", "--no-fast", "--evals", "knn"]
    )
    assert (override.baseline, override.fast, override.evals) == ("none", False, ("knn",))


def test_bad_arguments_are_refused_before_any_work(capsys):
    with pytest.raises(SystemExit):
        pipeline.parse_config(["--preset", "tiny_cpu", "--evals", "linear,magic"])
    assert "choose from linear, knn" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pipeline.parse_config(["--preset", "tiny_cpu", "--profile", "local"])
    assert "add --slurm" in capsys.readouterr().err


def test_commands_follow_the_run_config(tmp_path):
    export = fake_run(tmp_path / "run", cifar_stem=True, data="/data/fm")
    config, _ = pipeline.parse_config(
        ["--preset", "byol_r18_fmnist_demo", "--run-dir", str(tmp_path / "run"), "--max-steps", "7"]
    )
    assert pipeline.pretrain_command(config)[1:] == [
        "-m",
        "pretrain.launch",
        "--preset",
        "byol_r18_fmnist_demo",
        "--run-dir",
        str(tmp_path / "run"),
        "--max-steps",
        "7",
    ]
    assert pipeline.latest_export(tmp_path / "run") == export  # most pretraining steps
    assert pipeline.eval_plan(config)[:4] == [
        ("linear", "export"),
        ("linear", "baseline"),
        ("knn", "export"),
        ("knn", "baseline"),
    ]
    assert pipeline.eval_plan(config)[4:] == [
        ("semisup1", "export"),
        ("semisup1", "baseline"),
        ("semisup10", "export"),
        ("semisup10", "baseline"),
    ]
    common = ["--dataset", "fmnist", "--records", config.records, "--num-workers", "2"]
    common += ["--data", "/data/fm"]
    # --series (on for demo presets): linear and kNN take the run dir (its keepers, then export)
    assert pipeline.eval_command(config, "linear", "export")[1:] == [
        "-m",
        "evaluate.linear",
        "--ckpt",
        str(tmp_path / "run"),
        *common,
        "--fast",
    ]
    # kNN has no cheaper recorded variant: no --fast (it refuses the flag)
    assert pipeline.eval_command(config, "knn", "baseline")[1:] == [
        "-m",
        "evaluate.knn",
        "--ckpt",
        "random:resnet18:cifar",
        "--image-size",
        "32",
        *common,
    ]
    plain, _ = pipeline.parse_config(
        ["--preset", "byol_r18_fmnist_demo", "--run-dir", str(tmp_path / "run"), "--no-series"]
    )
    assert pipeline.eval_command(plain, "knn", "export")[4] == str(export)
    assert pipeline.eval_command(config, "semisup10", "export")[1:] == [  # --fast: the demo grid
        "-m",
        "evaluate.semisup",
        "--ckpt",
        str(export),
        *common,
        "--fraction",
        "10",
        "--fast",
    ]


def test_transfer_commands_read_the_transfer_releases(tmp_path):
    export = fake_run(tmp_path / "run", cifar_stem=True, data="/data/fm")
    argv = ["--preset", "byol_r18_fmnist_demo", "--run-dir", str(tmp_path / "run")]
    argv += ["--evals", "transfer-linear,transfer-finetune", "--transfer-data", str(tmp_path)]
    config, _ = pipeline.parse_config([*argv, "--transfer-datasets", "dtd,pets"])
    common = ["--data", str(tmp_path), "--dataset", "dtd", "pets", "--records", config.records]
    common += ["--num-workers", "2"]
    assert pipeline.eval_command(config, "transfer-linear", "export")[1:] == [
        "-m",
        "transfer.classification",
        "--ckpt",
        str(export),
        *common,
        "--protocol",
        "byol-transfer-linear/1",
    ]
    # the baseline at the protocol's own input size (224), not the run's; --fast: the demo grid
    assert pipeline.eval_command(config, "transfer-finetune", "baseline")[1:] == [
        "-m",
        "transfer.classification",
        "--ckpt",
        "random:resnet18:cifar",
        *common,
        "--protocol",
        "byol-transfer-finetune/1",
        "--grid",
        "demo",
    ]
    everything, _ = pipeline.parse_config(argv)
    assert everything.transfer_datasets == ("all",)
    with pytest.raises(SystemExit):  # the transfer suite without its releases
        pipeline.parse_config([*argv[:4], "--evals", "linear,transfer-linear"])


def test_results_modules_do_not_import_torch():
    code = (
        "import sys; import results.tables, results.report, results.pipeline, results.published;"
        "results.pipeline.parse_config(['--preset', 'tiny_cpu']);"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


@pytest.mark.slow
def test_pipeline_end_to_end_tiny(tmp_path, monkeypatch):
    """pretrain (2 steps) -> linear + kNN (fast) + 1% fine-tune (demo grid) on the export and on
    random:resnet18 -> tables, report; the commands `make demo` runs, on tiny_cpu / synthetic."""
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(tmp_path / "cache"))
    run_dir, records = tmp_path / "runs" / "tiny", tmp_path / "runs" / "records"
    evals = ["--evals", "linear,knn,semisup1"]
    result = run_cli("results.pipeline", *TINY, *evals, "--run-dir", str(run_dir), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    evals = [r for r in read_records(records) if r.kind == "eval"]
    assert sorted((r.task.family, r.checkpoint.method) for r in evals) == [
        ("knn", "byol"),
        ("knn", "random-init"),
        ("linear", "byol"),
        ("linear", "random-init"),
        ("semisup", "byol"),
        ("semisup", "random-init"),
    ]
    assert {r.task.protocol for r in evals if r.task.family == "semisup"} == {"demo-1pct/1"}
    fine_tune = out[out.index("### Semi-supervised fine-tuning: synthetic (test)") :]
    random_row = r"\| random init \| ResNet-18 \| 11M \| 0 \| random-init resnet18 \| \w{8} \| \d"
    assert re.search(random_row, fine_tune)
    assert {r.status for r in evals} == {"complete"}
    assert {r.task.protocol for r in evals if r.task.family == "linear"} == {"cached-centercrop/2"}
    table = out[out.index("### Frozen features, linear probe and kNN: synthetic (test)") :]
    assert re.search(r"\| BYOL \| ResNet-18 \| 11M \| [0-9.]+ \| tiny \| [0-9a-f]{8} \| \d", table)
    assert re.search(r"\| random init \| ResNet-18 \| 11M \| 0 \| random-init resnet18 \|", table)
    assert "| missing" not in table and "| failed" not in table
    assert out.rstrip().endswith(f"report: {run_dir / 'report.html'}")
    assert (run_dir / "tables" / "linear-synthetic-test.md").read_text() in out
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_pipeline_on_slurm(tmp_path, monkeypatch):
    """--slurm on the local cluster: pretraining job -> kNN jobs (afterok) -> tables job."""
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(tmp_path / "cache"))
    run_dir, records = tmp_path / "runs" / "tiny", tmp_path / "runs" / "records"
    slurm = ["--slurm", "--profile", "local", "--wait"]
    result = run_cli(
        "results.pipeline", *TINY, "--evals", "knn", "--run-dir", str(run_dir), *slurm, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = re.findall(r"submitted SLURM job (\d+): (.+?)  \(log", result.stdout)
    steps = ["pretrain", "knn export", "knn baseline", "tables + report"]
    assert [step for _, step in jobs] == steps
    ids = [job_id for job_id, _ in jobs]
    notes = {i: json.loads((run_dir / "slurm" / f"job-{i}.json").read_text()) for i in ids}
    assert [notes[i]["after"] for i in ids] == [[], [ids[0]], [ids[0]], ids[1:3]]
    evals = [r for r in read_records(records) if r.kind == "eval"]
    assert sorted(r.provenance.slurm_job_id for r in evals) == ids[1:3]
    assert {r.status for r in evals} == {"complete"}
    assert "### Frozen features, linear probe and kNN: synthetic (test)" in result.stdout
    assert (run_dir / "report.html").is_file()
