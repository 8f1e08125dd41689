"""Helpers shared by the thin stage scripts in stages/."""

from __future__ import annotations

import argparse
import os
import random
from typing import Any

import numpy as np

from saxlevel import params as P


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argparse parser with the common --params option."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    return ap


def option(cli_value: Any, prm: dict, key: str, default: Any = ...) -> Any:
    """A command-line flag if given, else params.yaml's value."""
    return cli_value if cli_value is not None else P.get(prm, key, default)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and (if imported) TensorFlow, and make TF ops deterministic."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        import keras

        keras.utils.set_random_seed(seed)
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    except ImportError:  # pragma: no cover
        pass
