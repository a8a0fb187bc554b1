"""Weighted k-nearest-neighbour classification on frozen features, several k in one pass.

    python -m evaluate.knn --ckpt RUN/exports/backbone-3f2a9c1d.pt --data /imagenet
    python -m evaluate.knn --ckpt RUN/exports/backbone-*.pt --dataset synthetic
    python -m evaluate.knn --ckpt RUN --dataset cifar10      (every keeper of a run, in turn)

The protocol is the KnnConfig docstring below. Every run ends with one result record.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from evaluate import harness, series
from evaluate.metrics import percent, topk_hits, uncertainty
from evaluate.sanity import assert_unchanged, snapshot
from results.record import Task
from slurm import submit as slurm_submit

MEMORY_BUDGET = 512 * 2**20  # bytes of the [chunk, N] similarity block


@dataclass(frozen=True)
class KnnConfig:
    """Weighted kNN, protocol `knn-cosine-t0.07/1` (Wu et al. 2018, "Unsupervised feature learning
    via non-parametric instance discrimination", Sec. 3.4; the monitor of many SSL reproductions,
    e.g. CIFAR-10 R18 k=200 in docs/protocols.md).

    Features of the centre crop (the cached features of the fast linear probe), L2-normalised.
    Each test image takes the k training images of highest cosine similarity; each votes for its
    class with weight exp(similarity / T), T = 0.07; classes are ranked by their summed votes.
    k in {10, 20, 100, 200} in one pass; k = 200 is reported (top-1, top-5), every k in
    selection.per_k. Nothing is tuned on the test set. The bank is the whole training set.
    """

    ckpt: str  # export, training checkpoint, torchvision state dict, or random:<arch>[:cifar]
    dataset: str = "imagenet"
    data: str | None = None
    arch: str | None = None  # foreign weights only; default: metadata, else inferred
    label: str | None = None  # checkpoint label in the record; default: the file's metadata
    ks: tuple[int, ...] = (10, 20, 100, 200)  # Wu et al. 2018 report k = 200
    k: int = 200  # the k whose accuracy is the record's top1/top5
    temperature: float = 0.07  # Wu et al. 2018, Sec. 3.4
    batch_size: int = 256  # feature extraction
    seed: int = 0  # only for random:<arch> weights
    image_size: int | None = None  # default: the checkpoint's, else by data set (transforms.py)
    device: str | None = None  # default: cuda when available
    num_workers: int = field(default_factory=harness.default_num_workers)  # CPUs, at most 8
    records: str | None = None  # default: records/ beside the run dir of ckpt, else ./records
    cache_dir: str | None = None  # default: $BYOL_BENCH_CACHE, else ~/.cache/byol-bench/features

    @property
    def protocol(self) -> str:
        return f"knn-cosine-t{self.temperature:g}/1"


@torch.no_grad()
def knn_hits(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> dict[int, dict[int, torch.Tensor]]:
    """{k: {1: hits [N], 5: hits [N]}} (bool, CPU): whether weighted cosine kNN ranks each test
    image's label first / among its top 5; see KnnConfig for the rule.

    The test set goes in chunks of `chunk_size` rows so that the [chunk, N_train] similarity block
    stays within MEMORY_BUDGET (1.28M x 50k fits); one top-max(ks) per chunk serves every k.
    Runs on the device of `train_features`.
    """
    if max(ks) > len(train_labels):
        raise harness.InputError(f"k = {max(ks)} needs at least that many training images")
    device = train_features.device
    bank = F.normalize(train_features.float(), dim=1)  # [N, D]
    bank_labels = train_labels.to(device)
    chunk_size = chunk_size or max(1, MEMORY_BUDGET // (4 * len(bank)))
    hits = {k: {1: [], 5: []} for k in ks}
    for start in tqdm(range(0, len(test_labels), chunk_size), desc="kNN", unit="chunk"):
        queries = F.normalize(test_features[start : start + chunk_size].to(device).float(), dim=1)
        labels = test_labels[start : start + chunk_size].to(device)
        similarity, neighbours = (queries @ bank.T).topk(max(ks), dim=1)  # [c, kmax], descending
        votes = (similarity / temperature).exp()  # [c, kmax]
        neighbour_labels = bank_labels[neighbours]  # [c, kmax]
        for k in ks:
            scores = torch.zeros(len(labels), num_classes, device=device)  # [c, C]
            scores.scatter_add_(1, neighbour_labels[:, :k], votes[:, :k])
            for top, chunk_hits in topk_hits(scores, labels, (1, 5)).items():
                hits[k][top].append(chunk_hits.cpu())
    return {k: {top: torch.cat(parts) for top, parts in per_k.items()} for k, per_k in hits.items()}


def knn_accuracy(*args, **kwargs) -> dict[int, dict[str, float]]:
    """{k: {"top1", "top5"}} (%) of weighted cosine kNN (knn_hits, same arguments)."""
    return {
        k: {
            "top1": percent(hits[1].sum(), len(hits[1])),
            "top5": percent(hits[5].sum(), len(hits[5])),
        }
        for k, hits in knn_hits(*args, **kwargs).items()
    }


def run_knn(config: KnnConfig, inputs: harness.EvalInputs) -> tuple[dict, dict, tuple]:
    """Cached features of train and test, then knn_hits for every k; the third item is the
    chosen k's bootstrap intervals and their per-example data."""
    train = harness.features(
        inputs, inputs.train_set, "train", config.batch_size, config.num_workers
    )
    test = harness.features(
        inputs, inputs.eval_set, inputs.eval_split, config.batch_size, config.num_workers
    )
    hits = knn_hits(
        train[0].to(inputs.device),
        train[1],
        *test,
        num_classes=inputs.train_set.num_classes,
        ks=config.ks,
        temperature=config.temperature,
    )
    per_k = {
        k: {"top1": percent(h[1].sum(), len(h[1])), "top5": percent(h[5].sum(), len(h[5]))}
        for k, h in hits.items()
    }
    selection = {
        "k": config.k,
        "temperature": config.temperature,
        "per_k": {str(k): result for k, result in per_k.items()},
        "bank": f"train ({len(train[1])} images)",
    }
    chosen = hits[config.k]
    return dict(per_k[config.k]), selection, uncertainty({"top1": chosen[1], "top5": chosen[5]})


def parse_config(argv: list[str] | None) -> KnnConfig:
    """KnnConfig from the command line."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m evaluate.knn",
        description="Weighted kNN on frozen, cached centre-crop features (Wu et al. 2018).",
        epilog="Protocol: see the KnnConfig docstring in evaluate/knn.py.",
    )
    harness.add_common_arguments(parser, series=True)  # no --fast: kNN has no cheaper variant
    return harness.config_from_args(KnnConfig, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> None:
    """kNN for each checkpoint of --ckpt (evaluate/series.py): here in sequence, or with --slurm
    as one one-task job (several checkpoints: a job array, one task each)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with harness.error_boundary():
        if slurm_submit.submit_cli_if_requested(  # --slurm: run as a job (array)
            "evaluate.knn", argv, tasks=series.per_checkpoint_argvs
        ):
            return
        argvs = series.per_checkpoint_argvs(argv)
    series.run_series(argvs, evaluate_one)


def evaluate_one(argv: list[str]) -> None:
    """kNN of one checkpoint and its record."""
    with harness.error_boundary():
        config = parse_config(argv)
        if config.k not in config.ks or config.temperature <= 0:
            raise harness.InputError(f"k = {config.k} must be one of ks {config.ks}; T must be > 0")
        inputs = harness.load_inputs(config)
        frozen = snapshot(inputs.encoder)

        def run() -> tuple[dict, dict, tuple]:
            outcome = run_knn(config, inputs)
            assert_unchanged(inputs.encoder, frozen)
            return outcome

        task = Task("knn", config.dataset, inputs.eval_split, config.protocol)
        record, path = harness.record_run(inputs, config, task, run)
    print(
        f"knn {config.protocol} k={config.k} {record.task.dataset}/{record.task.split} "
        f"[{record.checkpoint.label}, {record.checkpoint.weights_sha256[:8]}]: "
        f"top1 {record.metrics['top1']:.2f} top5 {record.metrics['top5']:.2f} -> {path}"
    )


if __name__ == "__main__":
    main()
