"""Atomic file writing: every output is written to a temporary file and renamed into place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
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


def _plain_number(text: str) -> bool:
    """Digits only, without a leading zero (``42``, not ``0042``): such an id reads back as the same int."""
    return text.isdigit() and str(int(text)) == text


def subject_id(value: Any) -> int | str:
    """One subject id as the tables hold it: an int where the folder name is a plain number (Kaggle's ids),
    else the folder name as it is (``SCD0000101``, ``patient001``, ``0042``)."""
    text = str(value.item() if hasattr(value, "item") else value)
    return int(text) if _plain_number(text) else text


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV of this project (index, labels, split, predictions) with its ``subject`` column read as the ids
    it names: all plain numbers -> ints (Kaggle), otherwise every id a string, so ``0042`` and ``patient001``
    keep their names and one table never mixes the two kinds."""
    import pandas as pd  # here, not at the top: the train stage that only takes its model never needs pandas

    return with_subject_ids(pd.read_csv(path, dtype={"subject": str}))


def with_subject_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its ``subject`` column as read_table gives it (see there)."""
    if "subject" not in frame.columns or frame.empty:
        return frame
    text = frame["subject"].astype(str)
    if text.map(_plain_number).all():
        return frame.assign(subject=text.astype("int64"))
    return frame.assign(subject=text)


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


class OutputError(OSError):
    """An output path cannot be used (it is a file, or its folder cannot be written)."""


def check_output_dir(path: str | Path) -> Path:
    """Fail early, naming the path, when ``path`` cannot become an output folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {path} exists and is not a folder: remove it or pass another --out")
    parent = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output {path}: {parent} is not writable: pass another --out or fix its permissions")
    return path


@contextlib.contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty sibling ``<path>.tmp`` folder to write into; on success it replaces ``path``, on any
    failure it is removed and ``path`` is left as it was."""
    path = check_output_dir(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise OutputError(f"output {path}: cannot create {tmp}: {exc.strerror}") from None
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
