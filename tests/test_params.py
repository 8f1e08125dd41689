"""params.yaml access: clear errors naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from saxlevel import params as P

from conftest import REPO


def test_repo_params_are_valid() -> None:
    prm = P.load(REPO / "params.yaml")
    backbones, heads = P.grid(prm)
    assert backbones == list(P.BACKBONES) and heads == list(P.HEADS)
    assert P.selected_model(prm) == (prm["backbone"], prm["head"])


def test_selected_model_outside_grid() -> None:
    prm = {"grid": {"backbones": ["mobilenet"], "heads": ["dense"]}, "backbone": "mobilenet", "head": "bigru"}
    with pytest.raises(P.ParamError, match="mobilenet-bigru is not in the grid"):
        P.selected_model(prm)


def test_grid_string_instead_of_list() -> None:
    prm = {"grid": {"backbones": ["mobilenet"], "heads": "bigru"}}
    with pytest.raises(P.ParamError, match=r"grid.heads=\[bigru\]"):
        P.grid(prm)
    with pytest.raises(P.ParamError, match="unknown head 'gru'"):
        P.grid({"grid": {"backbones": ["mobilenet"], "heads": ["gru"]}})


def test_missing_key_and_file(tmp_path: Path) -> None:
    with pytest.raises(P.ParamError, match="missing key 'train.lr'"):
        P.get({"train": {}}, "train.lr")
    assert P.get({"train": {}}, "train.lr", 0.1) == 0.1
    with pytest.raises(P.ParamError, match="not found"):
        P.load(tmp_path / "params.yaml")
