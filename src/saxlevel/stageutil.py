"""Helpers shared by the thin stage scripts in stages/."""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable

import numpy as np

from saxlevel import params as P
from saxlevel import tfquiet


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argparse parser with the common --params option."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    return ap


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and (if imported) TensorFlow, and make TF ops deterministic."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        tfquiet.import_tensorflow()
        import keras

        keras.utils.set_random_seed(seed)
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    except ImportError:  # pragma: no cover
        pass


class StageError(RuntimeError):
    """A problem that stops the whole stage (bad parameters, unusable output, nothing left to write)."""


def run_stage(name: str, main: Callable[[], int]) -> int:
    """Run a stage's main(): a stage-level problem is one line on stderr and exit code 2, no traceback
    (set SAXLEVEL_DEBUG=1 to see it). Per-subject problems never get here: they are exclusions."""
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("SAXLEVEL_DEBUG"):
            raise
        known = isinstance(exc, (StageError, P.ParamError, OSError, ValueError))
        text = str(exc) if known else f"{exc.__class__.__name__}: {exc} (a bug: rerun with SAXLEVEL_DEBUG=1 and report it)"
        print(f"{name}: error: {text}", file=sys.stderr)
        return 2
