"""The labeler, headless (Agg backend, simulated key and mouse events)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backend_bases import KeyEvent, MouseEvent  # noqa: E402

from saxlevel import images, labeler, splits  # noqa: E402


@pytest.fixture()
def index(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for s in (1, 2):
        for phase, frame in (("ED", 1), ("ES", 4)):
            for k in range(6):
                p = tmp_path / "png" / f"{s}_{phase}_{k}.png"
                images.save_png(p, np.full((8, 8), 20 * k, np.uint8))
                rows.append({"subject": s, "phase": phase, "frame": frame, "series": f"sax_{k + 3}", "order": k,
                             "path": str(p)})
    return pd.DataFrame(rows)


def key(lab: labeler.Labeler, k: str) -> None:
    lab.fig.canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", lab.fig.canvas, k))


def click(lab: labeler.Labeler, j: int) -> None:
    lab.fig.canvas.draw()
    ax = lab.axes[j]
    x, y = ax.transAxes.transform((0.5, 0.5))
    lab.fig.canvas.callbacks.process("button_press_event",
                                     MouseEvent("button_press_event", lab.fig.canvas, x, y, button=1))


def test_levels_from_starts() -> None:
    assert labeler.levels_from_starts({0: 0, 1: 2, 2: 3, 3: 5, 4: 7}, 9) == [0, 0, 1, 2, 2, 3, 3, 4, 4]
    assert labeler.levels_from_starts({2: 3}, 5) == [2] * 5


def test_session_keys_clicks_boundaries_save_resume(index: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    lab = labeler.Labeler(index, path, user="ann", autosave_every=1000)
    assert lab.current == 0
    # click without a class: nothing labelled
    click(lab, 0)
    assert lab.label_of(0) is None and "choose a class" in lab.message
    key(lab, "1")
    click(lab, 0)
    key(lab, "2")
    click(lab, 1)
    assert [lab.label_of(j) for j in range(3)] == ["oap", "ap", None]
    # boundary mode: mid starts at 2, bs at 4, obs at 5 -> the rest of the stack is filled in
    key(lab, "b")
    for cls, j in (("1", 0), ("2", 1), ("3", 2), ("4", 4), ("5", 5)):
        key(lab, cls)
        click(lab, j)
    assert [lab.label_of(j) for j in range(6)] == ["oap", "ap", "mid", "mid", "bs", "obs"]
    key(lab, " ")  # save
    saved = pd.read_csv(path)
    assert len(saved) == 6 and set(saved.labeled_by) == {"ann"} and saved.labeled_at.notna().all()
    # next stack, label one slice, then "crash" (no save): the unsaved change is lost, the rest resumes
    key(lab, "right")
    assert lab.current == 1
    key(lab, "b")
    key(lab, "3")
    click(lab, 0)
    lab2 = labeler.Labeler(index, path, user="bob")
    assert lab2.current == 1 and lab2.label_of(0) is None
    # moving between stacks autosaves, and a backup of the previous file is kept
    key(lab2, "b")
    key(lab2, "1")
    click(lab2, 0)
    key(lab2, "4")
    click(lab2, 3)
    key(lab2, "right")
    assert len(pd.read_csv(path)) == 12
    assert list(tmp_path.glob("labels.csv.bak-*"))
    # h / l jump by 10 (clamped)
    key(lab2, "l")
    assert lab2.current == len(lab2.stacks) - 1
    key(lab2, "h")
    assert lab2.current == 0


def test_prefill_from_predictions_and_split_accepts(index: pd.DataFrame, tmp_path: Path) -> None:
    preds = index.assign(pred=[["oap", "ap", "mid", "mid", "bs", "obs"][k] for k in index.order])
    path = tmp_path / "labels.csv"
    lab = labeler.Labeler(index, path, predictions=preds, user="cy")
    for _ in lab.stacks:
        key(lab, "a")  # accept the model's labels for this stack
        key(lab, "right")
    key(lab, "1")
    key(lab, "left")
    click(lab, 5)  # correct one slice by hand
    key(lab, " ")
    labels = splits.read_labels(path)
    data = splits.join_labels(index, labels, str(path))
    assert len(data) == len(index) and data.label.notna().all()
    assert (data.label == "oap").sum() == 4 + 1  # four stacks' first slice + the correction
