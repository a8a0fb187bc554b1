"""pretrain/rundir.py: the run directory of all four loops refuses another run's identity (naming
the differing fields), and the one non-finite check names step and lr."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evaluate.finetune import Cell, cell_key
from pretrain import rundir
from pretrain.config import RUNTIME_FIELDS
from pretrain.dist import DistInfo
from pretrain.rundir import ConfigMismatchError, NonFiniteLossError
from tests.transfer.segmentation.layouts import make_voc
from transfer.detection.protocols import moco_detectron2_c4_24k
from transfer.detection.train import RunSettings
from transfer.segmentation.data import build_segmentation_set
from transfer.segmentation.engine import Job
from transfer.segmentation.protocols import voc12aug_fcn


def pretraining_identities(tmp_path: Path, tiny_config) -> tuple[dict, dict, str]:
    return dataclasses.asdict(tiny_config()), dataclasses.asdict(tiny_config(seed=1)), "seed"


def finetune_identities(tmp_path: Path, tiny_config) -> tuple[dict, dict, str]:
    setup = SimpleNamespace(key={"weights_sha256": "0" * 64, "fraction": 1, "seed": 0})
    return cell_key(Cell(0.1, 30), setup), cell_key(Cell(0.2, 30), setup), "lr"


def detection_identities(tmp_path: Path, tiny_config) -> tuple[dict, dict, str]:
    def settings(protocol) -> RunSettings:  # as transfer/detection/cli.py builds it
        identity = {"protocol": dataclasses.asdict(protocol), "seed": 0}
        return RunSettings(tmp_path, identity, torch.device("cpu"))

    protocol = moco_detectron2_c4_24k()
    shorter = dataclasses.replace(protocol, max_iters=100)
    return settings(protocol).identity, settings(shorter).identity, "protocol"


def segmentation_identities(tmp_path: Path, tiny_config) -> tuple[dict, dict, str]:
    voc = str(make_voc(tmp_path / "voc", train=2, val=1))
    job = Job(
        protocol=voc12aug_fcn(),
        lr=0.01,
        seed=0,
        train_set=build_segmentation_set("voc2012", voc, "train_aug"),
        eval_set=build_segmentation_set("voc2012", voc, "val"),
        run_dir=tmp_path / "job",
        weights_sha256="0" * 64,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        device="cpu",
    )
    return job.identity(), dataclasses.replace(job, weights_sha256="1" * 64).identity(), "weights"


def depth_identities(tmp_path: Path, tiny_config) -> tuple[dict, dict, str]:
    from tests.transfer.depth.layouts import pattern_images, write_labelled_mat
    from transfer.depth.data import read_labelled
    from transfer.depth.engine import Job as DepthJob
    from transfer.depth.protocols import paper_depth

    images, depths = pattern_images(3, height=32, width=48)
    write_labelled_mat(tmp_path / "nyu", images, depths, [1, 2], [3])
    job = DepthJob(
        protocol=paper_depth(),
        lr=0.16,
        seed=0,
        train_set=read_labelled(tmp_path / "nyu", "train"),
        eval_set=read_labelled(tmp_path / "nyu", "test"),
        run_dir=tmp_path / "job",
        weights_sha256="0" * 64,
        device="cpu",
    )
    return job.identity(), dataclasses.replace(job, lr=0.01).identity(), "lr"


@pytest.mark.parametrize(
    ("identities", "what"),
    [
        (pretraining_identities, "pretraining run"),
        (finetune_identities, "fine-tune"),
        (detection_identities, "detection run"),
        (segmentation_identities, "segmentation run"),
        (depth_identities, "depth run"),
    ],
)
def test_a_different_identity_is_refused_naming_the_field(tmp_path, tiny_config, identities, what):
    mine, other, field = identities(tmp_path, tiny_config)
    run_dir = tmp_path / "run"
    assert rundir.claim(run_dir, mine, what=what) == run_dir
    written = (run_dir / rundir.IDENTITY_FILE).read_text()
    assert json.loads(written) == rundir.as_plain(mine)
    rundir.claim(run_dir, mine, what=what)  # the same identity resumes
    with pytest.raises(
        ConfigMismatchError, match=rf"holds a different {what} \({field}[^:]*: run has"
    ):
        rundir.claim(run_dir, other, what=what)
    assert (run_dir / rundir.IDENTITY_FILE).read_text() == written  # left as it was


def test_runtime_fields_may_change_between_a_run_and_its_resumption(tmp_path, tiny_config):
    run_dir = tmp_path / "run"
    rundir.claim(run_dir, dataclasses.asdict(tiny_config()), what="run", ignore=RUNTIME_FIELDS)
    again = dataclasses.asdict(tiny_config(num_workers=7, max_steps=3))
    rundir.claim(run_dir, again, what="run", ignore=RUNTIME_FIELDS)
    with pytest.raises(ConfigMismatchError, match="num_workers: run has"):
        rundir.claim(run_dir, again, what="run")


def test_only_rank_zero_writes_the_identity(tmp_path):
    rundir.claim(tmp_path / "run", {"a": 1}, what="run", info=DistInfo(rank=1, world_size=2))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("loss", [math.nan, math.inf, torch.tensor(-math.inf)])
def test_check_finite_names_step_and_lr_and_the_kept_checkpoint(tmp_path, loss):
    with pytest.raises(NonFiniteLossError, match=r"at step 12 \(lr 0\.025\)") as error:
        rundir.check_finite(loss, step=12, lr=0.025, run_dir=tmp_path)
    assert (error.value.step, error.value.lr) == (12, 0.025)
    assert f"last good checkpoint in {tmp_path / 'checkpoints'} is kept" in str(error.value)
    rundir.check_finite(torch.tensor(3.5), step=12, lr=0.025, run_dir=tmp_path)  # finite: no-op


def test_save_and_resume_fall_back_to_previous(tmp_path):
    assert rundir.resume(tmp_path) is None
    rundir.save(tmp_path, {"step": 1, "w": torch.ones(2)})
    rundir.save(tmp_path, {"step": 2, "w": torch.zeros(2)}, DistInfo(rank=1, world_size=2))
    assert rundir.resume(tmp_path)["step"] == 1  # rank 1 wrote nothing
    rundir.save(tmp_path, {"step": 2, "w": torch.zeros(2)})
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"damaged")
    assert rundir.resume(tmp_path)["step"] == 1  # previous.pt
