"""The L-BFGS logistic regression of byol-transfer-linear/1 against scikit-learn's
LogisticRegression(C = 1 / penalty), the reference implementation's classifier (ssl-transfer
linear.py), on small generated problems."""

from functools import partial

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from results.errors import ByolBenchError
from transfer.classification.logistic import (
    PENALTIES,
    LogisticInputError,
    decision_scores,
    fit_multinomial,
    fit_one_vs_rest,
    penalty_path,
)
from transfer.classification.metrics import map11, top1

CLASSES = 4
TIGHT = 1e-8  # both solvers' gradient tolerance where coefficients are compared


def blobs(rows: int, dim: int = 20, seed: int = 0, dtype=torch.float64):
    """Non-negative features around 4 class means (like post-ReLU features), and labels."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(CLASSES, dim, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(0, CLASSES, (rows,), generator=generator)
    features = (means[labels] + torch.randn(rows, dim, generator=generator)).relu()
    return features.to(dtype), labels


def sklearn_fit(x, y, penalty, tol=TIGHT):
    return LogisticRegression(C=1.0 / penalty, tol=tol, max_iter=10_000).fit(x.numpy(), y.numpy())


def sum_objective(weight, bias, x, y, penalty):
    """sum_i CE_i + penalty/2 ||W||^2, scikit-learn's objective times N."""
    logits = x @ weight.T + bias
    data = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    return float(data + 0.5 * penalty * (weight**2).sum())


@pytest.mark.parametrize("penalty", [1e-3, 1e-1, 10.0])
def test_multinomial_matches_scikit_learn(penalty):
    x, y = blobs(300)
    x_test, y_test = blobs(200, seed=1)
    ours = fit_multinomial(x, y, CLASSES, penalty, tol=TIGHT)
    theirs = sklearn_fit(x, y, penalty)
    assert ours.converged
    scale = np.abs(theirs.coef_).max()
    # 0.1% of the largest coefficient: at the weak penalty (ill-conditioned) two solvers stopped
    # by the same gradient rule differ by ~1e-4 of it, at the others by < 1e-5
    np.testing.assert_allclose(ours.weight.numpy(), theirs.coef_, atol=1e-3 * scale)
    np.testing.assert_allclose(ours.bias.numpy(), theirs.intercept_, atol=1e-3 * scale)
    mine = sum_objective(ours.weight, ours.bias, x, y, penalty)
    reference = sum_objective(
        torch.from_numpy(theirs.coef_), torch.from_numpy(theirs.intercept_), x, y, penalty
    )
    assert mine <= reference * (1 + 1e-7)  # a minimiser as good, to the rounding of the fits
    for features in (x, x_test):
        predicted = decision_scores(ours, features).argmax(1).numpy()
        np.testing.assert_array_equal(predicted, theirs.predict(features.numpy()))
    assert top1(decision_scores(ours, x_test), y_test) == pytest.approx(
        100 * theirs.score(x_test.numpy(), y_test.numpy())
    )


def test_float32_features_at_the_default_tolerance_predict_like_scikit_learn():
    x, y = blobs(300, dtype=torch.float32)
    x_test, y_test = blobs(200, seed=1, dtype=torch.float32)
    ours = fit_multinomial(x, y, CLASSES, 1.0)  # tol 1e-4, scikit-learn's default
    theirs = LogisticRegression(C=1.0).fit(x.numpy(), y.numpy())
    assert ours.converged and ours.weight.dtype == torch.float64
    scores = decision_scores(ours, x_test)
    assert scores.dtype == torch.float32 and scores.shape == (200, CLASSES)
    agree = (scores.argmax(1).numpy() == theirs.predict(x_test.numpy())).mean()
    assert agree >= 0.99
    assert abs(top1(scores, y_test) - 100 * theirs.score(x_test.numpy(), y_test.numpy())) <= 0.5


@pytest.mark.parametrize("penalty", [1e-2, 1.0])
def test_one_vs_rest_matches_binary_scikit_learn_per_class(penalty):
    x, y = blobs(300)
    generator = torch.Generator().manual_seed(5)
    labels = torch.where(y[:, None] == torch.arange(CLASSES), 1, -1)
    labels[torch.rand(300, CLASSES, generator=generator) < 0.1] = 0  # VOC's "difficult"
    ours = fit_one_vs_rest(x, labels, penalty, tol=TIGHT)
    assert ours.converged and ours.weight.shape == (CLASSES, 20) and ours.kind == "one-vs-rest"
    scores = decision_scores(ours, x)
    for c in range(CLASSES):
        # the reference trains each class on (label == 1): difficult counts as negative
        theirs = sklearn_fit(x, labels[:, c] == 1, penalty)
        scale = np.abs(theirs.coef_).max()
        np.testing.assert_allclose(ours.weight[c].numpy(), theirs.coef_[0], atol=1e-4 * scale)
        np.testing.assert_allclose(ours.bias[c].item(), theirs.intercept_[0], atol=1e-4 * scale)
        np.testing.assert_allclose(
            scores[:, c].numpy(), theirs.decision_function(x.numpy()), atol=1e-3 * scale
        )


def test_path_picks_the_penalty_with_the_best_validation_score():
    x, y = blobs(300)
    x_val, y_val = blobs(150, seed=2)
    penalties = tuple(float(p) for p in np.logspace(-2, 4, 7))
    fit = partial(fit_multinomial, num_classes=CLASSES)
    path = penalty_path(fit, x, y, x_val, y_val, penalties, score_fn=top1, progress=False)
    assert path.penalties == penalties and len(path.scores) == 7 and all(path.converged)
    assert path.best_score == max(path.scores)
    assert path.best_penalty == max(
        p for p, s in zip(penalties, path.scores) if s == max(path.scores)
    )
    assert path.best_model.penalty == path.best_penalty and path.best_model.solver_state is None
    assert top1(decision_scores(path.best_model, x_val), y_val) == path.best_score
    assert len(set(path.scores)) > 1  # the grid spans under- and over-regularised fits


def test_one_vs_rest_path_scores_with_map_and_warm_starts_like_cold():
    x, y = blobs(200)
    labels = torch.where(y[:, None] == torch.arange(CLASSES), 1, -1)
    x_val, y_val = blobs(100, seed=3)
    labels_val = torch.where(y_val[:, None] == torch.arange(CLASSES), 1, -1)
    path = penalty_path(
        fit_one_vs_rest, x, labels, x_val, labels_val, (0.1, 10.0), score_fn=map11, progress=False
    )
    best = path.best_model
    assert best.kind == "one-vs-rest" and path.best_score == max(path.scores) > 50
    cold = fit_one_vs_rest(x, labels, path.best_penalty)
    assert map11(decision_scores(cold, x_val), labels_val) == pytest.approx(
        path.best_score, abs=0.5
    )


def test_warm_starts_reach_the_cold_start_solution():
    x, y = blobs(300)
    model = None
    for penalty in (1e3, 10.0, 0.1):  # the path's order, strongest first
        model = fit_multinomial(x, y, CLASSES, penalty, init=model, tol=TIGHT)
        assert model.solver_state is not None
        cold = fit_multinomial(x, y, CLASSES, penalty, tol=TIGHT)
        stripped = fit_multinomial(
            x, y, CLASSES, penalty, init=model.without_solver_state(), tol=TIGHT
        )
        scale = float(cold.weight.abs().max())
        for warm in (model, stripped):
            torch.testing.assert_close(warm.weight, cold.weight, rtol=0, atol=1e-4 * scale)
            torch.testing.assert_close(warm.bias, cold.bias, rtol=0, atol=1e-4 * scale)
        assert stripped.iterations <= 1  # it starts at the solution


def test_ties_go_to_the_larger_penalty():
    x, y = blobs(100)
    fit = partial(fit_multinomial, num_classes=CLASSES)
    path = penalty_path(
        fit, x, y, x, y, (1.0, 100.0, 0.01), score_fn=lambda s, t: 50.0, progress=False
    )
    assert path.best_penalty == 100.0 and path.scores == (50.0, 50.0, 50.0)


def test_iteration_cap_is_reported():
    x, y = blobs(300)
    model = fit_multinomial(x, y, CLASSES, 1e-3, max_iter=2, tol=TIGHT)
    assert model.iterations == 2 and not model.converged


def test_the_protocol_grid():
    assert len(PENALTIES) == 45
    assert PENALTIES[0] == pytest.approx(1e-6) and PENALTIES[-1] == pytest.approx(1e5)
    assert PENALTIES[1] / PENALTIES[0] == pytest.approx(10 ** (11 / 44))


def _bad_inputs():
    x, y = blobs(40)
    labels = torch.where(y[:, None] == torch.arange(CLASSES), 1, -1)
    other = fit_multinomial(x[:, :5], y, CLASSES, 1.0, max_iter=1)
    return {
        "empty set": lambda: fit_multinomial(x[:0], y[:0], CLASSES, 1.0),
        "label out of range": lambda: fit_multinomial(x, torch.where(y == 0, 7, y), CLASSES, 1.0),
        "negative label": lambda: fit_multinomial(x, y - 1, CLASSES, 1.0),
        "class missing": lambda: fit_multinomial(x, y.clamp(max=2), CLASSES, 1.0),
        "label count": lambda: fit_multinomial(x, y[:-1], CLASSES, 1.0),
        "non-finite": lambda: fit_multinomial(x / 0.0, y, CLASSES, 1.0),
        "zero penalty": lambda: fit_multinomial(x, y, CLASSES, 0.0),
        "initial shape": lambda: fit_multinomial(x, y, CLASSES, 1.0, init=other),
        "label value": lambda: fit_one_vs_rest(x, labels * 2, 1.0),
        "no positive": lambda: fit_one_vs_rest(
            x, torch.cat([labels, -(labels[:, :1] ** 2)], 1), 1.0
        ),
        "empty ovr": lambda: fit_one_vs_rest(x[:0], labels[:0], 1.0),
    }


@pytest.mark.parametrize("case", sorted(_bad_inputs()))
def test_bad_input_is_one_sentence(case):
    with pytest.raises(LogisticInputError) as raised:
        _bad_inputs()[case]()
    assert isinstance(raised.value, ByolBenchError)
    message = str(raised.value)
    assert "\n" not in message and message.count(". ") == 0 and len(message) < 200
