"""The command-line contract, checked on every CLI of the project in a subprocess.

Every module under the packages with `main(argv=None)` and an `if __name__ == "__main__":` guard
(or a package `__main__.py`) is a CLI and must be in CLIS, so a new CLI cannot be left out:
(a) `--help` exits 0 and every option of every parser it builds has a help text;
(b) an unknown flag is a usage error (exit 2), and so is `--fast` where the CLI has no cheap
    recorded variant of its protocol, and an abbreviation: `--he` is not `--help`, nor is an old
    spelling such as `--ckpt-every` a new one's prefix (parsers take allow_abbrev=False);
(c) an input that does not exist (a checkpoint, a records dir, a run dir, a data set) fails the
    run (exit 1) with exactly one `error: <sentence>` line naming it and no traceback.
The benchmarks are scripts that print figures: they take (a) and (b) only.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from transfer.export import ENGINES

PACKAGES = ("pretrain", "evaluate", "transfer", "results", "slurm", "benchmarks")


@dataclass(frozen=True)
class Cli:
    """How to call one CLI: its `python -m` words, and arguments naming an input that is missing
    ({missing}: a path that does not exist; None for a benchmark)."""

    words: tuple[str, ...]
    missing_input: tuple[str, ...] | None
    cheap_variant: bool = False  # has --fast, the cheap recorded variant of its protocol


CKPT = ("--ckpt", "{missing}.pt")
CLIS = {
    "pretrain.launch": Cli(("pretrain.launch",), ("--status", "{missing}")),
    "evaluate.linear": Cli(("evaluate.linear",), (*CKPT, "--dataset", "synthetic"), True),
    "evaluate.knn": Cli(("evaluate.knn",), (*CKPT, "--dataset", "synthetic")),
    "evaluate.convert": Cli(("evaluate.convert",), ("{missing}",)),
    "evaluate.semisup": Cli(
        ("evaluate.semisup",), (*CKPT, "--dataset", "synthetic", "--fraction", "1"), True
    ),
    "transfer.detection": Cli(("transfer.detection",), CKPT),
    "transfer.segmentation": Cli(("transfer.segmentation",), CKPT),
    "transfer.depth": Cli(("transfer.depth",), (*CKPT, "--data", "{missing}")),
    "transfer.classification": Cli(
        ("transfer.classification",), (*CKPT, "--dataset", "dtd", "--data", "{missing}")
    ),
    "transfer.export detectron2": Cli(("transfer.export", "detectron2"), CKPT),
    "transfer.export mmseg": Cli(("transfer.export", "mmseg"), CKPT),
    "results.tables": Cli(("results.tables",), ("--records", "{missing}")),
    "results.report": Cli(("results.report",), ("--records", "{missing}")),
    "results.pipeline": Cli(
        ("results.pipeline",),
        ("--preset", "tiny_cpu", "--dataset", "folder", "--data", "{missing}"),
        True,
    ),
    "benchmarks.data": Cli(("benchmarks.data",), None),
    "benchmarks.demo": Cli(("benchmarks.demo",), None),
    "benchmarks.demo_recipe": Cli(("benchmarks.demo_recipe",), CKPT),
    "benchmarks.detection_step": Cli(("benchmarks.detection_step",), None),
    "benchmarks.linear": Cli(("benchmarks.linear",), None),
    "benchmarks.step": Cli(("benchmarks.step",), None),
    "benchmarks.transfer_linear": Cli(("benchmarks.transfer_linear",), None),
    "benchmarks.vit_dense_step": Cli(("benchmarks.vit_dense_step",), None),
}
RUNS = [name for name, cli in CLIS.items() if cli.missing_input is not None]

# Runs a CLI as `python -m` does, recording every parser that parses; writes what it saw to $SPY.
SPY = """
import argparse, json, os, runpy, sys
parsers = []
parse_known_args = argparse.ArgumentParser.parse_known_args
def spy(self, args=None, namespace=None):
    parsers.append(self)
    return parse_known_args(self, args, namespace)
argparse.ArgumentParser.parse_known_args = spy
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
options = [[(action.option_strings or [action.dest], action.help) for action in parser._actions]
           for parser in parsers]
with open(os.environ["SPY"], "w") as out:
    json.dump({"code": code, "options": options}, out)
"""


def run(cwd: Path, *argv: str, spy: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", SPY, *argv] if spy else [sys.executable, "-m", *argv]
    if spy:
        env["SPY"] = str(spy)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def discovered_clis() -> set[str]:
    """Every CLI under PACKAGES, named as it is run (`python -m <name>`)."""
    found = set()
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if path.name == "__main__.py":
                found.add(module.removesuffix(".__main__"))
                continue
            tree = ast.parse(path.read_text())
            mains = [node for node in tree.body if getattr(node, "name", None) == "main"]
            guarded = any(
                isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
                for node in tree.body
            )
            if not (mains and guarded):
                continue
            assert ast.unparse(mains[0].args) == "argv: list[str] | None=None", module
            package_main = path.parent / "__main__.py"
            if package_main.exists() and module in package_main.read_text():
                continue  # run as its package (`python -m transfer.detection`)
            found.add(module)
    for engine in ENGINES:  # sub-commands: `python -m transfer.export <engine>`
        found.add(f"transfer.export {engine}")
    found.discard("transfer.export")
    return found


def test_every_cli_is_in_the_contract():
    assert discovered_clis() == set(CLIS)


@pytest.mark.parametrize("name", list(CLIS))
def test_help_exits_0_and_every_option_has_a_help_text(tmp_path, name):
    spy = tmp_path / "spy.json"
    result = run(tmp_path, *CLIS[name].words, "--help", spy=spy)
    seen = json.loads(spy.read_text())
    assert seen["code"] in (0, None), result.stderr[-2000:]
    assert result.stdout.startswith("usage: ") and "Traceback" not in result.stderr
    assert seen["options"], f"{name} --help built no parser"
    for options in seen["options"]:
        silent = [flags for flags, text in options if not (text or "").strip()]
        hidden = [flags for flags, text in options if text == "==SUPPRESS=="]
        assert not silent + hidden, f"{name}: options without a help text: {silent + hidden}"


@pytest.mark.parametrize("name", list(CLIS))
def test_unknown_flags_and_fast_without_a_cheap_variant_are_usage_errors(tmp_path, name):
    cli = CLIS[name]
    given = [arg.format(missing=tmp_path / "missing") for arg in cli.missing_input or ()]
    unknown = ["--no-such-flag"] + ([] if cli.cheap_variant else ["--fast"])
    result = run(tmp_path, *cli.words, *given, *unknown)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: unrecognized arguments: {' '.join(unknown)}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", list(CLIS))
def test_abbreviations_are_unknown_flags(tmp_path, name):
    cli = CLIS[name]
    given = [arg.format(missing=tmp_path / "missing") for arg in cli.missing_input or ()]
    result = run(tmp_path, *cli.words, *given, "--he")
    assert result.returncode == 2, f"{name} took --he for --help: pass allow_abbrev=False"
    assert "error: unrecognized arguments: --he" in result.stderr


@pytest.mark.parametrize("name", RUNS)
def test_a_missing_input_fails_with_one_sentence(tmp_path, name):
    cli = CLIS[name]
    missing = tmp_path / "missing"
    given = [arg.format(missing=missing) for arg in cli.missing_input]
    result = run(tmp_path, *cli.words, *given)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(errors) == 1 and str(missing) in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
