"""mIoU from the confusion matrix: perfect predictions, a case computed by hand, ignore pixels."""

import pytest
import torch

from transfer.segmentation.metrics import confusion, mean_iou, per_class_iou


def test_ground_truth_as_prediction_gives_one():
    labels = torch.randint(0, 21, (2, 37, 41))
    labels[:, :3] = 255  # VOC's boundary label
    matrix = sum(
        confusion(label, label.clone().masked_fill(label == 255, 0), 21) for label in labels
    )
    assert mean_iou(matrix) == 1.0


def test_hand_made_case():
    # class 0: TP 1, FN 1 (a 0 predicted as 1), FP 0 -> IoU 1/2
    # class 1: TP 2, FP 2 (a 0 and a 2 predicted as 1) -> IoU 2/4
    # class 2: TP 0, FN 1 -> IoU 0 (its prediction on the 255 pixel does not count)
    labels = torch.tensor([0, 0, 1, 1, 2, 255])
    predictions = torch.tensor([0, 1, 1, 1, 1, 2])
    matrix = confusion(labels, predictions, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    iou = per_class_iou(matrix)
    assert iou[:3].tolist() == pytest.approx([1 / 2, 1 / 2, 0.0])
    assert torch.isnan(iou[3])  # class 3 occurs nowhere: left out of the mean
    assert mean_iou(matrix) == pytest.approx(1 / 3)


def test_matrices_add_over_images_and_bad_labels_are_refused():
    a, b = torch.tensor([0, 1]), torch.tensor([1, 1])
    total = confusion(a, a, 2) + confusion(b, torch.tensor([0, 1]), 2)
    assert mean_iou(total) == pytest.approx((1 / 2 + 2 / 3) / 2)  # 0: TP1 FP1; 1: TP2 FN1
    with pytest.raises(ValueError, match="outside"):
        confusion(torch.tensor([5]), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="no labelled pixels"):
        mean_iou(confusion(torch.tensor([255]), torch.tensor([0]), 2))


def test_per_image_counts_sum_to_the_split_miou_and_bootstrap_like_whole_matrices():
    """The three K-vectors per image give the same mIoU as summed confusion matrices, for the
    whole split and for any resample (the interval's statistic), checked against matrices."""
    import numpy as np

    from results import bootstrap
    from transfer.segmentation.metrics import image_counts, mean_iou_of_counts

    generator = torch.Generator().manual_seed(0)
    matrices = torch.randint(0, 50, (12, 4, 4), generator=generator)
    matrices[:, 3, :] = 0  # class 3 never in the ground truth of these images
    counts = torch.stack([image_counts(matrix) for matrix in matrices]).numpy()
    assert mean_iou_of_counts(counts.sum(0)) == pytest.approx(mean_iou(matrices.sum(0)))
    by_counts = bootstrap.interval(lambda index: mean_iou_of_counts(counts[index].sum(0)), 12)
    rng, whole = np.random.default_rng(0), []
    for _ in range(1000):
        whole.append(mean_iou(matrices[torch.from_numpy(rng.integers(0, 12, 12))].sum(0)))
    assert by_counts == pytest.approx(tuple(np.percentile(whole, [2.5, 97.5])), abs=1e-12)
