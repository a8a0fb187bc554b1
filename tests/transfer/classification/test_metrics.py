"""The Table 3 metrics against cases worked out by hand."""

import pytest
import torch

from transfer.classification.metrics import average_precision_11, map11, score


def test_top1_and_mean_per_class_differ_on_unbalanced_classes():
    # class 0: 3 images, all right; class 1: 1 image, wrong -> top-1 3/4, per class (1 + 0) / 2
    scores = torch.tensor([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [2.0, 1.0]])
    labels = torch.tensor([0, 0, 0, 1])
    assert score("top1", scores, labels) == pytest.approx(75.0)
    assert score("mean_per_class", scores, labels) == pytest.approx(50.0)


def test_mean_per_class_averages_only_classes_present():
    scores = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([1, 1, 2])  # class 1: 1 of 2 right; class 2: 1 of 1; class 0 absent
    assert score("mean_per_class", scores, labels) == pytest.approx(75.0)


def test_11_point_ap_by_hand():
    # ranked: +, -, +, -, -  -> recall 0.5 at precision 1 (rank 1), recall 1 at 2/3 (rank 3)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = torch.tensor([1, -1, 1, -1, -1])
    # levels 0..0.5 (6 of them) see precision 1; 0.6..1.0 (5) see 2/3
    assert average_precision_11(scores, labels) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_11_point_ap_interpolates_with_the_best_precision_to_the_right():
    # ranked: -, +, +  -> precision 1/2 at recall 0.5, 2/3 at recall 1: every level sees 2/3
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([-1, 1, 1])
    assert average_precision_11(scores, labels) == pytest.approx(2 / 3)


def test_difficult_images_are_left_out_of_the_ranking():
    scores = torch.tensor([0.95, 0.9, 0.8, 0.7])
    with_difficult = torch.tensor([0, 1, -1, 1])  # a difficult image on top changes nothing
    assert average_precision_11(scores, with_difficult) == pytest.approx(
        average_precision_11(scores[1:], with_difficult[1:])
    )
    assert average_precision_11(scores[1:], with_difficult[1:]) == pytest.approx(
        (6 * 1 + 5 * 2 / 3) / 11
    )


def test_map11_is_the_mean_over_classes_in_percent():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    labels = torch.tensor([[1, -1], [-1, -1], [-1, 1]])  # class 0: AP 1; class 1: AP 1
    assert map11(scores, labels) == pytest.approx(100.0)
    # class 0: its one positive ranks second (precision 1/2 at recall 1, so AP 1/2); class 1: 1
    flipped = torch.tensor([[-1, -1], [1, -1], [-1, 1]])
    assert map11(scores, flipped) == pytest.approx(100 * (0.5 + 1) / 2)


def test_a_class_without_positives_is_refused():
    with pytest.raises(ValueError, match="positive"):
        average_precision_11(torch.tensor([0.3, 0.2]), torch.tensor([-1, 0]))


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric"):
        score("top5", torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
