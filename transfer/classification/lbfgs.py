"""L-BFGS for an l2-regularised linear model on cached features, on the features' device.

Minimises  F(W, b) = sum_i loss(x_i W^T + b) + (penalty / 2) ||W||^2  (bias not penalised) for a
loss that is a sum over the logits (softmax cross-entropy, or one binary logistic loss per column);
transfer/classification/logistic.py defines the losses and the protocol. The method is L-BFGS
(Nocedal & Wright 2006, Alg. 7.4/7.5, memory 10 like scipy's L-BFGS-B used by scikit-learn) with
changes that leave the minimiser untouched and make the iterations few, cheap and exact:

- centred parametrisation: the optimiser moves (W, b') with b = b' - W mu (mu: the features'
  mean), so that the unpenalised bias is decoupled from the weights of non-centred (post-ReLU)
  features; the model returned is (W, b) and the stopping test uses the gradient in (W, b);
- preconditioning: H0 = gamma (Sigma + delta I)^-1 on the weights (Sigma: the features'
  covariance, eigendecomposed once per feature matrix; delta = penalty / (N a), a the loss's mean
  curvature), a Kronecker-factored approximation of the Hessian (the data term's is close to
  N a Sigma per class), so that a decaying feature spectrum does not slow the iterations;
- warm starts on the same features (the penalty path) reuse the last iterate's logits and
  gradient, the curvature pairs, and predict the next solution from the last two (see _start);
- two matrix products per iteration whatever the line search does: U = X D^T along the search
  direction D, then the new gradient R^T X; every line-search trial moves the logits as Z + t U
  and costs O(N C), not O(N C D);
- the matrix products run in the features' dtype (float32 features: float32 products), every
  O(N C) quantity (logits, losses, residuals, the 1-D line search) and the parameters in float64,
  so the line search sees a smooth function.

Stopping rule (scikit-learn's for lbfgs, `gtol`): max |dF/dtheta| / N <= tol, i.e. the gradient
of scikit-learn's averaged objective (sklearn/linear_model/_logistic.py scales the penalty by
1 / (C N) and minimises the mean loss) in max-norm. `converged` says whether it was met.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

Loss = Callable[[torch.Tensor], tuple[float, torch.Tensor]]  # logits [N, C] -> (sum, dloss/dz)

HISTORY = 10  # scipy L-BFGS-B `maxcor` default, what scikit-learn's lbfgs solver runs with
ARMIJO = 1e-4  # sufficient decrease c1 (Nocedal & Wright, Sec. 3.1)
CURVATURE = 0.3  # strong Wolfe c2; tighter than the usual 0.9: trials cost O(N C) here
LINE_SEARCH_TRIALS = 30
ROUNDING = 1e-13  # relative slack of the decrease test (Hager & Zhang 2005's approximate Wolfe)
REFRESH_EVERY = 25  # recompute the logits from scratch, bounding the drift of Z + t U updates
EIGEN_FLOOR = 1e-7  # smallest preconditioner eigenvalue, relative: float32 gradients' noise


@dataclass
class _Point:
    """An iterate: parameters (centred bias last), its logits, and the data term's value and
    gradient (the penalty's part is added for the penalty of the fit at hand)."""

    theta: torch.Tensor  # [C, D+1] float64: W | b'
    logits: torch.Tensor  # [N, C] float64
    data_value: float
    residual: torch.Tensor  # [N, C] float64: dloss/dlogits
    data_gradient: torch.Tensor | None = None  # [C, D+1] float64, centred parametrisation


@dataclass(frozen=True)
class FeatureGeometry:
    """A feature matrix with its mean and the eigendecomposition of its covariance."""

    features: torch.Tensor  # [N, D], contiguous
    mean: torch.Tensor  # [D] float64
    eigenvalues: torch.Tensor  # [D] float64, ascending
    eigenvectors: torch.Tensor  # [D, D] float64


def feature_geometry(features: torch.Tensor) -> FeatureGeometry:
    """Mean and covariance eigendecomposition of features [N, D] (one N D^2 product)."""
    features = features.contiguous()
    count = features.shape[0]
    mean = features.sum(0, dtype=torch.float64) / count
    second = (features.T @ features).double() / count  # [D, D]
    eigenvalues, eigenvectors = torch.linalg.eigh(second - torch.outer(mean, mean))
    return FeatureGeometry(features, mean, eigenvalues.clamp(min=0.0), eigenvectors)


@dataclass
class SolverState:
    """What a warm start on the same features and targets reuses: the last iterate with its
    logits and gradient (no matrix product to restart) and the curvature pairs (s, y of the data
    term; y of the new objective is y + penalty * s over the weights, exact)."""

    geometry: FeatureGeometry
    targets: torch.Tensor
    point: _Point
    history: list[tuple[torch.Tensor, torch.Tensor]]
    penalty: float
    previous: tuple[float, _Point] | None = None  # the solution at the penalty before


@dataclass(frozen=True)
class LbfgsResult:
    weight: torch.Tensor  # [C, D] float64
    bias: torch.Tensor  # [C] float64
    iterations: int
    converged: bool
    state: SolverState


class _Problem:
    """Features (with their geometry), the loss and the penalty of one fit."""

    def __init__(self, geometry: FeatureGeometry, loss: Loss, penalty: float):
        self.geometry = geometry
        self.features = geometry.features  # [N, D]
        self.count = self.features.shape[0]
        self.mean = geometry.mean
        self.loss = loss
        self.penalty = penalty
        self.shift = 0.0  # delta of the preconditioner, set from the loss's curvature

    def set_curvature(self, point: _Point) -> None:
        """delta = penalty / (N a), a = mean of the loss's second derivative in the logits,
        |r| (1 - |r|) for both losses (softmax and logistic) with r the residual."""
        magnitude = point.residual.abs()
        curvature = max(float((magnitude * (1 - magnitude)).mean()), 1e-8)
        self.curvature = curvature
        self.shift = self.penalty / (self.count * curvature)

    def precondition(self, gradient: torch.Tensor) -> torch.Tensor:
        """(Sigma + delta I)^-1 on the weights' rows, 1 on the (centred) bias."""
        vectors, values = self.geometry.eigenvectors, self.geometry.eigenvalues
        scale = (values + self.shift).clamp(min=EIGEN_FLOOR * float(values[-1]) + 1e-300)
        weight = ((gradient[:, :-1] @ vectors) / scale) @ vectors.T
        return torch.cat([weight, gradient[:, -1:]], dim=1)

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        """x_i W^T + b with b = b' - W mu: [N, C] float64."""
        weight, centred_bias = theta[:, :-1], theta[:, -1]
        product = self.features @ weight.to(self.features.dtype).T  # [N, C]
        return product.double() + (centred_bias - weight @ self.mean)

    def point(self, theta: torch.Tensor, logits: torch.Tensor) -> _Point:
        data_value, residual = self.loss(logits)
        return self.add_gradient(_Point(theta, logits, data_value, residual))

    def add_gradient(self, point: _Point) -> _Point:
        """The data term's gradient at `point` (one matrix product), centred parametrisation."""
        data_part = (point.residual.to(self.features.dtype).T @ self.features).double()  # [C, D]
        bias_part = point.residual.sum(0)  # [C]
        centred = data_part - bias_part[:, None] * self.mean[None, :]  # d/dW at fixed b'
        point.data_gradient = torch.cat([centred, bias_part[:, None]], dim=1)
        return point

    def value(self, point: _Point) -> float:
        weight = point.theta[:, :-1]
        return point.data_value + 0.5 * self.penalty * float((weight**2).sum())

    def gradient(self, point: _Point) -> torch.Tensor:
        """dF/d(W, b') [C, D+1]: the data term's plus the penalty's."""
        gradient = point.data_gradient.clone()
        gradient[:, :-1] += self.penalty * point.theta[:, :-1]
        return gradient

    def gradient_norm(self, point: _Point, gradient: torch.Tensor) -> float:
        """max |dF/d(W, b)| / N: scikit-learn's stopping quantity, in the original bias."""
        bias_part = gradient[:, -1]
        weight_part = gradient[:, :-1] + bias_part[:, None] * self.mean[None, :]
        return max(float(weight_part.abs().max()), float(bias_part.abs().max())) / self.count

    def converged(self, point: _Point, tol: float) -> bool:
        return self.gradient_norm(point, self.gradient(point)) <= tol

    def direction_logits(self, direction: torch.Tensor) -> torch.Tensor:
        """U = d(logits)/dt along `direction` [C, D+1]: [N, C] float64."""
        step = direction[:, :-1]
        product = self.features @ step.to(self.features.dtype).T
        return product.double() + (direction[:, -1] - step @ self.mean)


def _two_loop(gradient: torch.Tensor, history, problem: _Problem) -> torch.Tensor:
    """-H g by the L-BFGS two-loop recursion (Nocedal & Wright, Alg. 7.4/7.5) with
    H0 = gamma M (M the preconditioner; gamma = s.y / y.My of the last pair, or 1 / (N a))."""
    q = gradient.clone()
    alphas = []
    for s, y, rho in reversed(history):
        alpha = rho * float((s * q).sum())
        q -= alpha * y
        alphas.append(alpha)
    if history:
        s, y, _ = history[-1]
        gamma = float((s * y).sum()) / float((y * problem.precondition(y)).sum())
    else:
        gamma = 1.0 / (problem.count * problem.curvature)
    q = gamma * problem.precondition(q)
    for (s, y, rho), alpha in zip(history, reversed(alphas), strict=True):
        beta = rho * float((y * q).sum())
        q += (alpha - beta) * s
    return -q


def _line_search(phi, value0: float, slope0: float, step: float):
    """A step t meeting the strong Wolfe conditions for a convex phi (Nocedal & Wright,
    Sec. 3.5), the decrease test allowing for rounding near the minimum: bracket the root of
    phi' (monotone), then safeguarded secant steps.
    Returns (t, phi(t), extra) or None when no trial decreased phi."""
    low, low_slope, high, high_slope = 0.0, slope0, None, 0.0
    best = None
    rounding = ROUNDING * abs(value0)  # phi's float64 rounding: a sum of N C terms
    for _ in range(LINE_SEARCH_TRIALS):
        value, slope, extra = phi(step)
        decreased = value <= value0 + ARMIJO * step * slope0 + rounding
        if decreased and (best is None or value < best[1]):
            best = (step, value, extra)
        if decreased and abs(slope) <= CURVATURE * abs(slope0):
            return step, value, extra
        if not decreased or slope >= 0:
            high, high_slope = step, slope
        else:
            low, low_slope = step, slope
        if high is None:
            step *= 4.0
            continue
        width = high - low
        if high_slope > 0 and low_slope < 0:  # secant on phi', kept inside the bracket
            secant = low - low_slope * width / (high_slope - low_slope)
            step = min(max(secant, low + 0.1 * width), high - 0.1 * width)
        else:
            step = low + 0.5 * width
    return best


def _step(problem: _Problem, point: _Point, direction: torch.Tensor, step: float):
    """Line search along `direction` from `point`: (new point without its gradient, t) or None."""
    along = problem.direction_logits(direction)  # [N, C]
    weight, step_weight = point.theta[:, :-1], direction[:, :-1]
    cross, square = float((weight * step_weight).sum()), float((step_weight**2).sum())
    slope0 = float((point.residual * along).sum()) + problem.penalty * cross
    if not slope0 < 0:
        return None

    def phi(t: float):
        logits = point.logits + t * along
        data_value, residual = problem.loss(logits)
        value = data_value + 0.5 * problem.penalty * float(((weight + t * step_weight) ** 2).sum())
        slope = float((residual * along).sum()) + problem.penalty * (cross + t * square)
        return value, slope, (logits, data_value, residual)

    found = _line_search(phi, problem.value(point), slope0, step)
    if found is None:
        return None
    t, _, (logits, data_value, residual) = found
    return _Point(point.theta + t * direction, logits, data_value, residual), t


def _start(problem: _Problem, theta: torch.Tensor, state: SolverState | None, targets, tol):
    """The first iterate and curvature pairs: the warm state's when it was left on the same
    features and targets (its solution, or the line through its last two solutions extended
    to this penalty in log scale when that is lower: one product), else theta = [W | b]."""
    if state is None or state.geometry is not problem.geometry or state.targets is not targets:
        weight, bias = theta[:, :-1], theta[:, -1]
        centred = torch.cat([weight, (bias + weight @ problem.mean)[:, None]], dim=1)
        return problem.point(centred, problem.logits(centred)), []
    point = state.point
    if state.previous is not None and not problem.converged(point, tol):
        penalty, before = state.previous
        ratio = np.log(problem.penalty / state.penalty) / np.log(state.penalty / penalty)
        if 0 < ratio <= 2:  # continuing in the same direction
            theta = point.theta + ratio * (point.theta - before.theta)
            logits = point.logits + ratio * (point.logits - before.logits)  # linear in theta
            predicted = _Point(theta, logits, *problem.loss(logits))
            if problem.value(predicted) < problem.value(point):
                point = problem.add_gradient(predicted)
    return point, list(state.history)


@contextmanager
def _full_float32_precision():
    """float32 products at full precision while fitting (TF32's 1e-3 relative error would put the
    gradient's noise above scikit-learn's tol); the process's setting is restored after."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def minimise(
    features: torch.Tensor,
    loss: Loss,
    penalty: float,
    theta: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    targets: torch.Tensor,
    state: SolverState | None = None,
) -> LbfgsResult:
    """Minimise sum_i loss(x_i W^T + b) + penalty/2 ||W||^2 from `theta` = [W | b] ([C, D+1]),
    or from `state` when it belongs to the same features and targets, by L-BFGS until
    max |gradient| / N <= tol or `max_iter` iterations (scikit-learn's rule)."""
    with _full_float32_precision():
        return _minimise(features, loss, penalty, theta, max_iter, tol, targets, state)


def _minimise(features, loss, penalty, theta, max_iter, tol, targets, state) -> LbfgsResult:
    same = state is not None and state.geometry.features is features
    geometry = state.geometry if same else feature_geometry(features)
    same = same and state.targets is targets
    problem = _Problem(geometry, loss, penalty)
    point, pairs = _start(problem, theta, state, targets, tol)
    problem.set_curvature(point)
    mask = torch.ones_like(point.theta)
    mask[:, -1] = 0.0  # the penalty's curvature acts on the weights only

    def curvature_pair(s, y_data):
        y = y_data + penalty * mask * s
        return s, y, 1.0 / float((s * y).sum())

    history = [curvature_pair(s, y_data) for s, y_data in pairs]
    history = [pair for pair in history if pair[2] > 0]
    gradient = problem.gradient(point)
    iterations = 0
    while problem.gradient_norm(point, gradient) > tol and iterations < max_iter:
        direction = _two_loop(gradient, history, problem)
        moved = _step(problem, point, direction, 1.0)
        if moved is None and history:  # not a descent direction: forget the curvature pairs
            history, pairs = [], []
            direction = _two_loop(gradient, history, problem)
            moved = _step(problem, point, direction, 1.0)
        if moved is None:
            break  # no decrease along the gradient: the rounding floor of the products
        new, t = moved
        iterations += 1
        if iterations % REFRESH_EVERY == 0:
            new = problem.point(new.theta, problem.logits(new.theta))
        else:
            problem.add_gradient(new)
        s, y_data = t * direction, new.data_gradient - point.data_gradient
        pair = curvature_pair(s, y_data)
        if pair[2] > 0 and float((pair[0] * pair[1]).sum()) > 1e-10 * float((pair[1] ** 2).sum()):
            history = [*history[-(HISTORY - 1) :], pair]
            pairs = [*pairs[-(HISTORY - 1) :], (s, y_data)]
        point, gradient = new, problem.gradient(new)
    weight, centred_bias = point.theta[:, :-1], point.theta[:, -1]
    converged = problem.gradient_norm(point, gradient) <= tol
    previous = (state.penalty, state.point) if state is not None and same else None
    state = SolverState(geometry, targets, point, pairs, penalty, previous)
    return LbfgsResult(weight, centred_bias - weight @ problem.mean, iterations, converged, state)
