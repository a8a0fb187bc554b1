"""Weighted kNN equals an independent brute-force reference (Wu et al. 2018, Sec. 3.4); the CLI
end to end on a tiny pretraining run."""

import math

import numpy as np
import pytest
import torch

from evaluate.knn import knn_accuracy
from tests.conftest import run_cli
from tests.evaluate.conftest import only_record
from tests.results.test_bootstrap import assert_intervals_follow_from_examples

KNN = ("--dataset", "synthetic", "--num-workers", "0")


def brute_force(train_x, train_y, test_x, test_y, k, temperature, num_classes):
    """One test image at a time, plain Python/NumPy: cosine, k nearest, exp(sim/T) votes."""
    top1 = top5 = 0
    for query, label in zip(test_x, test_y):
        sims = []
        for row, row_label in zip(train_x, train_y):
            cosine = float(np.dot(query, row) / (np.linalg.norm(query) * np.linalg.norm(row)))
            sims.append((cosine, int(row_label)))
        sims.sort(key=lambda item: -item[0])
        votes = [0.0] * num_classes
        for cosine, row_label in sims[:k]:
            votes[row_label] += math.exp(cosine / temperature)
        ranking = sorted(range(num_classes), key=lambda c: -votes[c])
        top1 += ranking[0] == label
        top5 += label in ranking[:5]
    return 100.0 * top1 / len(test_y), 100.0 * top5 / len(test_y)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_matches_brute_force(temperature):
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 16, generator=generator)
    train_y = torch.arange(230) % 8
    train_x = centres[train_y] + 2.0 * torch.randn(230, 16, generator=generator)
    test_y = torch.arange(40) % 8
    test_x = 3.0 * (centres[test_y] + 2.0 * torch.randn(40, 16, generator=generator))
    results = knn_accuracy(
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes=8,
        ks=(10, 20, 100, 200),
        temperature=temperature,
        chunk_size=7,  # several chunks, the last one partial
    )
    for k in (10, 20, 100, 200):
        expected = brute_force(
            train_x.double().numpy(),
            train_y.numpy(),
            test_x.double().numpy(),
            test_y.numpy(),
            k,
            temperature,
            8,
        )
        assert (results[k]["top1"], results[k]["top5"]) == pytest.approx(expected), k
    if temperature == 0.5:  # at T = 0.07 the nearest few dominate every vote
        assert len({results[k]["top1"] for k in results}) > 1  # k matters on this data


def test_chunking_does_not_change_the_result():
    generator = torch.Generator().manual_seed(1)
    train_x = torch.randn(300, 8, generator=generator)
    test_x = torch.randn(50, 8, generator=generator)
    train_y, test_y = torch.arange(300) % 3, torch.arange(50) % 3
    args = (train_x, train_y, test_x, test_y)
    whole = knn_accuracy(*args, num_classes=3, ks=(10, 200))
    assert knn_accuracy(*args, num_classes=3, ks=(10, 200), chunk_size=1) == whole
    assert whole[10]["top5"] == 100.0  # top-5 of 3 classes


def test_contract_quick_check_knn(tiny_export, tmp_path):
    result = run_cli("evaluate.knn", "--ckpt", str(tiny_export), *KNN, "--records", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(tmp_path)
    assert (record.task.family, record.task.protocol) == ("knn", "knn-cosine-t0.07/1")
    assert set(record.selection["per_k"]) == {"10", "20", "100", "200"}
    assert record.metrics == record.selection["per_k"]["200"]
    assert "knn knn-cosine-t0.07/1 k=200" in result.stdout
    assert_intervals_follow_from_examples(record, ("top1", "top5"))


def test_fast_is_refused_as_a_usage_error(tmp_path):
    """kNN has no cheaper recorded variant, so --fast is not a flag of it (exit 2, usage)."""
    result = run_cli("evaluate.knn", "--ckpt", "random:resnet18", *KNN, "--fast")
    assert result.returncode == 2 and "unrecognized arguments: --fast" in result.stderr
