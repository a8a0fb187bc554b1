"""Nothing from a checkpoint is executed: a pickle whose __reduce__ runs a command is refused in
both readers and the command does not run; the known non-tensor objects load as inert stubs;
any other global is refused with a sentence naming it."""

import argparse
import collections
import os
import pickle

import numpy as np
import pytest
import torch

from evaluate.importers import ForeignCheckpointError, load_foreign
from evaluate.importers.safe_load import (
    InertNamespace,
    load_restricted_pickle,
    load_torch_file,
)
from results.errors import ByolBenchError
from tests.evaluate.importers.writers import dump_dill_style, reference_resnet, trunk_state


class RunsACommand:
    """Unpickling this with plain pickle.load would run `touch <marker>`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_raw_pickle_with_a_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "pretrain_res50x1.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"experiment_state": RunsACommand(marker), "step": 1}, handle, protocol=2)
    with pytest.raises(ForeignCheckpointError, match=r"pickles (posix|os)\.system") as error:
        load_foreign(path)
    assert "allow-list" in str(error.value)
    assert not marker.exists()
    # The same bytes through plain pickle would have run it: the test file is real.
    with open(path, "rb") as handle:
        pickle.load(handle)
    assert marker.exists()


@pytest.mark.parametrize("zip_format", [True, False])  # torch.save's zip and legacy formats
def test_torch_file_with_a_command_is_refused_and_nothing_runs(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pth"
    blob = {"state_dict": {"conv1.weight": torch.zeros(1)}, "args": RunsACommand(marker)}
    torch.save(blob, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ForeignCheckpointError, match=r"pickles the object\(s\) (posix|os)\.system"):
        load_foreign(path)
    assert not marker.exists()


def test_other_globals_are_refused_by_name(tmp_path):
    path = tmp_path / "counter.pth"
    torch.save({"state_dict": {}, "stats": collections.deque([1, 2])}, path)
    with pytest.raises(ForeignCheckpointError, match=r"collections\.deque"):
        load_torch_file(path)
    raw = tmp_path / "eval.pkl"
    raw.write_bytes(b"\x80\x02cbuiltins\neval\nq\x00X\x05\x00\x00\x001+1+1q\x01\x85q\x02Rq\x03.")
    with pytest.raises(ForeignCheckpointError, match=r"builtins\.eval"):
        load_restricted_pickle(raw)


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"a": np.array([{"x": 1}], dtype=object)}, handle, protocol=2)
    with pytest.raises(ForeignCheckpointError, match="Python objects"):
        load_restricted_pickle(path)


def test_namespace_loads_as_an_inert_stub(tmp_path):
    path = tmp_path / "dino.pth"
    torch.save({"args": argparse.Namespace(arch="resnet50", lr=0.03)}, path)
    blob = load_torch_file(path)
    assert type(blob["args"]) is InertNamespace
    assert (blob["args"].arch, blob["args"].lr) == ("resnet50", 0.03)
    assert not isinstance(blob["args"], argparse.Namespace)


def test_dill_namedtuples_become_plain_tuples_without_dill(tmp_path):
    state_type = collections.namedtuple("_ByolExperimentState", ["online_params", "step"])
    state_type.__module__ = "byol.byol_experiment"
    path = tmp_path / "state.pkl"
    dump_dill_style(path, {"experiment_state": state_type({"a": np.ones(2, "f4")}, 3)})
    assert b"dill._dill" in path.read_bytes()
    blob = load_restricted_pickle(path)
    state = blob["experiment_state"]
    assert state._fields == ("online_params", "step") and state.step == 3
    np.testing.assert_array_equal(state.online_params["a"], np.ones(2, "f4"))


def test_errors_are_byol_bench_errors(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(trunk_state(reference_resnet()), path)
    load_foreign(path)  # fine
    assert issubclass(ForeignCheckpointError, ByolBenchError)
