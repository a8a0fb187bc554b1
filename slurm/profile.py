"""Cluster profiles: every site fact (partition, account, shared folder, ...) lives in a TOML file.

    slurm/profiles/local.toml     the one-node test cluster of slurm/local_cluster/start.sh
    slurm/profiles/example.toml   every field, annotated: copy it to slurm/profiles/<site>.toml

`--profile NAME` reads slurm/profiles/NAME.toml; `--profile path/to/site.toml` reads that file.
No partition, account or path appears in code: site facts live in the profiles only.
"""

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from results.errors import ByolBenchError

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
REQUIRED = ("partition", "time", "shared_dir")


class ProfileError(ByolBenchError, ValueError):
    """A profile that is missing, malformed or unusable; the message says what to do."""


@dataclass(frozen=True)
class Profile:
    """One cluster's facts; see slurm/profiles/example.toml for what each field means."""

    name: str
    partition: str
    time_min: int  # `time` in the file: minutes, "HH:MM:SS" or "D-HH:MM:SS"
    shared_dir: str  # runs/ and logs/ go here; must be visible from every node
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # default: one task per GPU, or 1 on CPU-only nodes
    cpus_per_task: int = 1
    mem_gb: float | None = None
    signal_delay_s: int = 120  # USR2 this long before the time limit: requeue and resume
    max_num_timeout: int = 10  # how many time-limit requeues a run may use
    array_parallelism: int = 32  # job-array tasks running at once
    python: str | None = None  # interpreter on the nodes (default: the submitting one)
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load, env vars, ...)
    extra: dict = field(default_factory=dict)  # further sbatch options, e.g. {exclusive = true}
    description: str = ""

    @property
    def tasks(self) -> int:
        """Tasks per node: the given number, else one per GPU, else 1."""
        return self.tasks_per_node or self.gpus_per_node or 1


_TYPES = {f.name: f.type for f in dataclasses.fields(Profile)}
_FILE_KEYS = (set(_TYPES) - {"name", "time_min"}) | {"time"}


def known_profiles() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.toml"))


def profile_path(name_or_path: str) -> Path:
    """slurm/profiles/NAME.toml for a bare name; the path itself for a *.toml path."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return Path(name_or_path).expanduser()
    return PROFILES_DIR / f"{name_or_path}.toml"


def load_profile(name_or_path: str, **overrides) -> Profile:
    """Read and validate a profile; ``overrides`` (None = keep) replace file values (CLI flags)."""
    path = profile_path(name_or_path)
    if not path.is_file():
        raise ProfileError(
            f"unknown SLURM profile {name_or_path!r}: {path} does not exist. Known profiles: "
            f"{', '.join(known_profiles())}. To add your cluster, copy "
            f"{PROFILES_DIR / 'example.toml'} to {PROFILES_DIR}/<name>.toml and fill it in."
        )
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"profile {path} is not valid TOML: {error}") from error
    values.update({key: value for key, value in overrides.items() if value is not None})
    return _validate(path, values)


def _validate(path: Path, values: dict) -> Profile:
    unknown = sorted(set(values) - _FILE_KEYS)
    if unknown:
        raise ProfileError(
            f"profile {path} has unknown fields {unknown}; known fields: {sorted(_FILE_KEYS)} "
            f"(see {PROFILES_DIR / 'example.toml'}; other sbatch options go under [extra])"
        )
    missing = [key for key in REQUIRED if values.get(key) in (None, "")]
    if missing:
        raise ProfileError(
            f"profile {path} lacks the required fields {', '.join(missing)}; add them "
            f"(see {PROFILES_DIR / 'example.toml'} for what each means)"
        )
    values = dict(values)
    values["time_min"] = parse_time(values.pop("time"), where=str(path))
    values["shared_dir"] = os.path.expandvars(os.path.expanduser(str(values["shared_dir"])))
    values["setup"] = tuple(values.get("setup", ()))
    for key, value in values.items():
        _check_type(path, key, value)
    return Profile(name=path.stem, **values)


def _check_type(path: Path, key: str, value) -> None:
    kind = _TYPES[key]
    if key == "setup":
        ok = all(isinstance(line, str) for line in value)
    elif key == "extra":
        ok = isinstance(value, dict)
    elif "float" in str(kind):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif "int" in str(kind):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind_name = getattr(kind, "__name__", str(kind))
        raise ProfileError(f"profile {path}: {key} = {value!r} should be of type {kind_name}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ProfileError(f"profile {path}: {key} = {value!r} must not be negative")


def parse_time(value, where: str = "--time") -> int:
    """SLURM time -> whole minutes: 90, "90", "1:30:00", "2-00:00:00" (seconds round up)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if isinstance(value, str) and match:
        days, first, second, third = (int(part) if part else 0 for part in match.groups())
        if match.group(3) is None:  # "MM" or "D-HH"
            minutes = first * 60 if match.group(1) else first
            seconds = days * 86400 + minutes * 60
        elif match.group(4) is None and match.group(1):  # "D-HH:MM"
            seconds = days * 86400 + first * 3600 + second * 60
        elif match.group(4) is None:  # "MM:SS"
            seconds = first * 60 + second
        else:  # "[D-]HH:MM:SS"
            seconds = days * 86400 + first * 3600 + second * 60 + third
        if seconds > 0:
            return -(-seconds // 60)
    raise ProfileError(
        f"{where}: time {value!r} is not a SLURM time limit; use minutes (90), "
        "'HH:MM:SS' or 'D-HH:MM:SS'"
    )
