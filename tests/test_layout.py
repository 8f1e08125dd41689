"""The package's shape (issue: the house and its guide): folders by the path the data takes, small modules, thin
stage scripts, and ingest/evaluation free of TensorFlow."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from conftest import REPO

SRC = REPO / "src" / "saxlevel"
TF_FREE = ("sources", "ingest", "evaluation", "phantom")


def code_lines(path) -> int:
    """Non-blank lines that are not comments (docstrings count)."""
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("package", TF_FREE)
def test_package_imports_without_tensorflow(package: str) -> None:
    # A fresh interpreter: every module of the package imported, then nothing of TensorFlow or Keras loaded, and
    # evaluation knows nothing of the learning package.
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"pkg = importlib.import_module('saxlevel.{package}')\n"
        "for m in pkgutil.iter_modules(pkg.__path__):\n"
        "    importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'keras')\n"
        "                        or n.startswith('saxlevel.learning'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing saxlevel.{package} loads {loaded[:5]}"


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_at_most_ten_modules_at_the_top() -> None:
    top = sorted(p.name for p in SRC.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 10, top


def test_stage_scripts_stay_thin() -> None:
    fat = {p.name: n for p in sorted((REPO / "stages").glob("*.py")) if (n := code_lines(p)) > 60}
    assert not fat, f"stage scripts over 60 code lines: {fat}"


def test_every_package_says_what_it_holds() -> None:
    for init in sorted(SRC.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(SRC)} has no docstring"


def test_code_lines_counts_docstrings_not_comments(tmp_path) -> None:
    f = tmp_path / "s.py"
    f.write_text('"""Doc."""\n\n# comment\nx = 1\n')
    assert code_lines(f) == 2
