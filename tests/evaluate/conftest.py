"""Fixtures for the evaluation tests: one tiny pretraining run per session, a private cache."""

import pytest

from results.record import read_records
from tests.conftest import run_quick_check


@pytest.fixture(autouse=True)
def feature_cache(tmp_path_factory, monkeypatch):
    """Every test (and every CLI it starts) caches features in a session-private directory."""
    cache = tmp_path_factory.getbasetemp() / "feature-cache"
    monkeypatch.setenv("BYOL_BENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The contract's quick check: `pretrain.launch --preset tiny_cpu --dataset synthetic
    --run-dir DIR --max-steps 20`; returns DIR (with exports/, checkpoints/last.pt)."""
    run_dir = tmp_path_factory.mktemp("tiny-run") / "tiny"
    run_quick_check(run_dir, 20)
    return run_dir


@pytest.fixture(scope="session")
def tiny_export(tiny_run):
    (export,) = (tiny_run / "exports").glob("backbone-*.pt")
    return export


def only_record(records_dir):
    """The one record in `records_dir`, checked complete."""
    (record,) = read_records(records_dir)  # validated on read
    assert record.status == "complete" and record.kind == "eval"
    return record
