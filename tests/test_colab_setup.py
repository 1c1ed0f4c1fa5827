"""A fresh machine (Colab) gets everything the chapters import from the setup cell's one install line.

Each chapter's first code cell installs the course with its ``course`` extra (:data:`SETUP_INSTALL`).
Every module a notebook imports must then be in the standard library, the course itself, or a
distribution that pyproject.toml names: a core dependency or one in the ``course`` extra. Module names
map to distributions through the installed packages' metadata
(``importlib.metadata.packages_distributions``, no network); a module not installed here is taken to
be the distribution of the same name. The package itself may also import what those distributions
depend on (``datasets`` brings ``pyarrow``), since it is installed by the same line.

The README's Colab badges and every setup cell's clone URL name the same repository, so that a fork
changes one string everywhere (see README, "Repository").
"""

from __future__ import annotations

import ast
import json
import re
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PACKAGE = "minigpt_helpers"
#: the line of every chapter's setup cell that installs the course and its ``course`` extra
SETUP_INSTALL = 'subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "minigpt[course]"], check=True)'
#: the clone URL in the setup cells: ``repo = os.environ.get("MINIGPT_REPO", "<url>")``
CLONE_URL = re.compile(r'os\.environ\.get\("MINIGPT_REPO",\s*"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?"\)')
README_REPO = re.compile(r"^\*\*Repository:\*\* https://github\.com/([\w.-]+/[\w.-]+)\s*$", re.M)
EXTRA_MARKER = re.compile(r"\bextra\s*==")
BADGE = re.compile(r"\]\(https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/notebooks/"
                   r"([\w.-]+\.ipynb)\)")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Foo_Bar`` and ``foo-bar`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group())


def declared() -> set[str]:
    """The distributions the setup line installs: the core dependencies and the ``course`` extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["course"]}


def with_their_dependencies(names: set[str]) -> set[str]:
    """``names`` and, through the installed metadata, everything they require (extras' requirements left out)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:  # not installed here: its own dependencies are unknown
            continue
        todo += [requirement_name(r) for r in reqs if not EXTRA_MARKER.search(r)]
    return seen


@cache
def installed() -> dict[str, list[str]]:
    return packages_distributions()


def distributions_of(module: str) -> set[str]:
    return {canonical(d) for d in installed().get(module, [module])}


def code_source(cell: dict) -> str:
    """A code cell's Python: IPython's ``%magic`` and ``!shell`` lines left out."""
    text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("%", "!")))


def imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, at any depth (inside a function, a try, an if)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def unprovided(modules: set[str], provided: set[str]) -> dict[str, set[str]]:
    """``module -> its distributions`` for each module that is not stdlib, not the course, and not ``provided``."""
    third_party = {m for m in modules if m not in sys.stdlib_module_names and m != PACKAGE}
    return {m: distributions_of(m) for m in sorted(third_party) if not distributions_of(m) & provided}


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_import_is_installed_by_the_setup_line(path: Path):
    modules = set().union(*(imported_modules(code_source(c)) for c in code_cells(path)))
    missing = unprovided(modules, declared())
    assert not missing, (f"{path.name} imports modules that neither the core dependencies nor the `course` extra "
                         f"install (add their distributions to [project.optional-dependencies] course): {missing}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_setup_cell_installs_the_course_extra(path: Path):
    assert SETUP_INSTALL in code_source(code_cells(path)[0]), f"the first code cell must contain: {SETUP_INSTALL}"


def test_the_package_imports_only_what_the_setup_line_installs():
    # also the imports inside functions: to_hf() imports transformers only when called
    modules = set().union(*(imported_modules(f.read_text(encoding="utf-8"))
                            for f in (ROOT / PACKAGE).rglob("*.py")))
    missing = unprovided(modules, with_their_dependencies(declared()))
    assert not missing, f"{PACKAGE} imports modules that the setup line does not install: {missing}"


def test_the_import_check_catches_what_it_looks_for():
    source = ("import os, numpy as np\nfrom minigpt_helpers import stream_documents\nfrom . import local\n"
              "def f():\n    import not_a_dependency_xyz.sub\ntry:\n    from peft import LoraConfig\n"
              "except ImportError:\n    pass\n")
    assert imported_modules(source) == {"os", "numpy", PACKAGE, "not_a_dependency_xyz", "peft"}
    assert unprovided(imported_modules(source), {"numpy", "peft"}) == {"not_a_dependency_xyz": {"not-a-dependency-xyz"}}
    assert unprovided({"peft"}, {"numpy"}) == {"peft": {"peft"}}
    assert requirement_name("Foo_Bar[x]>=1.0; python_version>'3'") == "foo-bar"
    assert {"transformers", "peft", "tiktoken"} <= declared()
    assert not CLONE_URL.search('os.environ.get("OTHER", "https://github.com/a/b")')


def test_the_readme_badges_and_the_setup_cells_name_one_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    repo = README_REPO.findall(readme)
    assert len(repo) == 1, "README needs one line '**Repository:** https://github.com/OWNER/REPO'"
    badges = BADGE.findall(readme)
    assert sorted(name for _, name in badges) == sorted(p.name for p in NOTEBOOKS), "one Colab badge per chapter"
    assert {owner_repo for owner_repo, _ in badges} == set(repo)
    for path in NOTEBOOKS:
        urls = CLONE_URL.findall(code_source(code_cells(path)[0]))
        assert urls == repo, f"{path.name}'s setup cell clones {urls}, the README names {repo}"
