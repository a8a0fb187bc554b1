"""--log-to tensorboard,wandb: log.jsonl's own numbers in TensorBoard event files (read back with
the tensorboard package's reader) and in an offline Weights & Biases run directory."""

import builtins
import json

import pytest

from pretrain.config import ConfigError
from pretrain.train import train
from results import runlog


def test_tensorboard_and_wandb_get_the_log_lines(tiny_config, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    train(tiny_config(epochs=2, log_to="tensorboard,wandb"), run_dir, "cpu")
    lines = runlog.read_log(run_dir / "log.jsonl")
    steps, epochs = runlog.step_lines(lines), runlog.epoch_lines(lines)
    assert len(steps) == 10 and len(epochs) == 2  # 5 steps per epoch, a line each

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    loss = [(event.step, event.value) for event in events.Scalars("step/loss")]
    assert loss == [(line["step"], pytest.approx(line["loss"], rel=1e-6)) for line in steps]
    top1 = [(event.step, event.value) for event in events.Scalars("epoch/online_probe_test_top1")]
    assert top1 == [
        (line["step"], pytest.approx(line["online_probe_test_top1"])) for line in epochs
    ]
    assert "step/lr" in events.Tags()["scalars"] and "step/images_seen" in events.Tags()["scalars"]

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (data,) = offline.glob("run-*.wandb")
    records = wandb_records(data)
    history = {}  # step -> {key: value}; a step's epoch line joins its step line's row
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {
                item.key or "/".join(item.nested_key): item.value_json
                for item in record.history.item
            }
            history[record.history.step.num] = row
    assert sorted(history) == [line["step"] for line in steps]
    for line in steps:
        assert float(history[line["step"]]["step/loss"]) == pytest.approx(line["loss"])
    for line in epochs:
        row = history[line["step"]]
        assert float(row["epoch/online_probe_test_top1"]) == line["online_probe_test_top1"]
    (run,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["log_to"] == "tensorboard,wandb" and config["dataset"] == "synthetic"


def wandb_records(path):
    """The protobuf records of an offline W&B run file: a 7-byte header (":W&B", 0xBEE1,
    version 0), then LevelDB's log format: 32 KiB blocks of chunks, each a 7-byte header
    (CRC32, little-endian length, type 1 full / 2 first / 3 middle / 4 last) and its bytes."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" and data[4:6] == b"\xe1\xbe"
    offset, chunk, records = 7, b"", []
    while offset + 7 <= len(data):
        if 32768 - offset % 32768 < 7:  # a block's tail too short for a header: padding
            offset += 32768 - offset % 32768
            continue
        length, kind = int.from_bytes(data[offset + 4 : offset + 6], "little"), data[offset + 6]
        if kind == 0:
            break
        chunk += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(chunk))
            chunk = b""
    return records


def test_a_missing_package_is_one_sentence(tiny_config, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ConfigError, match="--log-to wandb needs the wandb package: pip install"):
        train(tiny_config(log_to="wandb"), tmp_path / "run", "cpu")


def test_unknown_destinations_are_refused(tiny_config):
    with pytest.raises(ConfigError, match="log_to takes tensorboard and wandb, not mlflow"):
        tiny_config(log_to="tensorboard,mlflow")
