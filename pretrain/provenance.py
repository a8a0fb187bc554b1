"""Where a result came from: git revision, library versions, device, command line."""

import shlex
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def git_sha() -> str:
    """Short git revision of this checkout, or "unknown" outside a git checkout."""
    return _git("rev-parse", "--short=12", "HEAD") or "unknown"


def git_dirty() -> bool | None:
    """True if tracked files have uncommitted changes (None outside a git checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def device_name(device: torch.device, world_size: int = 1) -> str:
    if device.type == "cuda":
        return f"{world_size}x {torch.cuda.get_device_name(device)}"
    return f"{world_size}x cpu"


def command_line() -> str:
    """The command that started this process, re-runnable: `python -m pkg.module ...` for modules
    (sys.argv[0] alone would give the module's file path, which cannot be run as a script)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["-m", spec.name] if spec is not None and spec.name else sys.argv[:1]
    return " ".join(shlex.quote(arg) for arg in [Path(sys.executable).name, *head, *sys.argv[1:]])


def provenance(device: torch.device, world_size: int = 1) -> dict:
    """The provenance block shared by logs, exports and result records."""
    return {
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "command": command_line(),
        "torch": str(torch.__version__),  # a TorchVersion object would not load weights_only
        "torchvision": torchvision.__version__,
        "device": device_name(device, world_size),
        "world_size": world_size,
    }
