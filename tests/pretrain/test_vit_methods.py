"""DINO, SelfPatch, BYOL on ViTs and byol-patch through the one training loop (pretrain/train.py):
tiny runs end to end, exports that load through evaluate's --ckpt path, and exact resume after
SIGKILL (bit-identical weights, optimiser, loss-scaler and centre state)."""

import dataclasses
import json
import signal
import subprocess
import sys

import pytest
import torch

from pretrain.checkpoint import load_checkpoint, load_latest_good
from pretrain.presets import tiny_vit_cpu
from pretrain.train import train
from tests.conftest import REPO_ROOT
from tests.pretrain.test_resume import wait_for_step

pytestmark = pytest.mark.slow

PRESETS = {
    "dino": "tiny_dino_cpu",
    "selfpatch": "tiny_selfpatch_cpu",
    "byol": "tiny_byol_vit_cpu",
    "byol-patch": "tiny_byolpatch_cpu",
}
RUN = {"train_subset_per_class": 8, "epochs": 3, "ckpt_every_min": 0.0, "log_every_steps": 1}


def tiny(method: str, **changes):
    return dataclasses.replace(tiny_vit_cpu(method), **{**RUN, **changes})


def final_state(run_dir) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def assert_same_state(state_a: dict, state_b: dict) -> None:
    """Same step, and every tensor of the networks, probe, optimiser and scaler equal."""
    assert state_a["step"] == state_b["step"]
    for key in ("model", "probe"):
        assert state_a[key].keys() == state_b[key].keys()
        for name, tensor in state_a[key].items():
            assert torch.equal(tensor, state_b[key][name]), f"{key}.{name} differs"
    optimizer_a, optimizer_b = state_a["optimizer"]["state"], state_b["optimizer"]["state"]
    assert optimizer_a.keys() == optimizer_b.keys()
    for index, slots in optimizer_a.items():
        for slot, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(optimizer_b[index][slot]))
    assert state_a.get("scaler") == state_b.get("scaler")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Each method's tiny run (3 epochs x 5 steps), uninterrupted, in-process: {method: run_dir}."""
    runs = {}
    for method in PRESETS:
        run_dir = tmp_path_factory.mktemp(method)
        train(tiny(method), run_dir, "cpu")
        runs[method] = run_dir
    return runs


@pytest.mark.parametrize("method", list(PRESETS))
def test_a_tiny_run_trains_and_exports_a_vit(finished, method):
    run_dir = finished[method]
    state = final_state(run_dir)
    assert state["step"] == 15 and state["config"]["method"] == method
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if line.get("kind") != "step"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    export = torch.load(next((run_dir / "exports").glob("backbone-*.pt")), weights_only=True)
    metadata = export["metadata"]
    assert metadata["arch"] == "vit_tiny_test" and metadata["method"] == method
    assert metadata["cls_token"] is (method != "selfpatch")
    from evaluate.features import load_encoder

    encoder, _ = load_encoder(str(next((run_dir / "exports").glob("backbone-*.pt"))))
    # DINO and SelfPatch export the teacher (as the authors evaluate it), BYOL the online encoder
    prefix = "target_encoder." if method in ("dino", "selfpatch") else "online_encoder."
    assert metadata["network"] == ("teacher" if prefix == "target_encoder." else "online")
    exported = {k: v for k, v in state["model"].items() if k.startswith(prefix)}
    assert exported.keys() and {k.removeprefix(prefix) for k in exported} == set(
        encoder.state_dict()
    )
    assert all(
        torch.equal(encoder.state_dict()[name.removeprefix(prefix)], tensor)
        for name, tensor in exported.items()
    )
    from evaluate.features import _from_training_checkpoint

    from_checkpoint, _ = _from_training_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert all(torch.equal(from_checkpoint[k], v) for k, v in encoder.state_dict().items())
    assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, 32)


def test_the_teacher_follows_the_student_and_the_centre_moves(finished):
    state = final_state(finished["dino"])["model"]
    centre = next(tensor for name, tensor in state.items() if "center" in name)
    assert centre.abs().sum() > 0  # updated from zeros by the teacher's outputs
    student = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("online_encoder.")}
    teacher = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("target_encoder.")}
    assert student.keys() == teacher.keys()
    assert any(not torch.equal(student[name], teacher[name]) for name in student)


def launch_args(run_dir, method: str) -> list[str]:
    flags = {"--" + name.replace("_", "-"): str(value) for name, value in RUN.items()}
    return [
        sys.executable,
        "-m",
        "pretrain.launch",
        "--preset",
        PRESETS[method],
        "--run-dir",
        str(run_dir),
        "--device",
        "cpu",
        *[item for pair in flags.items() for item in pair],
    ]


@pytest.mark.parametrize("method", ["dino", "selfpatch"])
def test_sigkill_then_restart_is_bit_identical(tmp_path, finished, method):
    run_dir = tmp_path / "killed"
    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        launch_args(run_dir, method),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_step(run_dir, process, step=7)  # epoch 2 of 3: the last layer is trained again
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_at = load_latest_good(run_dir)["step"]
    assert 7 <= killed_at < 15, killed_at
    result = subprocess.run(
        [*launch_args(run_dir, method), "--num-workers", "2"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed at step {killed_at}" in result.stderr
    assert_same_state(final_state(run_dir), final_state(finished[method]))


def test_the_last_layer_is_frozen_during_the_first_epoch(tmp_path):
    run_dir = tmp_path / "frozen"
    train(tiny("dino", max_steps=5), run_dir, "cpu")  # exactly the first epoch
    state = final_state(run_dir)["model"]
    start = dataclasses.replace(tiny("dino"))
    from pretrain.methods import build_network
    from pretrain.state import seed_everything

    seed_everything(start.seed)
    initial = build_network(start).state_dict()
    last_layer = [name for name in state if "last_layer" in name and "online" in name]
    assert last_layer
    assert all(torch.equal(state[name], initial[name]) for name in last_layer)
    other = [name for name in state if name.startswith("online_encoder.blocks.0.")]
    assert any(not torch.equal(state[name], initial[name]) for name in other)


def test_fp16_loss_scaling_trains_and_resumes_exactly(tmp_path):
    config = tiny("dino", precision="fp16", epochs=2)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    train(config, reference, "cpu")
    train(dataclasses.replace(config, max_steps=6), resumed, "cpu")
    assert "scaler" in final_state(resumed) and final_state(resumed)["step"] == 6
    train(config, resumed, "cpu")
    assert_same_state(final_state(resumed), final_state(reference))


@pytest.mark.parametrize("flag", ["--image-size", "--local-crop-size"])
def test_a_view_size_that_is_not_whole_patches_is_refused_before_training(tmp_path, flag):
    result = subprocess.run(
        [*launch_args(tmp_path / "run", "dino"), flag, "30"],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: image size 30x30 is not a multiple of the patch size 4")
    assert not (tmp_path / "run" / "checkpoints").exists()
