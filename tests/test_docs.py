"""The guide's commands are real: every `saxlevel` command in README.md and docs/ parses with the current command
line, and every script or module a `python` command names exists (the guide is built by `mkdocs build --strict` in
CI, which catches broken links and pages)."""

from __future__ import annotations

import importlib.util
import re
import shlex

import pytest

from saxlevel.cli import build_parser

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def code_lines() -> list[tuple[str, str]]:
    """(page, command) for every line of an indented code block, its trailing comment cut."""
    out = []
    for page in PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("    ") and line.strip():
                out.append((page.name, line.strip().split("  #")[0].strip()))
    return out


def commands(prefix: str) -> list[tuple[str, str]]:
    """Full commands (not synopses with [optional] parts or a|b choices) that start with ``prefix``, also when
    they follow `&&` or `;`."""
    found = []
    for page, line in code_lines():
        for part in re.split(r"&&|;", line):
            part = part.strip()
            if part.startswith(prefix) and "[" not in part and "|" not in part:
                found.append((page, part))
    return found


def test_the_guide_has_commands() -> None:
    assert len(commands("saxlevel ")) >= 10 and len(commands("python ")) >= 10


@pytest.mark.parametrize("page,command", commands("saxlevel "))
def test_every_saxlevel_command_parses(page: str, command: str) -> None:
    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as exc:
        pytest.fail(f"{page}: `{command}` does not parse (exit {exc.code})")


@pytest.mark.parametrize("page,command", commands("python "))
def test_every_python_command_names_something_that_exists(page: str, command: str) -> None:
    words = shlex.split(command)
    if words[1] == "-m":
        assert importlib.util.find_spec(words[2]) is not None, f"{page}: `{command}`: no module {words[2]}"
    elif words[1].endswith(".py"):
        assert (REPO / words[1]).is_file(), f"{page}: `{command}`: no file {words[1]}"


def test_a_wrong_option_is_caught() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "STUDY", "--no-such-option"])
