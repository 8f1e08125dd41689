"""Atomic file writing: every output is written to a temporary file and renamed into place."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write pretty JSON (sorted keys not forced: callers control order)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_csv(path: str | Path, frame: pd.DataFrame) -> Path:
    """Atomically write a CSV without the index."""
    return atomic_write(path, lambda p: frame.to_csv(p, index=False, lineterminator="\n"))


def _json_default(obj: Any) -> Any:
    """Make numpy scalars and arrays JSON-serialisable."""
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_keras(path: str | Path, model: Any, extra: dict | None = None) -> Path:
    """Atomically save a Keras model (.keras zip); ``extra`` goes in as saxlevel.json, which Keras ignores."""
    import zipfile

    def write(tmp: Path) -> None:
        target = tmp.with_name(tmp.name + ".keras")  # Keras insists on the .keras suffix
        try:
            model.save(str(target))
            if extra is not None:
                with zipfile.ZipFile(target, "a") as z:
                    z.writestr("saxlevel.json", json.dumps(extra, indent=2, default=_json_default))
            os.replace(target, tmp)
        finally:
            if target.exists():
                target.unlink()

    return atomic_write(path, write)
