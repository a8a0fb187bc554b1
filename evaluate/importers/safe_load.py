"""Reading foreign checkpoint files without executing anything from them.

Two readers, chosen by the file's first bytes (`sniff`):
- torch files (zip, or the legacy pickle that starts with torch's magic number) load with
  `torch.load(weights_only=True)`. The few non-tensor objects that Lightning and DINO checkpoints
  pickle beside the weights (argparse.Namespace in `args` / `hyper_parameters`, Lightning's
  AttributeDict, pathlib paths) are mapped to inert stand-ins with
  `torch.serialization.safe_globals`: plain attribute bags that run no method of the original
  class. Any other global is refused with a sentence naming it.
- raw pickles (the authors' BYOL release, written with dill, protocol 2) load with
  `RestrictedUnpickler`, whose `find_class` knows an explicit allow-list and nothing else: numpy
  array reconstruction (object dtypes refused), `_codecs.encode` (latin-1 only, protocol 2's
  bytes), Haiku's FlatMapping / frozendict -> dict and dill's `_create_namedtuple` -> a plain
  tuple with field names. `pickle.load` is never called; neither haiku nor dill is needed.
"""

from __future__ import annotations

import codecs
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluate.importers.errors import ForeignCheckpointError

ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (non-zip) format starts with this pickled long (torch/serialization.py).
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def sniff(path: Path) -> str:
    """ "torch" (zip or legacy torch.save), "pickle" (a raw pickle) or "unknown", by first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(len(TORCH_LEGACY_MAGIC))
    if head.startswith(ZIP_MAGIC) or head.startswith(TORCH_LEGACY_MAGIC):
        return "torch"
    if len(head) >= 2 and head[0] == 0x80 and head[1] in range(2, 6):
        return "pickle"
    return "unknown"


# --------------------------------------------------------------------------------------------
# torch files


class InertNamespace:
    """Stands in for argparse.Namespace: its attributes, nothing else."""

    def __repr__(self) -> str:
        return f"Namespace({vars(self)!r})"


class InertAttributeDict:
    """Stands in for Lightning's AttributeDict (a dict subclass): unpickles as a plain dict.

    torch's weights_only reader fills only dict / OrderedDict / Counter with items, so the
    instance NEWOBJ creates is a plain dict, and the pickled items go into it.
    """

    def __new__(cls, *args) -> dict:  # type: ignore[misc]
        return {}


def _inert_path(*parts: str) -> str:
    """Stands in for pathlib.PosixPath / WindowsPath: the path as a string."""
    return "/".join(str(part) for part in parts)


STUBS: dict[str, Any] = {
    "argparse.Namespace": InertNamespace,
    "pytorch_lightning.utilities.parsing.AttributeDict": InertAttributeDict,
    "lightning_fabric.utilities.data.AttributeDict": InertAttributeDict,
    "lightning.fabric.utilities.data.AttributeDict": InertAttributeDict,
    "lightning.pytorch.utilities.parsing.AttributeDict": InertAttributeDict,
    "pathlib.PosixPath": _inert_path,
    "pathlib.WindowsPath": _inert_path,
}
_UNSAFE_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")


def load_torch_file(path: Path) -> Any:
    """`torch.load(weights_only=True)` with the inert STUBS; other globals refused by name."""
    stubs = [(stub, name) for name, stub in STUBS.items()]
    with torch.serialization.safe_globals(stubs):
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise _refused(path, unsafe)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            found = _UNSAFE_GLOBAL.search(str(error))
            if found:
                raise _refused(path, [found.group(1)]) from error
            raise _damaged(path, error) from error
        except Exception as error:  # truncated zip, bad records
            raise _damaged(path, error) from error


def _unsafe_globals(path: Path) -> list[str]:
    """Globals of a zip torch file outside torch's and our allow-lists (read, not run)."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch>=2.5
    if lister is None:
        return []
    try:
        return sorted(lister(path))
    except Exception:  # legacy format or damaged: torch.load below says which
        return []


def _refused(path: Path, names: list[str]) -> ForeignCheckpointError:
    return ForeignCheckpointError(
        f"{path} pickles the object(s) {', '.join(names)}, not on the importers' allow-list "
        f"({', '.join(sorted(STUBS))}); refused because loading them could run code: re-save "
        "the file with tensors and plain types only"
    )


def _damaged(path: Path, error: Exception) -> ForeignCheckpointError:
    return ForeignCheckpointError(
        f"{path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
        "the file is damaged or truncated: download or copy it again"
    )


# --------------------------------------------------------------------------------------------
# raw pickles (the authors' BYOL release)


class PickledNamedTuple(tuple):
    """A namedtuple read from a pickle: the values, with `_fields` and attribute access."""

    _fields: tuple[str, ...] = ()

    def __new__(cls, *values):
        return super().__new__(cls, values)

    def __getattr__(self, name: str):
        if name in type(self)._fields:
            return self[type(self)._fields.index(name)]
        raise AttributeError(name)

    def _asdict(self) -> dict:
        return dict(zip(type(self)._fields, self))


def _create_namedtuple(name, fields, module=None, *_defaults) -> type[PickledNamedTuple]:
    """dill's `_create_namedtuple(name, fieldnames, modulename)`, without dill: a plain class."""
    if not isinstance(name, str) or not all(isinstance(field, str) for field in fields):
        raise pickle.UnpicklingError("dill namedtuple with non-string name or fields")
    return type(name, (PickledNamedTuple,), {"_fields": tuple(fields), "__module__": __name__})


def _as_dict(mapping=None) -> dict:
    """Haiku's FlatMapping(mapping) / frozendict(mapping) -> a plain dict."""
    return dict(mapping or {})


def _checked_dtype(spec, *args) -> np.dtype:
    dtype = np.dtype(spec, *args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy arrays of dtype {dtype} (Python objects) are refused")
    return dtype


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Protocol 2 stores bytes as `_codecs.encode(text, "latin1")`; no other codec is run."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is refused")
    return codecs.encode(text, "latin1")


def _numpy_allowed() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 (numpy.core is its deprecated alias)
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray

    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _checked_dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


ALLOWED_GLOBALS_DOC = (
    "numpy.ndarray, numpy.dtype, numpy.core.multiarray._reconstruct/scalar, _codecs.encode, "
    "haiku FlatMapping/frozendict, dill _create_namedtuple"
)


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle reader that constructs only the allow-listed globals (module docstring)."""

    def find_class(self, module: str, name: str):
        allowed = {
            **_numpy_allowed(),
            ("_codecs", "encode"): _latin1_encode,
            ("haiku._src.data_structures", "FlatMapping"): _as_dict,
            ("haiku._src.data_structures", "frozendict"): _as_dict,
            ("haiku.data_structures", "FlatMapping"): _as_dict,
            ("dill._dill", "_create_namedtuple"): _create_namedtuple,
        }
        if (module, name) not in allowed:
            raise RefusedGlobal(f"{module}.{name}")
        return allowed[(module, name)]

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not used by the supported formats")


class RefusedGlobal(pickle.UnpicklingError):
    """A global outside the allow-list; its args[0] is the dotted name."""


def load_restricted_pickle(path: Path) -> Any:
    """Read a raw pickle with RestrictedUnpickler; refusals and damage as one sentence."""
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle).load()
    except RefusedGlobal as error:
        raise ForeignCheckpointError(
            f"{path} pickles {error.args[0]}, which is not on the allow-list of the raw-pickle "
            f"reader ({ALLOWED_GLOBALS_DOC}); it is refused and nothing from the file was run"
        ) from error
    except Exception as error:  # truncated (EOFError), corrupt opcodes, bad numpy data
        raise ForeignCheckpointError(
            f"{path} is a damaged or truncated pickle ({type(error).__name__}: "
            f"{str(error)[:200]}): download or copy it again"
        ) from error
