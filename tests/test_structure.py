"""The package's and the test suite's shape: no test module imports another, no import cycle between modules
or wings (shared/tools/import_cycles.py), nothing private imported across minigpt_helpers modules, every name
in an ``__all__`` resolves, and the wheel that ``pip`` builds carries every wing and every module."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minigpt_helpers"
IMPORT_CYCLES = ROOT.parent / "shared/tools/import_cycles.py"
WINGS = ["data", "tokenizers", "model", "training", "interop", "finetune", "evaluation", "align", "serve", "diagrams"]


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) for every import in ``tree``, those inside functions included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "tests":  # from tests import test_x
                found += [(node.lineno, f"tests.{alias.name}") for alias in node.names]
    return found


def is_private(name: str) -> bool:
    """A leading underscore that is not a dunder (``__version__`` is public)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


# ----------------------------------------------------------------------------------------------- the tests
def test_no_test_module_imports_another():
    """Shared fixtures live in conftest.py and shared builders in modules that are not test modules (pytest
    would otherwise collect, and run, an imported module's tests twice)."""
    offenders = []
    for path in sorted(Path(__file__).parent.rglob("test_*.py")):
        for line, module in imported_modules(parse(path)):
            last = module.rsplit(".", 1)[-1]
            if last.startswith("test_") or last == "conftest" or module.split(".")[0] == "tests":
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offenders == []


def test_the_structure_checks_can_fail():
    """The checks below find what they look for: a test module import and a cross-module private import."""
    assert imported_modules(ast.parse("def f():\n    from test_chat import tiny_model\n")) == [(2, "test_chat")]
    tree = ast.parse("from ..data.sources import _gen, public, __version__\n")
    assert private_imports(tree, PACKAGE / "finetune" / "x.py") == ["minigpt_helpers.data.sources._gen"]
    tree = ast.parse("from . import textfiles\ntextfiles._split()\n")
    assert private_imports(tree, PACKAGE / "data" / "x.py") == ["minigpt_helpers.data.textfiles._split"]


@pytest.mark.parametrize("wings", [False, True], ids=["modules", "wings"])
def test_no_import_cycles(wings):
    """The import rule: a wing imports only wings below it, so neither modules nor wings form a cycle."""
    if not IMPORT_CYCLES.is_file():
        pytest.skip(f"{IMPORT_CYCLES} is not here (it lives beside the repository, in shared/tools/)")
    args = [sys.executable, str(IMPORT_CYCLES), "minigpt_helpers"] + (["--wings"] if wings else [])
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    assert lines[-1].startswith("0 import cycles"), proc.stdout
    assert proc.returncode == 0, proc.stdout


def resolve(path: Path, level: int, module: str | None) -> str:
    """The dotted name that ``from <level dots><module> import`` in ``path`` refers to."""
    if level == 0:
        return module or ""
    anchor = path.relative_to(ROOT).with_suffix("").parts[:-1]  # the file's package
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join(anchor + ((module,) if module else ()))


def is_package_module(dotted: str) -> bool:
    """Whether ``dotted`` (minigpt_helpers.x.y) is a module or sub-package of this repository's package."""
    base = ROOT.joinpath(*dotted.split("."))
    return dotted.split(".")[0] == "minigpt_helpers" and (base.with_suffix(".py").is_file() or base.is_dir())


def private_imports(tree: ast.Module, path: Path) -> list[str]:
    """Private names that ``path`` takes from another minigpt_helpers module: ``from .x import _name``, or
    ``from . import x`` / ``import minigpt_helpers.x as x`` followed by ``x._name``."""
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = resolve(path, node.level, node.module)
            if not source.startswith("minigpt_helpers"):
                continue
            for alias in node.names:
                if is_private(alias.name):
                    found.append(f"{source}.{alias.name}")
                elif is_package_module(f"{source}.{alias.name}"):
                    modules[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            modules.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("minigpt_helpers")})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if is_private(node.attr):
                found.append(f"{modules[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_is_imported_across_modules():
    """A leading underscore means "only this module uses it": another module that needs it needs a public name."""
    offenders = [f"{path.relative_to(ROOT)} uses {name}" for path in package_modules()
                 for name in private_imports(parse(path), path)]
    assert offenders == []


def dotted(path: Path) -> str:
    """minigpt_helpers/data/rows.py -> minigpt_helpers.data.rows; a package's __init__.py -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_with_all() -> list[str]:
    """The modules that declare an ``__all__`` (found in their source, so that collecting imports nothing)."""
    return [dotted(path) for path in package_modules() if "__all__" in path.read_text(encoding="utf-8")]


@pytest.mark.parametrize("module", modules_with_all())
def test_every_name_in_all_resolves(module):
    """``from minigpt_helpers import *`` (and ``m.<name>`` for every advertised name) works."""
    mod = importlib.import_module(module)
    assert len(mod.__all__) == len(set(mod.__all__)), "a name is listed twice"
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []


@pytest.mark.slow
def test_the_wheel_carries_every_wing_and_module(tmp_path):
    """``pip wheel`` of the project (pyproject.toml, README.md and the package, copied so that the build leaves
    nothing in the working tree) holds every sub-package's ``__init__.py`` and every module of the repository."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "minigpt_helpers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("minigpt_helpers-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    assert {f"minigpt_helpers/{wing}/__init__.py" for wing in WINGS} <= inside
    wanted = {path.relative_to(ROOT).as_posix() for path in package_modules()}
    assert sorted(wanted - inside) == []
