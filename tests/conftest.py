"""Shared fixtures: small phantoms built once per session (tiny images keep the suite fast)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


def phantom_params(**overrides):
    """PhantomParams from the repository's params.yaml (the only source of defaults), with overrides."""
    from saxlevel import params as P
    from saxlevel.phantom import PhantomParams

    return PhantomParams.from_params(P.load(REPO / "params.yaml"), **overrides)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A 12-subject phantom (6 frames) with one subject per defect."""
    from saxlevel.phantom import make_phantom

    out = tmp_path_factory.mktemp("phantom") / "ph"
    rates = {"duplicate": 1 / 12, "inconsistent": 1 / 12, "noncontiguous": 1 / 12, "black": 1 / 12}
    make_phantom(out, phantom_params(subjects=12, seed=5, frames=6, defect_rates=rates, jobs=2), progress=False)
    return out
