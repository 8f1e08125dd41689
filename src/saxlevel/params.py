"""Typed, validated access to params.yaml (every error names the key and the fix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from saxlevel.backbones import SPECS
from saxlevel.heads import HEADS

BACKBONES = tuple(SPECS)


class ParamError(ValueError):
    """A parameter in params.yaml (or on the command line) is missing or invalid."""


def load(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml; a missing file is a clear error."""
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path} not found: run from the repository root or pass --params PATH")
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping at the top level")
    return data


def get(params: dict[str, Any], dotted: str, default: Any = ...) -> Any:
    """Look up ``a.b.c``; without a default a missing key is a ParamError naming it."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ...:
                raise ParamError(f"params.yaml: missing key '{dotted}'")
            return default
        node = node[part]
    return node


def as_list(value: Any, key: str) -> list[str]:
    """A YAML list of names; a bare string is the common `-S grid.heads=bigru` mistake."""
    if isinstance(value, str):
        raise ParamError(
            f"params.yaml: '{key}' must be a list, got the string {value!r}; "
            f"write it as a YAML list, e.g. dvc exp run -S '{key}=[{value}]'"
        )
    if not isinstance(value, list) or not value:
        raise ParamError(f"params.yaml: '{key}' must be a non-empty list, got {value!r}")
    return [str(v) for v in value]


def grid(params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """grid.backbones and grid.heads, validated against the known names."""
    backbones = as_list(get(params, "grid.backbones"), "grid.backbones")
    heads = as_list(get(params, "grid.heads"), "grid.heads")
    for name in backbones:
        if name not in BACKBONES:
            raise ParamError(f"params.yaml: grid.backbones has unknown backbone {name!r}; choose from {BACKBONES}")
    for name in heads:
        if name not in HEADS:
            raise ParamError(f"params.yaml: grid.heads has unknown head {name!r}; choose from {HEADS}")
    return backbones, heads


def selected_model(params: dict[str, Any]) -> tuple[str, str]:
    """The selected (backbone, head); it must be one of the models the grid trains."""
    backbones, heads = grid(params)
    backbone, head = str(get(params, "backbone")), str(get(params, "head"))
    if backbone not in backbones or head not in heads:
        raise ParamError(
            f"params.yaml: selected model {backbone}-{head} is not in the grid "
            f"(grid.backbones={backbones}, grid.heads={heads}); pick one of those or add it to the grid"
        )
    return backbone, head
