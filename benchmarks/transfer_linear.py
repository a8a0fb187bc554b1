"""Cost of byol-transfer-linear/1's 45-value penalty path; prints figures (not a test).

    python -m benchmarks.transfer_linear                                  # Food-101's size
    python -m benchmarks.transfer_linear --train 10000 --val 1000 --dim 512 --classes 101  # CPU

On synthetic features of a data set's size (default Food-101's: 68,175 train + 7,575 val rows of
a ResNet-50's 2,048-d avgpool features, 101 classes), side by side:
1. the 45-value path of transfer/classification/logistic.py (strongest penalty first, warm
   starts), its wall time divided by one fit from scratch at the penalty it chose (target <= 3);
2. scikit-learn's own sweep on the same features with the reference's settings (ssl-transfer
   linear.py: LogisticRegression(solver="lbfgs", warm_start=True), tol 1e-4, max_iter 100, C =
   1 / penalty from the weakest penalty up; --sklearn-max-iter changes the cap), on the CPU, and
   its time divided by our path's (target: > 1, ours faster).
The features: non-negative like post-ReLU averages, relu(class mean + noise), class means drawn
once; --signal sets how far apart the classes are (in noise standard deviations).
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass, fields
from functools import partial

import torch

from transfer.classification.logistic import MAX_ITER, PENALTIES, TOL, fit_multinomial, penalty_path
from transfer.classification.metrics import top1


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of the measurement (defaults: Food-101, BYOL v3 Table 10)."""

    train: int = 68_175
    val: int = 7_575
    dim: int = 2048
    classes: int = 101
    signal: float = 6.0  # ~56% val top-1 at --train 10000 --dim 512 (Food-101 BYOL: 75.3)
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    sklearn: bool = True
    sklearn_max_iter: int = 100  # the reference's (scikit-learn's default)
    seed: int = 0


HELP = {
    "train": "training rows (the path fits on these)",
    "val": "validation rows (the path scores on these)",
    "dim": "feature dimension",
    "classes": "number of classes",
    "signal": "distance between two class means, in units of the noise's standard deviation",
    "device": "cpu or cuda (ours; scikit-learn runs on the CPU)",
    "sklearn": "also time scikit-learn's sweeps (--no-sklearn: only ours)",
    "sklearn_max_iter": "scikit-learn's max_iter in the reference-settings sweep",
    "seed": "seed of the synthetic features",
}


def synthetic_features(rows: int, config: BenchConfig, generator: torch.Generator):
    """relu(class mean + noise) with a power-law spectrum (variance of dimension j ~ 1 / (j + 1),
    like the decaying spectrum of trained features): [rows, dim] float32 features, [rows]
    labels."""
    spread = 1.0 / torch.arange(1, config.dim + 1).float().sqrt()  # [D]
    spread *= config.dim**0.5 / spread.norm()  # mean variance 1
    scale = config.signal / (2 * config.dim) ** 0.5  # E ||mean_a - mean_b|| = signal (isotropic)
    means = scale * torch.randn(config.classes, config.dim, generator=generator) * spread
    labels = torch.randint(0, config.classes, (rows,), generator=generator)
    labels[: config.classes] = torch.arange(config.classes)  # every class present
    noise = torch.randn(rows, config.dim, generator=generator).mul_(spread)
    return noise.add_(means[labels]).relu_(), labels


def _timed(device: torch.device, fn):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, result


def sklearn_sweep(x_train, y_train, x_val, y_val, max_iter: int):
    """(seconds, best penalty, best score, fits that hit max_iter) of the reference's loop: one
    warm-started LogisticRegression walked over C = 1 / penalty from the weakest penalty up."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(solver="lbfgs", warm_start=True, tol=TOL, max_iter=max_iter)
    best_score, best_penalty, capped = -1.0, float("nan"), 0
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for penalty in sorted(PENALTIES):
            classifier.set_params(C=1.0 / penalty)
            classifier.fit(x_train, y_train)
            capped += int(classifier.n_iter_.max() >= max_iter)
            score = 100.0 * classifier.score(x_val, y_val)
            if score > best_score:
                best_score, best_penalty = score, penalty
    return time.perf_counter() - started, best_penalty, best_score, capped


def parse_config(argv: list[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transfer_linear", description=__doc__, allow_abbrev=False
    )
    for field in fields(BenchConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{HELP[field.name]} (default: %(default)s)"
        if isinstance(field.default, bool):
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=field.default, help=help_text)
        else:
            parser.add_argument(
                flag, type=type(field.default), default=field.default, help=help_text
            )
    return BenchConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    device = torch.device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    features, labels = synthetic_features(config.train + config.val, config, generator)
    x_train, y_train = features[: config.train].to(device), labels[: config.train].to(device)
    x_val, y_val = features[config.train :].to(device), labels[config.train :].to(device)
    fit = partial(fit_multinomial, num_classes=config.classes)
    fit(x_train[:256], y_train[:256].remainder(2), penalty=1.0, max_iter=2, num_classes=2)

    def score(scores, y):
        return top1(scores.cpu(), y.cpu())

    path_s, path = _timed(
        device, lambda: penalty_path(fit, x_train, y_train, x_val, y_val, score_fn=score)
    )
    one_s, one = _timed(device, lambda: fit(x_train, y_train, penalty=path.best_penalty))
    threads = torch.get_num_threads()
    print(f"\nbenchmarks.transfer_linear on {device} ({threads} threads), {config}")
    print(
        f"ours: 45-value path {path_s:.2f} s ({sum(path.iterations)} iterations, "
        f"{sum(path.converged)}/45 converged, cap {MAX_ITER}) / one fit at the chosen penalty "
        f"{path.best_penalty:.3g} {one_s:.2f} s ({one.iterations} iterations) = "
        f"{path_s / one_s:.2f}x (target <= 3); best val top-1 {path.best_score:.2f}"
    )
    if not config.sklearn:
        return
    arrays = [t.cpu().numpy() for t in (x_train, y_train, x_val, y_val)]
    sk_s, sk_penalty, sk_score, capped = sklearn_sweep(*arrays, max_iter=config.sklearn_max_iter)
    print(
        f"scikit-learn sweep (lbfgs, warm_start, tol {TOL}, max_iter {config.sklearn_max_iter}, "
        f"{capped}/45 fits stopped by max_iter): {sk_s:.2f} s = {sk_s / path_s:.2f}x ours "
        f"(target > 1); chose penalty {sk_penalty:.3g}, val top-1 {sk_score:.2f}"
    )


if __name__ == "__main__":
    main()
