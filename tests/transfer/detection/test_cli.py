"""`python -m transfer.detection`: its answers to bad input, the flag vocabulary (--max-steps),
and the default work directory (evaluate/harness.py). Training through the CLI: test_models.py."""

import importlib.util

import pytest

from tests.conftest import run_cli
from tests.transfer.detection.layouts import make_voc
from transfer.detection import cli as detection


def _error_of(argv: list[str]) -> str:
    """The message `python -m transfer.detection argv` stops with (in process)."""
    with pytest.raises(SystemExit) as stop:
        detection.main(argv)
    return str(stop.value.code)


def test_cli_bad_inputs_name_the_problem(tmp_path):
    root = make_voc(tmp_path / "voc", {("2007", "trainval"): 1, ("2007", "test"): 1})
    (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    common = ["--ckpt", "random:resnet18", "--device", "cpu", "--records", str(tmp_path / "r")]
    unknown = run_cli("transfer.detection", *common, "--protocol", "voc-made-up/3")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "error: unknown protocol 'voc-made-up/3'" in unknown.stderr
    assert "byol-paper-frcnn-c4/1" in unknown.stderr  # lists the known ones
    assert "ImageSets/Main/test.txt" in _error_of([*common, "--data", str(root)])
    coco = ["--protocol", "coco-maskrcnn-fpn-1x/1"]
    assert "pass --data with a COCO directory" in _error_of([*common, *coco])
    assert "--model mask-fpn needs instance masks" in _error_of([*common, "--model", "mask-fpn"])
    moco = ["--protocol", "moco-detectron2-c4-24k/1", "--data", str(root)]
    if importlib.util.find_spec("detectron2") is None:  # the case of this project's CI
        message = _error_of([*common, *moco, "--engine", "detectron2"])
        assert "detectron2 is not importable" in message and "--engine torchvision" in message
    assert "--engine detectron2 runs moco-detectron2-c4-24k/1" in _error_of(
        [*common, "--engine", "detectron2", "--data", str(root)]
    )
    assert "--slurm needs --profile" in _error_of([*common, "--slurm"])
    assert not (tmp_path / "r").exists()  # bad input writes no record


def test_max_iters_is_refused_and_max_steps_shortens_the_run():
    """The one vocabulary: --max-steps; the old spelling --max-iters is a usage error (exit 2)."""
    old = run_cli("transfer.detection", "--ckpt", "random:resnet18", "--max-iters", "2")
    assert old.returncode == 2 and "unrecognized arguments: --max-iters 2" in old.stderr
    config = detection.parse_config(["--ckpt", "random:resnet18", "--max-steps", "2"])
    assert config.max_steps == 2 and not hasattr(config, "max_iters")
    with pytest.raises(detection.harness.InputError, match="--max-steps must be at least 1"):
        detection.resolve_protocol(detection.DetectionConfig(ckpt="x", max_steps=0))


def test_fast_is_refused():
    result = run_cli("transfer.detection", "--ckpt", "random:resnet18", "--fast")
    assert result.returncode == 2 and "unrecognized arguments: --fast" in result.stderr


def test_default_work_dir_is_under_runs_evals_not_records(tmp_path):
    root = make_voc(tmp_path / "voc", {("2007", "trainval"): 1, ("2007", "test"): 1})
    argv = [
        "--ckpt",
        "random:resnet18",
        "--data",
        str(root),
        "--device",
        "cpu",
        "--seed",
        "3",
        "--records",
        str(tmp_path / "records"),
    ]
    config = detection.parse_config(argv)
    inputs, run = detection.prepare(config, detection.resolve_protocol(config)[0])
    sha8 = inputs.metadata["weights_sha256"][:8]
    expected = tmp_path / "evals" / "detection" / "byol-paper-frcnn-c4-v1" / f"{sha8}-seed3"
    assert inputs.work_dir == expected and run.run_dir == expected
    assert inputs.records_dir == tmp_path / "records" and inputs.eval_split == "test"
    explicit = detection.parse_config([*argv, "--run-dir", str(tmp_path / "mine")])
    assert detection.prepare(explicit, detection.resolve_protocol(explicit)[0])[1].run_dir == (
        tmp_path / "mine"
    )


def test_seeds_run_one_detection_each_here_or_as_a_job_array(monkeypatch, capsys):
    """--seeds 0 1 2 (MoCo reports the mean of 5 runs): one run and record per seed, in turn
    here, or one SLURM job each; the tables then show their mean ± std (n)."""
    seen = []
    monkeypatch.setattr(detection, "evaluate_one", lambda argv: seen.append(argv))
    detection.main(["--ckpt", "random:resnet50", "--seeds", "0", "1", "2"])
    assert [argv[-2:] for argv in seen] == [["--seed", "0"], ["--seed", "1"], ["--seed", "2"]]

    from types import SimpleNamespace

    from slurm import submit as slurm_submit

    submitted = {}

    def submit_array(profile, fn, arg_list, name, folder=None, after=()):
        submitted["commands"] = [command for (command,) in arg_list]
        paths = SimpleNamespace(stdout="out", stderr="err")
        return [SimpleNamespace(job_id=f"9_{i}", paths=paths) for i in range(len(arg_list))]

    monkeypatch.setattr(slurm_submit, "submit_array", submit_array)
    detection.main(["--ckpt", "x.pt", "--seeds", "3", "4", "--slurm", "--profile", "example"])
    assert [command[-2:] for command in submitted["commands"]] == [["--seed", "3"], ["--seed", "4"]]
    assert "job array of 2 one-task jobs" in capsys.readouterr().out
