"""transfer/classification/finetune.py: the paper's grid (BYOL v3, App. D.3, as ssl-transfer's
finetune.py builds it), wd / lr as the optimiser's weight decay, Nesterov, BN momentum from the
steps per epoch, selection on val then a retrain on train + val scored on test, exact resume
after a kill, the multi-label (VOC2007) path, and the semi-supervised cells left as they were."""

import argparse
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evaluate import finetune
from evaluate.features import load_encoder
from evaluate.finetune import Cell, build_optimizer, cell_key, trainable_classifier
from evaluate.harness import EvalInputs
from evaluate.transforms import Preprocessing
from pretrain.checkpoint import load_checkpoint
from pretrain.data import SubsetDataset, SyntheticDataset
from pretrain.dist import DistInfo
from results import bootstrap
from slurm import submit as slurm_submit
from transfer.classification import finetune as transfer_finetune
from transfer.classification import finetune_grids
from transfer.classification.finetune_grids import GRIDS, FinetuneGrid, bn_momentum, grid_cells

TINY = FinetuneGrid(lrs=(0.1, 0.01), weight_decays=(0.0, 1e-4), steps=4, batch_size=8)


class Killed(Exception):
    """Stands for SIGKILL in the middle of a fine-tune."""


@pytest.fixture
def tiny_grid(monkeypatch):
    """`--grid tiny`: 2 LRs x 2 weight decays, 4 steps of 8 images."""
    monkeypatch.setitem(GRIDS, "tiny", TINY)
    return "tiny"


@pytest.fixture(scope="module")
def inputs():
    encoder, metadata = load_encoder("random:resnet18", seed=0)
    preprocessing = Preprocessing(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return EvalInputs(
        encoder, metadata, torch.device("cpu"), None, 0.0, preprocessing=preprocessing
    )


def splits(num_images=56, num_classes=4):
    """train (24), val (16), test (16) images of one synthetic set."""
    images = SyntheticDataset(num_images, image_size=32, num_classes=num_classes, seed=1)
    return (
        SubsetDataset(images, range(0, 24)),
        SubsetDataset(images, range(24, 40)),
        SubsetDataset(images, range(40, num_images)),
    )


def run(inputs, grid, work_dir, *parts, metric="top1", label_matrix_of=None, **options):
    train, val, test = parts or splits()
    options = {"seed": 0, "num_workers": 0, "ckpt_every_min": 60.0, **options}
    return transfer_finetune.run_transfer_finetune(
        inputs, train, val, test, metric, label_matrix_of, grid, work_dir, **options
    )


def test_paper_grid_is_7_lrs_by_8_weight_decays_at_20k_steps_of_256():
    paper = GRIDS["paper"]
    assert (paper.steps, paper.batch_size, paper.momentum) == (20_000, 256, 0.9)
    np.testing.assert_allclose(paper.lrs, 10.0 ** np.linspace(-4, -1, 7), rtol=1e-12)
    assert paper.weight_decays[0] == 0.0
    np.testing.assert_allclose(paper.weight_decays[1:], 10.0 ** np.linspace(-6, -3, 7), rtol=1e-12)
    cells = grid_cells(paper)
    assert len(cells) == 56 and len({cell.name for cell in cells}) == 56
    # ssl-transfer's order (lr = logspace(-4, -1).flip(), wd = [0, logspace(-6, -3)]): ties go to
    # the first, the largest LR with no weight decay
    assert (cells[0].lr, cells[0].weight_decay) == (pytest.approx(0.1), 0.0)
    assert [cell.weight_decay for cell in cells[:8]] == sorted(paper.weight_decays)
    assert {cell.steps for cell in cells} == {20_000} and {cell.epochs for cell in cells} == {None}
    assert finetune_grids.protocol_name("paper") == "byol-transfer-finetune/1"
    assert finetune_grids.protocol_name("demo") == "demo-transfer-finetune/1"
    demo = GRIDS["demo"]
    assert (len(demo.lrs), len(demo.weight_decays)) == (2, 2) and demo.steps < 100
    assert demo.lrs == (0.4, 0.1) and demo.weight_decays == (0.0, 1e-4)


def setup_for(inputs, train_size, batch_size=8, **grid_changes):
    """The grid setup of a `train_size`-image train set (make_setup, as run_transfer_finetune)."""
    images = SyntheticDataset(train_size + 8, image_size=32, num_classes=4, seed=2)
    train, val = SubsetDataset(images, range(train_size)), SubsetDataset(images, range(8))
    grid = dataclasses.replace(TINY, batch_size=batch_size, **grid_changes)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(GRIDS, "tiny", grid)
        return transfer_finetune.make_setup(
            train,
            val,
            torch.tensor(val.targets),
            "val_top1",
            inputs=inputs,
            metric="top1",
            grid_name="tiny",
            seed=0,
            num_workers=0,
            precision="fp32",
            info=DistInfo(),
            ckpt_every_min=60.0,
            key={},
        )


def test_weight_decay_is_divided_by_the_lr_and_sgd_is_nesterov(inputs):
    """ssl-transfer's finetune.py: grid = [(lr, wd / lr)], SGD(lr, momentum=0.9, nesterov=True,
    weight_decay=wd / lr); at batch 256 the LR is the grid's, elsewhere scaled by batch / 256."""
    setup = setup_for(inputs, 40, batch_size=256)
    model = nn.Linear(3, 2)
    for cell in grid_cells(GRIDS["paper"]):
        (group,) = build_optimizer(model, cell, setup).param_groups
        assert group["weight_decay"] == pytest.approx(cell.weight_decay / cell.lr, rel=1e-12)
        assert group["nesterov"] is True and group["momentum"] == 0.9
    small_batch = setup_for(inputs, 40, batch_size=16)
    (group,) = build_optimizer(
        model, Cell(0.01, weight_decay=1e-5, steps=4), small_batch
    ).param_groups
    assert small_batch.lr_scale == 16 / 256
    assert group["weight_decay"] == pytest.approx(1e-5 / (0.01 * 16 / 256), rel=1e-12)


def test_bn_momentum_follows_the_steps_per_epoch(inputs):
    """BYOL v3, App. D.3: TF decay max(1 - 10/s, 0.9), i.e. PyTorch momentum 1 - decay."""
    for steps in (1, 50, 100, 101, 266, 20_000):
        assert bn_momentum(steps) == pytest.approx(1 - max(1 - 10 / steps, 0.9), abs=1e-12)
    assert bn_momentum(266) == pytest.approx(10 / 266)  # Food-101: 68,175 / 256 -> 267 steps
    setup = setup_for(inputs, 808)  # 101 steps of 8 per epoch
    assert setup.bn_momentum == pytest.approx(10 / 101)
    norms = [m for m in trainable_classifier(setup).modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 20 and all(m.momentum == pytest.approx(10 / 101) for m in norms)
    small = setup_for(inputs, 40)  # 5 steps per epoch: decay 0.9, PyTorch's default 0.1
    assert small.bn_momentum == pytest.approx(0.1)


def test_cells_train_with_that_bn_momentum(inputs, tiny_grid, tmp_path, monkeypatch):
    images = SyntheticDataset(824, image_size=32, num_classes=4, seed=2)
    train, val = SubsetDataset(images, range(808)), SubsetDataset(images, range(808, 816))
    momenta, real_step = set(), finetune.train_step

    def recording_step(model, *args, **kwargs):
        momenta.update(m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        return real_step(model, *args, **kwargs)

    monkeypatch.setattr(finetune, "train_step", recording_step)
    run(inputs, tiny_grid, tmp_path, train, val, SubsetDataset(images, range(816, 824)), cell=0)
    assert momenta == {10 / 101}  # 808 images, batch 8: 101 steps per epoch


def test_the_best_val_cell_is_retrained_on_train_and_val_and_scored_on_test(
    inputs, tiny_grid, tmp_path, monkeypatch
):
    """The val and test rankings are forced to disagree; ties go to the first listed cell."""
    val_top1 = {(0.1, 0.0): 40.0, (0.1, 1e-4): 70.0, (0.01, 0.0): 70.0, (0.01, 1e-4): 10.0}
    calls = []

    def fake_cell(cell, setup, cell_dir):
        calls.append((cell, setup, cell_dir))
        key = setup.heldout_keys[0]
        value = val_top1[cell.lr, cell.weight_decay] if key == "val_top1" else 55.0
        return {"lr": cell.lr, "steps": 4, "diverged_at_step": None, key: value}

    monkeypatch.setattr(transfer_finetune, "run_cell", fake_cell)
    monkeypatch.setattr(transfer_finetune, "trained_classifier", lambda *args: "final network")
    scores = torch.eye(4)[torch.arange(16) % 4]  # [16, 4]: class i % 4 for image i
    monkeypatch.setattr(transfer_finetune, "classifier_scores", lambda model, *args: scores)
    train, val, test = splits()
    metrics, selection, (intervals, examples) = run(inputs, tiny_grid, tmp_path, train, val, test)
    assert set(intervals) == {"top1"} and examples["count"] == len(test) == 16
    assert len(calls) == 5 and metrics == {"test_top1": 55.0}
    assert (selection["lr"], selection["weight_decay"]) == (0.1, 1e-4)  # first of the two 70s
    assert selection["weight_decay_applied"] == pytest.approx(1e-4 / (0.1 * 8 / 256))
    assert [c["val_top1"] for c in selection["candidates"]] == [40.0, 70.0, 70.0, 10.0]
    for _, setup, _ in calls[:4]:
        assert len(setup.train_images) == 24 and setup.heldout_images is val
    cell, final, final_dir = calls[4]
    assert (cell.lr, cell.weight_decay) == (0.1, 1e-4)
    assert len(final.train_images) == 24 + 16 and final.heldout_images is test
    assert [final.train_images.targets[i] for i in (0, 24)] == [train.targets[0], val.targets[0]]
    assert final_dir == tmp_path / f"final-{cell.name}"
    assert selection["final_run_dir"] == str(final_dir.resolve())
    assert selection["images"] == {"train": 24, "val": 16, "trainval": 40, "test": 16}
    with pytest.raises(ValueError, match="the 11-point mAP .VOC2007. needs one"):
        run(inputs, tiny_grid, tmp_path, train, val, test, metric="map11")
    with pytest.raises(ValueError, match="metric top1 with a label matrix"):
        run(inputs, tiny_grid, tmp_path, train, val, test, label_matrix_of=lambda images: None)


def test_cells_run_alone_then_the_final_call_only_retrains(
    inputs, tiny_grid, tmp_path, monkeypatch
):
    """SLURM: each array task runs `cell=K`; the final job reads them back and retrains one."""
    results = [run(inputs, tiny_grid, tmp_path, cell=index) for index in range(4)]
    assert [r["cell"] for r in results] == [cell.name for cell in grid_cells(TINY)]
    assert all(0 <= r["val_top1"] <= 100 and r["steps"] == 4 for r in results)
    steps, real_step = [], finetune.train_step
    monkeypatch.setattr(
        finetune, "train_step", lambda *a, **k: steps.append(1) or real_step(*a, **k)
    )
    metrics, selection, (intervals, examples) = run(inputs, tiny_grid, tmp_path)
    assert len(steps) == 4  # the final retrain only
    # the interval's bits are the final network's test hits: they give its recorded test score
    bits = bootstrap.unpack_bits(examples["correct"]["top1"], examples["count"])
    assert 100 * bits.mean() == pytest.approx(metrics["test_top1"])
    assert intervals["top1"] == pytest.approx(list(bootstrap.accuracy_interval(bits)), abs=1e-3)
    assert [c["val_top1"] for c in selection["candidates"]] == [r["val_top1"] for r in results]
    assert 0 <= metrics["test_top1"] <= 100
    final = load_checkpoint(tmp_path / f"final-{selection_name(selection)}/checkpoints/last.pt")
    assert final["step"] == 4
    with pytest.raises(ValueError, match="--cell 4: the grid has cells 0..3"):
        run(inputs, tiny_grid, tmp_path, cell=4)


def selection_name(selection):
    return Cell(selection["lr"], weight_decay=selection["weight_decay"], steps=4).name


def test_resume_after_a_kill_gives_the_same_weights(inputs, tiny_grid, tmp_path, monkeypatch):
    """A step-length cell checkpoints on time (here: every step) and at its end; killed at its
    third step and run again, it ends with the uninterrupted cell's weights."""
    uninterrupted = run(inputs, tiny_grid, tmp_path / "a", cell=1, ckpt_every_min=0.0)
    calls, real_step = [], finetune.train_step

    def dies_at_call_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return real_step(*args, **kwargs)

    monkeypatch.setattr(finetune, "train_step", dies_at_call_3)
    with pytest.raises(Killed):
        run(inputs, tiny_grid, tmp_path / "b", cell=1, ckpt_every_min=0.0)
    name = grid_cells(TINY)[1].name
    assert load_checkpoint(tmp_path / "b" / name / "checkpoints" / "last.pt")["step"] == 2
    monkeypatch.setattr(finetune, "train_step", real_step)
    resumed = run(inputs, tiny_grid, tmp_path / "b", cell=1, ckpt_every_min=0.0)
    assert resumed["val_top1"] == uninterrupted["val_top1"]
    final = [
        load_checkpoint(tmp_path / run_dir / name / "checkpoints" / "last.pt")
        for run_dir in ("a", "b")
    ]
    assert final[0]["step"] == final[1]["step"] == 4
    for key, tensor in final[0]["model"].items():
        assert torch.equal(tensor, final[1]["model"][key]), key


def test_voc_like_labels_train_one_sigmoid_per_class_and_score_map11(
    inputs, tiny_grid, tmp_path, monkeypatch
):
    """A label matrix in {1, -1, 0}: targets [B, C] in {0, 1} (difficult = negative, as
    ssl-transfer), binary cross-entropy per class, the 11-point mAP on val and test."""
    train, val, test = splits(num_images=56, num_classes=4)
    rng = np.random.default_rng(0)
    matrices = {}
    for part in (train, val, test):
        matrix = rng.choice([1, -1, -1, 0], size=(len(part), 3))
        matrix[:2] = [[1, 1, 1], [0, 0, 0]]  # every class has a positive and a difficult image
        matrices[id(part)] = torch.tensor(matrix)
    seen, real_step = [], finetune.train_step

    def recording_step(model, optimizer, images, labels, lr, setup):
        seen.append(labels.clone())
        return real_step(model, optimizer, images, labels, lr, setup)

    monkeypatch.setattr(finetune, "train_step", recording_step)
    matrix_of = lambda images: matrices[id(images)]  # noqa: E731
    metrics, selection, (intervals, _) = run(
        inputs, tiny_grid, tmp_path, train, val, test, metric="map11", label_matrix_of=matrix_of
    )
    assert set(metrics) == {"test_map11"} and 0 <= metrics["test_map11"] <= 100
    assert 0 <= intervals["map11"][0] <= intervals["map11"][1] <= 100
    assert all(0 <= c["val_map11"] <= 100 for c in selection["candidates"])
    assert len(seen) == 5 * 4 and all(b.shape == (8, 3) and b.dtype == torch.float32 for b in seen)
    assert set(torch.cat(seen).unique().tolist()) == {0.0, 1.0}
    targets = transfer_finetune.MultiLabelImages(train, matrices[id(train)])
    assert targets.load(1)[1].tolist() == [0.0, 0.0, 0.0]  # difficult: a negative
    assert targets.load(0)[1].tolist() == [1.0, 1.0, 1.0]
    final = load_checkpoint(tmp_path / f"final-{selection_name(selection)}/checkpoints/last.pt")
    assert final["model"]["head.weight"].shape == (3, 512)


def test_multi_label_loss_is_the_mean_binary_cross_entropy_per_class():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.7, 1.5]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    expected = -(
        targets * torch.log(torch.sigmoid(logits))
        + (1 - targets) * torch.log(1 - torch.sigmoid(logits))
    ).mean()
    assert finetune.classification_loss(logits, targets).item() == pytest.approx(expected.item())
    classes = torch.tensor([0, 2])
    assert torch.equal(
        finetune.classification_loss(logits, classes), F.cross_entropy(logits, classes)
    )


def test_semi_supervised_cells_keep_their_names_and_identity():
    """A cell of weight decay 0 stated in epochs is named and keyed as before the transfer grid,
    so the existing cell dirs of evaluate.semisup still resume."""
    cell = Cell(0.05, 30)
    assert cell.name == "lr0.05-ep30" and cell.total_steps(7) == 210
    setup = type("Setup", (), {"key": {"seed": 0}})()
    assert cell_key(cell, setup) == {"seed": 0, "lr": 0.05, "epochs": 30}
    transfer = Cell(0.001, weight_decay=1e-5, steps=20_000)
    assert transfer.name == "lr0.001-wd1e-05-steps20000" and transfer.total_steps(7) == 20_000
    key = cell_key(transfer, setup)
    assert (key["weight_decay_value"], key["steps"], key["epochs"]) == (1e-5, 20_000, None)
    with pytest.raises(ValueError):
        Cell(0.1, 30, steps=100)


def test_slurm_runs_one_array_task_per_cell_then_a_final_job_that_retrains(monkeypatch, capsys):
    """evaluate/grid_jobs.py: `command --cell K` per cell, then `command` afterok on them all,
    with the profile's full resources (it retrains the winner, unlike semisup's final job)."""
    submitted = {}

    def fake_job(job_id):
        return SimpleNamespace(job_id=job_id, paths=SimpleNamespace(stdout="out", stderr="err"))

    def submit_array(profile, fn, arg_list, name, folder=None, after=()):
        submitted["array"] = [args[0] for args in arg_list]
        submitted["array_after"], submitted["array_profile"] = list(after), profile
        return [fake_job(f"7_{index}") for index in range(len(arg_list))]

    def submit(profile, fn, command, name, folder=None, after=()):
        submitted.update(final=command, final_after=list(after), final_profile=profile)
        return fake_job("8")

    monkeypatch.setattr(slurm_submit, "submit_array", submit_array)
    monkeypatch.setattr(slurm_submit, "submit", submit)
    parser = argparse.ArgumentParser()
    slurm_submit.add_slurm_arguments(parser)
    args = parser.parse_args(["--slurm", "--profile", "local", "--after", "5"])
    command = ["python", "-m", "transfer.classification", "--dataset", "dtd"]
    job = transfer_finetune.submit_finetune_grid(args, command, "paper", "transfer-finetune")
    assert job.job_id == "8" and len(submitted["array"]) == 56
    for index, cell_command in enumerate(submitted["array"]):
        assert cell_command == [*command, "--cell", str(index)]
    assert submitted["array_after"] == ["5"] and submitted["final"] == command
    assert submitted["final_after"] == [f"7_{index}" for index in range(56)]
    assert submitted["final_profile"] == submitted["array_profile"]  # not single_task
    assert "submitted SLURM job 8" in capsys.readouterr().out
