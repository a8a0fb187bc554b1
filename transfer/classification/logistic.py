"""l2-regularised logistic regression on cached features, and its 45-value penalty path
(protocol byol-transfer-linear/1; BYOL v3, App. D.2; SimCLR, App. B.8.1).

Objective, exactly scikit-learn's LogisticRegression(C=1/penalty, solver="lbfgs"):

- multinomial:   sum_i CE(softmax(x_i W^T + b), y_i) + (penalty / 2) ||W||^2,   W [C, D];
- one-vs-rest (VOC2007): per class c,
  sum_i log(1 + exp(-s_ic (x_i w_c + b_c))) + (penalty / 2) ||w_c||^2,  s_ic in {+1, -1}.

The bias is not penalised. Verified in scikit-learn 1.9.1's source: _logistic.py minimises
mean_i loss_i + (l2_reg_strength / 2) ||W||^2 with l2_reg_strength = 1 / (C N) (its comment:
"C * sum(pointwise_loss) + penalty" rescaled), the loss being HalfMultinomialLoss (the
cross-entropy) or HalfBinomialLoss (log(1 + exp(z)) - y z, the logistic loss), and the penalty
_linear_loss.py's l2_penalty = 0.5 * l2_reg_strength * ||W||^2 over the weights only. That is the
sum form above divided by N: the same minimiser. Its stopping rule, scipy L-BFGS-B's gtol = tol
on that averaged objective, is ours too: max |gradient of the sum form| / N <= tol.

The reference implementation (Ericsson et al. 2021, ssl-transfer linear.py): scikit-learn
LogisticRegression(solver="lbfgs", multi_class="multinomial", warm_start=True) with the library's
defaults tol=1e-4 and max_iter=100 (ConvergenceWarning silenced), C = 1 / penalty over
torch.logspace(-6, 5, 45) walked from the weakest penalty to the strongest, each fit warm-started
from the previous; raw features (no standardisation); the best validation score with a strict
`>` (ties: the smaller penalty; ours: the larger, see penalty_path); for VOC2007 one binary fit
per class on (label == 1), so the "difficult" label 0 counts as negative in training, which we
follow.

Our path walks the other way, strongest penalty first: there the solution is near zero and found
in a few iterations, and each weaker value starts from a solution close to its own. The iteration
cap is ours (MAX_ITER, larger than the reference's 100, so that fits converge; the paper states
none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm import tqdm

from results.errors import ByolBenchError
from transfer.classification.lbfgs import SolverState, minimise

PENALTIES = tuple(float(p) for p in np.logspace(-6, 5, 45))  # BYOL v3, App. D.2: 45 log-spaced
MAX_ITER = 1000  # ours; the reference's scikit-learn default is 100 (see the module docstring)
TOL = 1e-4  # scikit-learn's default tol, the reference's


class LogisticInputError(ByolBenchError, ValueError):
    """Features or labels that a logistic-regression fit cannot use; the message says which."""


@dataclass(frozen=True)
class LogisticModel:
    """A fitted linear classifier: scores = x @ weight.T + bias.

    kind "multinomial": one softmax over the C rows; "one-vs-rest": C independent binary
    classifiers, row c the positive-vs-rest classifier of class c (scikit-learn's binary coef_
    of that class)."""

    weight: torch.Tensor  # [C, D] float64, on the features' device
    bias: torch.Tensor  # [C] float64
    kind: str
    penalty: float
    iterations: int
    converged: bool
    # The solver's last iterate and curvature pairs, for a warm start on the same features and
    # labels (penalty_path); None once dropped (without_solver_state).
    solver_state: SolverState | None = field(default=None, repr=False, compare=False)

    def without_solver_state(self) -> LogisticModel:
        """This model without the solver's caches (N x C logits, curvature pairs)."""
        return replace(self, solver_state=None)


@dataclass(frozen=True)
class PathResult:
    """Every penalty's validation score, in the order given, and the best fit."""

    penalties: tuple[float, ...]
    scores: tuple[float, ...]
    iterations: tuple[int, ...]
    converged: tuple[bool, ...]
    best_penalty: float
    best_score: float
    best_model: LogisticModel


def _multinomial_loss(labels: torch.Tensor) -> Callable:
    rows = torch.arange(labels.shape[0], device=labels.device)

    def loss(logits: torch.Tensor) -> tuple[float, torch.Tensor]:
        # max, exp, sum by hand: torch.logsumexp is ~5x slower in float64 on CPU
        largest = logits.amax(dim=1, keepdim=True)  # [N, 1]
        residual = torch.exp(logits - largest)
        total = residual.sum(dim=1, keepdim=True)
        value = float((total.log() + largest).sum() - logits[rows, labels].sum())
        residual.div_(total)[rows, labels] -= 1.0  # softmax - one-hot
        return value, residual

    return loss


def _binary_loss(signs: torch.Tensor) -> Callable:
    def loss(logits: torch.Tensor) -> tuple[float, torch.Tensor]:
        margins = signs * logits  # [N, C]
        value = float(torch.nn.functional.softplus(-margins).sum())
        return value, -signs * torch.sigmoid(-margins)

    return loss


def _check_features(x: torch.Tensor, init: LogisticModel | None = None) -> None:
    """A non-empty [N, D] float matrix of finite values; the finiteness pass is skipped when
    the warm start's solver state was computed on this very tensor (the penalty path)."""
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise LogisticInputError(
            f"features must be a non-empty [N, D] matrix, got shape {tuple(x.shape)}; "
            "extract features for at least one image"
        )
    if not x.is_floating_point():
        raise LogisticInputError(f"features must be floating-point numbers, got {x.dtype}")
    state = init.solver_state if init is not None else None
    if state is not None and state.geometry.features is x:
        return
    if not bool(torch.isfinite(x.sum(dtype=torch.float64))):  # one pass, no [N, D] mask
        raise LogisticInputError("features must be finite numbers; re-extract them")


def _check_penalty(penalty: float) -> None:
    if not (np.isfinite(penalty) and penalty > 0):
        raise LogisticInputError(f"the penalty must be a positive number, got {penalty}")


def _initial_theta(init: LogisticModel | None, shape, x: torch.Tensor, prior_bias: torch.Tensor):
    """[W | b] of `init`, or W = 0 with the bias that is optimal for W = 0 (the classes' log
    frequencies; scikit-learn starts from zeros, the minimiser is the same), float64."""
    if init is None:
        theta = torch.zeros(shape[0], shape[1] + 1, dtype=torch.float64, device=x.device)
        theta[:, -1] = prior_bias.to(x.device)
        return theta
    if tuple(init.weight.shape) != shape:
        raise LogisticInputError(
            f"the initial model has weights of shape {tuple(init.weight.shape)}, this fit "
            f"needs {shape}; start from a model fitted on the same classes and features"
        )
    return torch.cat([init.weight, init.bias[:, None]], dim=1).to(x.device, torch.float64)


def fit_multinomial(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    penalty: float,
    *,
    init: LogisticModel | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
) -> LogisticModel:
    """Multinomial logistic regression of labels y [N] on features x [N, D] at `penalty`
    (= 1 / C of scikit-learn), from `init` (warm start) or zeros."""
    _check_features(x, init)
    _check_penalty(penalty)
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        raise LogisticInputError(
            f"labels must be {x.shape[0]} class indices (one per feature row), "
            f"got shape {tuple(y.shape)} of {y.dtype}"
        )
    if num_classes < 2 or int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise LogisticInputError(
            f"labels must lie in 0..{num_classes - 1} with at least 2 classes, "
            f"got {int(y.min())}..{int(y.max())}; check the class count of the data set"
        )
    missing = torch.bincount(y, minlength=num_classes).eq(0).nonzero().flatten().tolist()
    if missing:
        raise LogisticInputError(
            f"classes {missing[:5]} have no training example; the training split must hold "
            "every class"
        )
    log_frequency = torch.bincount(y, minlength=num_classes).double().log()
    theta = _initial_theta(init, (num_classes, x.shape[1]), x, log_frequency - log_frequency.mean())
    loss = _multinomial_loss(y.to(x.device))
    state = init.solver_state if init is not None else None
    result = minimise(x, loss, penalty, theta, max_iter=max_iter, tol=tol, targets=y, state=state)
    return _model(result, "multinomial", penalty)


def _model(result, kind: str, penalty: float) -> LogisticModel:
    return LogisticModel(
        result.weight,
        result.bias,
        kind,
        penalty,
        result.iterations,
        result.converged,
        solver_state=result.state,
    )


def fit_one_vs_rest(
    x: torch.Tensor,
    label_matrix: torch.Tensor,
    penalty: float,
    *,
    init: LogisticModel | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
) -> LogisticModel:
    """One binary logistic regression per column of label_matrix [N, C] (VOC: 1 positive,
    -1 negative, 0 difficult, trained as negative like the reference) at `penalty`. The C
    problems are independent; they are solved jointly (one L-BFGS over the [C, D] weights), which
    has the same minimiser and stops when every class meets the gradient rule."""
    _check_features(x, init)
    _check_penalty(penalty)
    if label_matrix.ndim != 2 or label_matrix.shape[0] != x.shape[0]:
        raise LogisticInputError(
            f"the label matrix must be [{x.shape[0]}, C] (one row per feature row), "
            f"got shape {tuple(label_matrix.shape)}"
        )
    valid = (label_matrix == 1) | (label_matrix == -1) | (label_matrix == 0)
    if not bool(valid.all()):
        raise LogisticInputError("the label matrix must hold only 1, -1 and 0 (VOC's labels)")
    positive = label_matrix == 1
    lacking = (~positive.any(0) | positive.all(0)).nonzero().flatten().tolist()
    if lacking:
        raise LogisticInputError(
            f"classes {lacking[:5]} lack a positive or a negative training example; "
            "a binary classifier needs both"
        )
    frequency = positive.double().mean(0)
    theta = _initial_theta(
        init, (label_matrix.shape[1], x.shape[1]), x, (frequency / (1 - frequency)).log()
    )
    signs = torch.where(positive, 1.0, -1.0).to(x.device, torch.float64)
    state = init.solver_state if init is not None else None
    result = minimise(
        x,
        _binary_loss(signs),
        penalty,
        theta,
        max_iter=max_iter,
        tol=tol,
        targets=label_matrix,
        state=state,
    )
    return _model(result, "one-vs-rest", penalty)


def decision_scores(model: LogisticModel, x: torch.Tensor) -> torch.Tensor:
    """x @ W^T + b, [N, C] in x's dtype: the logits (multinomial) or scikit-learn's
    decision_function of each class's binary classifier (one-vs-rest)."""
    if x.ndim != 2 or x.shape[1] != model.weight.shape[1] or not x.is_floating_point():
        raise LogisticInputError(
            f"features must be [N, {model.weight.shape[1]}] floats for this model, "
            f"got shape {tuple(x.shape)} of {x.dtype}"
        )
    weight = model.weight.to(x.device, x.dtype)
    return x @ weight.T + model.bias.to(x.device, x.dtype)


def penalty_path(
    fit: Callable[..., LogisticModel],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    penalties: tuple[float, ...] = PENALTIES,
    score_fn: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
    progress: bool = True,
) -> PathResult:
    """Fit at every penalty, strongest first, each warm-started from the previous solution, and
    score each on the validation split (BYOL v3, App. D.2: selection on val, higher is better).

    `fit(x, y, penalty=..., init=...)`: fit_one_vs_rest or functools.partial(fit_multinomial,
    num_classes=C). `score_fn(scores [N, C], y_val) -> float`, e.g. metrics.top1.

    Ties go to the larger penalty (the reference's strict `>` walking up from the weakest gives
    the smaller; the paper states no rule). Along our path a tie means a weaker penalty did not
    improve the validation score; at the weak end successive fits often stop at their warm start
    (the gradient rule already holds), so the tied models are one model and the larger penalty
    is the one that determined it, and the one whose refit on train+val reproduces it."""
    if score_fn is None:
        raise LogisticInputError("penalty_path needs a score_fn (the data set's metric)")
    if not penalties:
        raise LogisticInputError("penalty_path needs at least one penalty")
    order = sorted(range(len(penalties)), key=lambda k: penalties[k], reverse=True)
    count = len(penalties)
    scores, iterations, converged = [0.0] * count, [0] * count, [False] * count
    best: tuple[float, float, LogisticModel] | None = None
    model = None
    bar = tqdm(order, desc="penalty path", unit="fit", disable=not progress)
    for k in bar:
        model = fit(x_train, y_train, penalty=penalties[k], init=model)
        scores[k] = float(score_fn(decision_scores(model, x_val), y_val))
        iterations[k], converged[k] = model.iterations, model.converged
        if best is None or scores[k] > best[0]:  # walking down: > keeps the larger penalty
            best = (scores[k], penalties[k], model.without_solver_state())
        bar.set_postfix(penalty=f"{penalties[k]:.1e}", score=f"{scores[k]:.2f}", it=iterations[k])
    return PathResult(
        tuple(penalties),
        tuple(scores),
        tuple(iterations),
        tuple(converged),
        best_penalty=best[1],
        best_score=best[0],
        best_model=best[2],
    )
