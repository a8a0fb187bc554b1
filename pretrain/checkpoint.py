"""Checkpoints, resume and backbone export.

A run directory (claimed and resumed through pretrain/rundir.py) holds:
    config.json                  the run's identity (pretraining: the resolved PretrainConfig)
    checkpoints/last.pt          full training state, written atomically (resume source)
    checkpoints/previous.pt      the checkpoint before last.pt (fallback if last.pt is damaged)
    checkpoints/epoch_XXXX.pt    periodic keepers
    exports/backbone-<sha8>.pt   online encoder only, torchvision key names + metadata
    exports/backbone-<sha8>.json the same metadata, human-readable

Every file is written to a temporary name, fsync'ed and ``os.replace``d (results/atomic.py), so a
kill at any moment leaves either the old or the new file. Checkpoints hold tensors and plain types
only: ``torch.load(path, weights_only=True)`` loads them. Each carries a SHA-256 over its tensors,
checked on load, so a damaged file is detected even where the zip container still opens.
"""

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import torch

from results.atomic import write_atomic
from results.errors import ByolBenchError

CHECKPOINT_FORMAT = "byol-bench.checkpoint/1"
EXPORT_FORMAT = "byol-bench.backbone/1"
log = logging.getLogger(__name__)


class CheckpointError(ByolBenchError, RuntimeError):
    """A checkpoint file that cannot be used."""


def last_checkpoint_path(run_dir: str | Path) -> Path:
    """THE resume file of a run: the saver and the resumer both use this name."""
    return Path(run_dir) / "checkpoints" / "last.pt"


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, including bfloat16 and 0-d tensors)."""
    tensor = tensor.detach().cpu().contiguous().reshape(-1)
    return tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""


def _tensor_digest(tree) -> str:
    """SHA-256 over every tensor in a nested dict/list, in traversal order."""
    digest = hashlib.sha256()

    def visit(node) -> None:
        if isinstance(node, torch.Tensor):
            tensor = node.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor_bytes(tensor))
        elif isinstance(node, dict):
            for key in sorted(node, key=str):
                digest.update(str(key).encode())
                visit(node[key])
        elif isinstance(node, list | tuple):
            for item in node:
                visit(item)
        else:
            digest.update(repr(node).encode())

    visit(tree)
    return digest.hexdigest()


def save_checkpoint(run_dir: str | Path, state: dict, keep_name: str | None = None) -> Path:
    """Atomically write ``state`` to last.pt (the old last.pt becomes previous.pt)."""
    path = last_checkpoint_path(run_dir)
    buffer = io.BytesIO()
    torch.save(
        {"format": CHECKPOINT_FORMAT, "digest": _tensor_digest(state), "state": state}, buffer
    )
    payload = buffer.getvalue()
    if path.exists():
        os.replace(path, path.with_name("previous.pt"))
    write_atomic(path, payload)
    if keep_name:
        write_atomic(path.with_name(keep_name), payload)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load and verify one checkpoint; raises CheckpointError if it is damaged."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, garbage bytes, unpickling refused
        raise CheckpointError(
            f"{path}: cannot be read ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} file")
    if _tensor_digest(blob["state"]) != blob["digest"]:
        raise CheckpointError(f"{path}: content does not match its digest (damaged file)")
    return blob["state"]


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """last.pt, previous.pt, then epoch keepers newest first: where a resume may come from."""
    directory = last_checkpoint_path(run_dir).parent
    keepers = sorted(directory.glob("epoch_*.pt"), reverse=True)
    named = [directory / "last.pt", directory / "previous.pt"]
    return [path for path in named + keepers if path.exists()]


def load_latest_good(run_dir: str | Path) -> dict | None:
    """The newest checkpoint that loads and verifies, warning about each damaged one; None if none.

    Among the good candidates the one with the highest step wins (a keeper may be newer than a
    damaged last.pt's predecessor).
    """
    good = []
    for path in resume_candidates(run_dir):
        try:
            good.append((path, load_checkpoint(path)))
        except CheckpointError as error:
            log.warning("skipping damaged checkpoint: %s", error)
    if not good:
        if resume_candidates(run_dir):
            raise CheckpointError(
                f"every checkpoint in {last_checkpoint_path(run_dir).parent} is damaged; move the "
                "directory away to start over"
            )
        return None
    path, state = max(good, key=lambda item: item[1]["step"])
    log.info("resuming from %s (step %d)", path, state["step"])
    return state


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted (name, dtype, shape, bytes) of a backbone state dict.

    The identity of a set of weights across the project (architecture doc, "Identity of weights"):
    independent of file path and serialisation.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def export_backbone(
    run_dir: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict
) -> Path:
    """Write exports/backbone-<sha8>.pt ({"format", "state_dict", "metadata"}) and its .json."""
    state_dict = {name: tensor.detach().cpu().clone() for name, tensor in state_dict.items()}
    sha = weights_sha256(state_dict)
    path = Path(run_dir) / "exports" / f"backbone-{sha[:8]}.pt"
    metadata = {**metadata, "weights_sha256": sha, "path": str(path.resolve())}
    buffer = io.BytesIO()
    torch.save({"format": EXPORT_FORMAT, "state_dict": state_dict, "metadata": metadata}, buffer)
    write_atomic(path, buffer.getvalue())
    write_atomic(path.with_suffix(".json"), json.dumps(metadata, indent=2).encode())
    return path
