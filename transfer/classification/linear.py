"""Protocol `byol-transfer-linear/1`: logistic regression on frozen features (BYOL v3, App. D.2).

Features: the encoder's pooled representation (eval mode: BN statistics are not recomputed) of
each image resized on its shorter side to 224 (bicubic) and centre-cropped to 224 (SimCLR B.8.1;
BYOL names no crop), normalised with the checkpoint's mean and std, no augmentation. They are
extracted once per split and cached (evaluate/features.py): one backbone pass serves the whole
sweep. The classifier is an l2-regularised multinomial logistic regression fitted by L-BFGS
(VOC2007: one binary classifier per class); the penalty is chosen among 45 log-spaced values in
[1e-6, 1e5] on the validation split (transfer/classification/splits.py), then the classifier is
fitted again on train + validation at that penalty and scored on test with the data set's metric
(transfer/classification/metrics.py). The fits are transfer/classification/logistic.py's.
"""

from __future__ import annotations

import logging

import torch

from evaluate import harness
from transfer.classification import logistic
from transfer.classification.metrics import score, score_uncertainty
from transfer.classification.splits import SelectionSplits

PROTOCOL = "byol-transfer-linear/1"
CUSTOM_PROTOCOL = "byol-transfer-linear-custom/1"  # another penalty grid, size or iteration cap
IMAGE_SIZE = 224  # BYOL v3, App. D.2
log = logging.getLogger(__name__)


def split_features(inputs, release, splits: SelectionSplits, batch_size: int, workers: int):
    """(train, val, test) as (features [N, D], labels): labels [N] class indices, or the label
    matrix [N, C] in {1, -1, 0} for a multi-label release (VOC2007). The creators' training split
    is extracted once, also when the validation images are held out of it."""

    def extract(images, split):
        features, targets = harness.features(inputs, images, split, batch_size, workers)
        matrix = getattr(images, "label_matrix", None)
        return features, (matrix.long() if matrix is not None else targets)

    test = extract(release.test, "test")
    if splits.train_indices is None:
        return extract(splits.train, "train"), extract(splits.val, "val"), test
    features, labels = extract(release.train, "train")
    train, val = torch.tensor(splits.train_indices), torch.tensor(splits.val_indices)
    return (features[train], labels[train]), (features[val], labels[val]), test


def run_linear(
    inputs, release, splits: SelectionSplits, *, penalties, max_iter, batch_size, workers
) -> tuple[dict, dict, tuple]:
    """(metrics, selection, (intervals, examples)) of the protocol on one release: the interval
    is the bootstrap of the refitted classifier's test scores (metrics.score_uncertainty)."""
    train, val, test = split_features(inputs, release, splits, batch_size, workers)
    test = (test[0], test[1].cpu())
    multilabel = release.metric == "map11"
    num_classes = len(release.train.classes)
    device = inputs.device

    def fit(x, y, penalty, init=None):
        if multilabel:
            return logistic.fit_one_vs_rest(x, y, penalty, init=init, max_iter=max_iter)
        return logistic.fit_multinomial(x, y, num_classes, penalty, init=init, max_iter=max_iter)

    def val_score(scores: torch.Tensor, labels: torch.Tensor) -> float:
        return score(release.metric, scores, labels)

    train, val = [(x.to(device), y.to(device)) for x, y in (train, val)]
    path = logistic.penalty_path(fit, *train, *val, penalties, val_score)
    best = path.best_penalty
    train_val_x, train_val_y = torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]])
    final = fit(train_val_x, train_val_y, best, init=path.best_model)
    test_scores = logistic.decision_scores(final, test[0].to(device)).cpu()
    test_score = score(release.metric, test_scores, test[1])
    selection = {
        "penalty": best,
        "candidates": [
            {"penalty": p, f"val_{release.metric}": s, "iterations": i}
            for p, s, i in zip(path.penalties, path.scores, path.iterations)
        ],
        "chosen_on": splits.val_source,
        "split_file": splits.split_file,
        "split_sha256": splits.split_sha256,
        "refit_on": "train + val",
        "refit_iterations": final.iterations,
        "refit_converged": final.converged,
        "images": {"train": len(train[0]), "val": len(val[0]), "test": len(test[0])},
        "classes": num_classes,
        "feature_dim": int(train[0].shape[1]),
    }
    log.info(
        "%s: penalty %g chosen on %s (val %s %.2f); test %s %.2f",
        release.name,
        best,
        splits.val_source,
        release.metric,
        max(path.scores),
        release.metric,
        test_score,
    )
    uncertainty = score_uncertainty(release.metric, test_scores, test[1])
    return {release.metric: test_score}, selection, uncertainty
