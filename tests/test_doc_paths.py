"""Every repository path, module and make target the documentation names exists.

In the spirit of submitit's check of its documentation links: README.md, docs/*.md, the comments
and docstrings of every tracked *.py file and, outside tests/, every string literal of the code
(error messages, help texts) may only name files, functions, commands and make targets that are
in the repository (docs/architecture.md, "Conventions").

What counts as a repository path (`extract_paths`):
- a token that starts with one of the top-level directories (TOP_DIRS) followed by "/", not
  preceded by a word character, ".", "/" or "-" (so `moco/detection/train_net.py`,
  `<run dir>/slurm/` and `~/.cache/...` are someone else's paths, and `exports/backbone-*.pt`,
  `runs/...` or `checkpoints/last.pt` are run-directory paths, not repository paths);
- one of the root files (ROOT_FILES), or a bare file name ending in ".md", which must be at the
  root or in docs/;
- placeholders stand for any name: `<...>`, `*`, an all-capital segment stem (`NAME.toml`), and
  `...` (any depth); `{a,b}` means each of a and b; a trailing "." or "," is punctuation;
- `file.py:name` (no space) also names a function, class or top-level variable of that file
  (`Class.method` for a method).
A section is cited as `docs/<name>.md, "<the start of its heading>"` and must be there.
A style rule is cited as "docs/architecture.md, Conventions, rule N" (N must be a rule there);
the old style guide (its file name, or the word STYLE and a rule number) is not in the repository.
Commands: `python -m <module>` whose first component is a package of this repository must be a
module (`<module>.py` or `<module>/__main__.py`). Make targets: `make <target>` in backticks or at
the start of a line of a fenced block, in README.md and docs/*.md, must be a Makefile target.

A path is "in the repository" when git tracks it (a file the author forgot to `git add` fails
here, not on the user's machine); without git, when it is on disk. OUTPUTS lists the few paths
the documentation names as what a command creates; PLANNED the modules an open issue adds, named
before they land (each entry fails a test once its module exists, so that it is removed).
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_DIRS = ("pretrain", "evaluate", "transfer", "results", "slurm", "tests", "benchmarks", "docs")
PACKAGES = ("pretrain", "evaluate", "transfer", "results", "slurm", "benchmarks")
ROOT_FILES = ("Makefile", "pyproject.toml", "README.md")
# Paths the documentation names as what a command writes, not as files of the repository.
OUTPUTS = {
    "slurm/profiles/mysite.toml": "README, SLURM: `cp slurm/profiles/example.toml ...` creates it",
}
# Modules issue 14 adds, named by the docs before they land; each entry must go once it exists
# (test_planned_paths_are_not_there_yet fails then).
PLANNED: dict[str, str] = {}

_SEGMENT = r"(?:[\w*\-]|\.(?!\s)|<[\w .\-]+>|\{[\w.\-,]+\})+"
_PATH = re.compile(
    rf"(?<![\w./\-])(?:{'|'.join(TOP_DIRS)})/(?:{_SEGMENT}/)*(?:{_SEGMENT})?"
    r"(?::(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?))?"
)
_ROOT_FILE = re.compile(
    rf"(?<![\w./\-])(?:{'|'.join(map(re.escape, ROOT_FILES))}|[A-Za-z][\w\-]*\.md)(?![\w/])"
)
_MODULE = re.compile(r"python3? -m ([A-Za-z_][\w.]*)")
_STYLE_RULE = re.compile(r"\bSTYLE(?:\.md)?,? (?:rules? )?\d+")  # the old style guide, not here
_CONVENTION = re.compile(r"Conventions,? rules? (\d+)")
_SECTION = re.compile(r"(?<![\w/.\-])(docs/[\w\-]+\.md),? \"([^\"]+)\"")
_MAKE = re.compile(r"(?:`make ([\w\-]+)|^\s*make ([\w\-]+))", re.MULTILINE)


@dataclass(frozen=True)
class Reference:
    """One name found in a document: where (file, line), what kind, and the text."""

    source: str
    line: int
    kind: str  # "path" | "module" | "make"
    text: str
    name: str | None = None  # the `:name` of a `file.py:name` reference

    def __str__(self) -> str:
        suffix = f":{self.name}" if self.name else ""
        return f"{self.source}:{self.line}: {self.kind} {self.text}{suffix}"


def extract_paths(text: str) -> list[tuple[str, str | None]]:
    """(path, name or None) of every repository path in `text` (see the module docstring)."""
    found = []
    for match in _PATH.finditer(text):
        path, name = match.group(0), match.group("name")
        if name:
            path = path[: -len(name) - 1]
        if not path.endswith("..."):
            path = path.rstrip(".,")
        found.append((path, name))
    for match in _ROOT_FILE.finditer(text):
        found.append((match.group(0), None))
    found += [("STYLE.md", None) for match in _STYLE_RULE.finditer(text) if "." not in match[0]]
    return found


def extract_sections(text: str) -> list[tuple[str, str]]:
    """(document, section) of every citation `docs/<name>.md, "<section heading>"`."""
    return _SECTION.findall(text)


def headings(path: str) -> list[str]:
    text = (ROOT / path).read_text(encoding="utf-8")
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


def extract_conventions(text: str) -> list[str]:
    """Rule numbers cited as "Conventions, rule N" (docs/architecture.md)."""
    return _CONVENTION.findall(text)


def convention_rules() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Conventions", 1)[1]
    return set(re.findall(r"^(\d+)\. ", section, flags=re.MULTILINE))


def extract_modules(text: str) -> list[str]:
    """Modules of this repository run as `python -m <module>` in `text`."""
    modules = [match.group(1).rstrip(".") for match in _MODULE.finditer(text)]
    return [module for module in modules if module.split(".")[0] in PACKAGES]


def extract_make_targets(text: str) -> list[str]:
    return [a or b for a, b in _MAKE.findall(text)]


@cache
def tracked_files() -> frozenset[str]:
    """Files git tracks (falls back to every file on disk outside hidden folders)."""
    try:
        listing = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        return frozenset(listing.splitlines())
    except (OSError, subprocess.CalledProcessError):
        files = (p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file())
        return frozenset(f for f in files if not any(s.startswith(".") for s in f.split("/")))


def _pattern(path: str) -> re.Pattern:
    """A regex over tracked file names for `path` (no `{a,b}` left) with its placeholders."""
    segments = path.rstrip("/").split("/")
    parts = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "...":
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        stem, dot, ext = segment.partition(".")
        if len(stem) > 1 and stem.isupper():
            segment = "<>" + dot + ext
        text = "".join(
            "[^/]+" if piece.startswith("<") else "[^/]*" if piece == "*" else re.escape(piece)
            for piece in re.split(r"(<[^>]*>|\*)", segment)
        )
        parts.append(text if last else text + "/")
    return re.compile("".join(parts) + ("/.+" if path.endswith("/") else "(?:/.+)?"))


def path_exists(path: str) -> bool:
    """True if a tracked file is `path`, lies under the directory `path`, or matches its
    placeholders; each `{a,b}` alternative must match on its own."""
    alternatives = re.findall(r"\{([^}]*)\}", path)
    if alternatives:
        first = alternatives[0]
        return all(
            path_exists(path.replace("{" + first + "}", option, 1)) for option in first.split(",")
        )
    if "/" not in path and path.endswith(".md"):
        return path in tracked_files() or f"docs/{path}" in tracked_files()
    pattern = _pattern(path)
    return any(pattern.fullmatch(file) for file in tracked_files())


def defined_names(path: str) -> set[str]:
    """Top-level functions, classes and assigned names of `path`, and `Class.method`s."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body if hasattr(item, "name")}
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


def module_exists(module: str) -> bool:
    path = module.replace(".", "/")
    return {f"{path}.py", f"{path}/__main__.py"} & tracked_files() != set()


def python_doc_text(path: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of the Python file `path`, and outside tests/
    of every string literal (error messages and help texts name files and commands too)."""
    source = (ROOT / path).read_text(encoding="utf-8")
    pieces = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            pieces.append((token.start[0], token.string))
    tree = ast.parse(source)
    if not path.startswith("tests/"):
        strings = [node for node in ast.walk(tree) if isinstance(node, ast.Constant)]
    else:
        scopes = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        bodies = [node.body for node in ast.walk(tree) if isinstance(node, scopes)]
        strings = [body[0].value for body in bodies if body and isinstance(body[0], ast.Expr)]
    for node in strings:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            pieces.append((node.lineno, node.value))
    return sorted(pieces)


def references(source: str, pieces: list[tuple[int, str]], markdown: bool) -> list[Reference]:
    found = []
    for first_line, text in pieces:
        for offset, line in enumerate(text.splitlines()):
            where = first_line + offset
            found += [Reference(source, where, "path", p, n) for p, n in extract_paths(line)]
            found += [Reference(source, where, "module", m) for m in extract_modules(line)]
            found += [Reference(source, where, "rule", n) for n in extract_conventions(line)]
            found += [Reference(source, where, "section", d, h) for d, h in extract_sections(line)]
        if markdown:
            for match in _MAKE.finditer(text):
                line = first_line + text.count("\n", 0, match.start())
                found.append(Reference(source, line, "make", match.group(1) or match.group(2)))
    return found


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w\-]+):", text, flags=re.MULTILINE))


def broken(reference: Reference) -> str | None:
    """Why `reference` names nothing in the repository, or None."""
    if reference.kind == "module":
        return None if module_exists(reference.text) else "no such module"
    if reference.kind == "rule":
        return None if reference.text in convention_rules() else "no such rule in Conventions"
    if reference.kind == "section":
        if reference.text not in tracked_files():
            return "no such document"
        if not any(h.startswith(reference.name) for h in headings(reference.text)):
            return f"{reference.text} has no section {reference.name!r}"
        return None
    if reference.kind == "make":
        return None if reference.text in makefile_targets() else "no such make target"
    if reference.text in OUTPUTS or reference.text in PLANNED:
        return None
    if not path_exists(reference.text):
        return "no such path"
    if reference.name:
        if not reference.text.endswith(".py") or reference.text not in tracked_files():
            return f"{reference.text} is not one Python file"
        if reference.name not in defined_names(reference.text):
            return f"{reference.text} defines no {reference.name}"
    return None


def documents() -> list[str]:
    return ["README.md", *sorted(f for f in tracked_files() if re.fullmatch(r"docs/[^/]+\.md", f))]


def python_files() -> list[str]:
    return sorted(f for f in tracked_files() if f.endswith(".py"))


def failures(files: list[str], markdown: bool) -> list[str]:
    found = []
    for path in files:
        if markdown:
            pieces = [(1, (ROOT / path).read_text(encoding="utf-8"))]
        else:
            pieces = python_doc_text(path)
        for reference in references(path, pieces, markdown):
            why = broken(reference)
            if why:
                found.append(f"{reference}: {why}")
    return found


# ---- the extractor and the checks, on made-up text --------------------------------------------


def test_extractor_finds_repository_paths_and_only_those():
    text = (
        "see pretrain/train.py:train_step and results/record.py, the tree transfer/detection/, "
        "slurm/profiles/<name>.toml, docs/protocols.md, pyproject.toml and STYLE.md; "
        "not moco/detection/train_net.py, runs/demo/exports/backbone-*.pt, ~/.cache/x/results/y, "
        "<run dir>/slurm/ or byol/utils/schedules.py."
    )
    assert extract_paths(text) == [
        ("pretrain/train.py", "train_step"),
        ("results/record.py", None),
        ("transfer/detection/", None),
        ("slurm/profiles/<name>.toml", None),
        ("docs/protocols.md", None),
        ("pyproject.toml", None),
        ("STYLE.md", None),
    ]
    assert extract_paths("loading is strict (STYLE 18); STYLE.md rule 16") == [
        ("STYLE.md", None),
        ("STYLE.md", None),
    ]
    assert extract_conventions("docs/architecture.md, Conventions, rule 18") == ["18"]
    cited = 'docs/architecture.md, "Data flow"; docs/protocols.md "Deviations"'
    assert extract_sections(cited) == [
        ("docs/architecture.md", "Data flow"),
        ("docs/protocols.md", "Deviations"),
    ]
    assert broken(Reference("x.py", 1, "section", "docs/architecture.md", "Data flow")) is None
    assert "no section" in broken(Reference("x.py", 1, "section", "docs/protocols.md", "Data"))
    assert broken(Reference("x.py", 1, "rule", "18")) is None
    assert broken(Reference("x.py", 1, "rule", "99")) == "no such rule in Conventions"
    assert extract_modules("python -m evaluate.linear --ckpt x; python -m pytest") == [
        "evaluate.linear"
    ]
    assert extract_make_targets("run `make demo`, then\n    make test-gpu\nto make sure") == [
        "demo",
        "test-gpu",
    ]


@pytest.mark.parametrize(
    "path",
    [
        "pretrain/train.py",
        "transfer/detection/",
        "transfer/{detection,segmentation}/protocols.py",
        "slurm/profiles/<name>.toml",
        "slurm/profiles/NAME.toml",
        "tests/results/golden/*.md",
        "transfer/.../protocols.py",
    ],
)
def test_existing_paths_and_placeholders_are_found(path):
    assert path_exists(path)


@pytest.mark.parametrize(
    "path",
    [
        "pretrain/trian.py",
        "transfer/convert.py",
        "transfer/{detection,classification}/protocols.py",
        "slurm/profiles/<name>.yaml",
        "STYLE.md",
        "docs/byol-protocol.md",
    ],
)
def test_made_up_paths_are_refused(path):
    assert not path_exists(path)
    assert broken(Reference("x.md", 1, "path", path)) == "no such path"


def test_function_references_commands_and_make_targets_are_checked():
    assert broken(Reference("x.md", 1, "path", "pretrain/train.py", "train_step")) is None
    assert broken(Reference("x.md", 1, "path", "pretrain/loss.py", "symmetric_loss")) is None
    assert "defines no" in broken(Reference("x.md", 1, "path", "pretrain/loss.py", "train_step"))
    assert broken(Reference("x.md", 1, "module", "transfer.detection")) is None  # __main__.py
    assert broken(Reference("x.md", 1, "module", "transfer.convert")) == "no such module"
    assert broken(Reference("x.md", 1, "make", "demo")) is None
    assert broken(Reference("x.md", 1, "make", "deploy")) == "no such make target"


def test_made_up_paths_in_comments_docstrings_and_messages_are_reported(tmp_path, monkeypatch):
    source = (
        '"""Module doc naming results/record.py."""\n\n'
        "x = 1  # see pretrain/nope.py\n"
        'MESSAGE = f"convert it with python -m transfer.convert ({x}, transfer/convert.py)"\n'
    )
    (tmp_path / "m.py").write_text(source)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    found = references("m.py", python_doc_text("m.py"), markdown=False)
    assert [str(reference) for reference in found] == [
        "m.py:1: path results/record.py",
        "m.py:3: path pretrain/nope.py",
        "m.py:4: path transfer/convert.py",
        "m.py:4: module transfer.convert",
    ]
    assert [bool(broken(reference)) for reference in found] == [False, True, True, True]


# ---- the repository ----------------------------------------------------------------------------


def test_readme_and_docs_name_only_what_exists():
    assert "docs/architecture.md" in documents() and "docs/protocols.md" in documents()
    found = failures(documents(), markdown=True)
    assert not found, "\n".join(found)


def test_code_comments_docstrings_and_messages_name_only_what_exists():
    found = failures(python_files(), markdown=False)
    assert not found, "\n".join(found)


def test_outputs_named_in_docs_are_not_in_the_repository():
    for path in OUTPUTS:
        assert path not in tracked_files(), f"{path} is tracked: drop it from OUTPUTS"


def module_map(text: str) -> set[str]:
    """Repository paths of the files docs/architecture.md's module map lists: the first fenced
    block after "## Module map", where `name/` at some indentation opens a directory and every
    `file.ext` after it (not after a "/") is a file of the innermost open directory."""
    block = text.split("## Module map", 1)[1].split("```", 2)[1]
    listed, stack = set(), []  # stack of (indentation, directory)
    for line in block.splitlines()[1:]:
        indent = len(line) - len(line.lstrip())
        first = line.split(maxsplit=1)[0] if line.strip() else ""
        if first.endswith("/"):
            stack = [(i, d) for i, d in stack if i < indent] + [(indent, first)]
        elif first and indent <= (stack[-1][0] if stack else 0):
            stack = [(i, d) for i, d in stack if i < indent]
        prefix = "".join(d for _, d in stack)
        for name in re.findall(r"(?<![\w/.\-])(\w+\.(?:py|toml|sh|yaml))\b", line):
            listed.add(prefix + name if name not in ROOT_FILES else name)
    return listed


def test_module_map_parser():
    text = (
        "## Module map\n\n```\nMakefile  demo\npretrain/  BYOL\n"
        "  loss.py   the loss (not pretrain/x.py)\n"
        "transfer/\n  detection/   (__main__.py -> cli.py)\n    data.py, models.py\n"
        "  export.py   exports\n```\n"
    )
    assert module_map(text) == {
        "pretrain/loss.py",
        "transfer/detection/__main__.py",
        "transfer/detection/cli.py",
        "transfer/detection/data.py",
        "transfer/detection/models.py",
        "transfer/export.py",
    }


def test_module_map_matches_the_tree():
    listed = module_map((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    packages = {f.rsplit("/", 1)[0] for f in tracked_files() if f.endswith("/__init__.py")}
    modules = {
        f
        for f in tracked_files()
        if f.endswith(".py")
        and f.rsplit("/", 1)[0] in packages
        and f.split("/")[0] in PACKAGES
        and not f.endswith(("/__init__.py", "/__main__.py"))
    }
    assert sorted(modules - listed) == [], "modules missing from docs/architecture.md's map"
    unknown = sorted(f for f in listed - set(PLANNED) if f not in tracked_files())
    assert unknown == [], "files in docs/architecture.md's module map that do not exist"


def test_planned_paths_are_not_there_yet():
    landed = sorted(path for path in PLANNED if path_exists(path))
    assert not landed, f"{landed} exist now: remove them from PLANNED in {Path(__file__).name}"


def deviation_rows(path: str) -> list[str]:
    """The rows of the deviations table (the first table after a heading with "Deviations")."""
    text = (ROOT / path).read_text(encoding="utf-8")
    section = re.split(r"^#+ .*Deviations.*$", text, maxsplit=1, flags=re.MULTILINE)[1]
    rows = re.findall(r"^\|.*\|$", section.split("\n#", 1)[0], flags=re.MULTILINE)
    return [row for row in rows[2:]]  # after the header and the |---| line


def test_deviation_tables_agree_with_each_other_and_the_code():
    rows = deviation_rows("README.md")
    assert rows == deviation_rows("docs/protocols.md"), "README and docs/protocols.md differ"
    tagged = {}  # tag -> files whose code carries DEVIATION(tag)
    for path in sorted(tracked_files()):
        if path.endswith(".py") and not path.startswith("tests/"):
            text = (ROOT / path).read_text(encoding="utf-8")
            for tag in re.findall(r"DEVIATION\(([\w\-]+)\)", text):
                tagged.setdefault(tag, set()).add(path)
    listed = {}
    for row in rows:
        tag = re.match(r"\| `([\w\-]+)`", row).group(1)
        files = {path for path, _ in extract_paths(row.split("|")[2]) if path.endswith(".py")}
        listed.setdefault(tag, set()).update(files)
    assert sorted(listed) == sorted(tagged), "tags in the tables vs DEVIATION(<tag>) in the code"
    for tag, files in listed.items():
        assert files and files <= tagged[tag], f"{tag}: {sorted(files)} vs {sorted(tagged[tag])}"
