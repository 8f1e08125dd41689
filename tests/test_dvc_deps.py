"""Every saxlevel module a stage script runs is a declared dependency of that stage in dvc.yaml.

The imports are derived from the code (module-level and function-level `import saxlevel...` /
`from saxlevel... import ...`, followed transitively), so a new import can never leave `dvc repro`
serving results of stale code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    """The file of a dotted saxlevel module name (a package's __init__.py), or None if it is no module."""
    base = SRC.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted saxlevel modules imported anywhere in one file (packages on the way included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] != "saxlevel":
                continue
            parts = name.split(".")
            found |= {".".join(parts[:k]) for k in range(1, len(parts) + 1) if module_file(".".join(parts[:k]))}
    return found


def transitive_files(script: Path) -> set[Path]:
    """Every saxlevel source file a script may run, following imports through the package."""
    todo, seen = [script], set()
    files: set[Path] = set()
    while todo:
        path = todo.pop()
        for name in imported_modules(path):
            f = module_file(name)
            if f and f not in files:
                files.add(f)
                todo.append(f)
        seen.add(path)
    return files


PIPELINES = ("dvc.yaml", "realheart/dvc.yaml")  # the paper's pipeline and the real-heart model's


def stages() -> list[tuple[str, Path, list[str]]]:
    """(stage name, stage script, declared deps resolved from the pipeline's folder) for every stage of every
    pipeline."""
    out = []
    for pipeline in PIPELINES:
        folder = (REPO / pipeline).parent
        for name, stage in yaml.safe_load((REPO / pipeline).read_text())["stages"].items():
            body = stage.get("do", stage)
            script = re.search(r"stages/\w+\.py", body["cmd"])
            assert script, f"stage {name}: no stages/*.py in its cmd"
            deps = [str((folder / str(d)).resolve()) for d in body.get("deps", []) if "${" not in str(d)]
            out.append((f"{pipeline}:{name}", REPO / script.group(0), deps))
    return out


@pytest.mark.parametrize("name,script,deps", stages(), ids=[s[0] for s in stages()])
def test_stage_declares_every_module_it_runs(name: str, script: Path, deps: list[str]) -> None:
    declared = [Path(d) for d in deps]
    assert script.resolve() in declared, f"{name}: its script {script.relative_to(REPO)} is not a dep"

    def covered(f: Path) -> bool:
        return any(f == d or d in f.parents for d in declared)

    missing = sorted(str(f.relative_to(REPO)) for f in transitive_files(script) if not covered(f.resolve()))
    assert not missing, f"dvc.yaml stage {name} runs {missing} but does not depend on them"


def test_the_import_walk_sees_function_level_imports(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("def f():\n    from saxlevel import predict\n")
    files = {str(f.relative_to(SRC)) for f in transitive_files(script)}
    assert {"saxlevel/__init__.py", "saxlevel/predict.py", "saxlevel/sources/rules.py"} <= files
