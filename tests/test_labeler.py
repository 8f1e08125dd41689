"""The labeler, headless (Agg backend, simulated key and mouse events)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backend_bases import KeyEvent, MouseEvent  # noqa: E402

from saxlevel import labeler  # noqa: E402
from saxlevel.ingest import images, splits


def _image(k: int, phase: str, size: int = 40) -> np.ndarray:
    """A dark image with a bright disc near (24, 14) that is larger at ED: the 'heart' moves there."""
    yy, xx = np.mgrid[:size, :size]
    r = 6 if phase == "ED" else 3
    img = np.full((size, size), 10 + k, np.uint8)
    img[(yy - 24) ** 2 + (xx - 14) ** 2 < r * r] = 200
    return img


@pytest.fixture()
def index(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for s in (1, 2):
        for phase, frame in (("ED", 1), ("ES", 4)):
            for k in range(6):
                p = tmp_path / "png" / f"{s}_{phase}_{k}.png"
                images.save_png(p, _image(k, phase))
                rows.append({"subject": s, "phase": phase, "frame": frame, "series": f"sax_{k + 3}", "order": k,
                             "path": str(p), "pixel_spacing": 0.5})
    return pd.DataFrame(rows)


def key(lab: labeler.Labeler, k: str) -> None:
    lab.fig.canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", lab.fig.canvas, k))


def click(lab: labeler.Labeler, phase: str, j: int, button: int = 1) -> None:
    lab.fig.canvas.draw()
    ax = lab.panels[(phase, j)]["ax"]
    x, y = ax.transAxes.transform((0.5, 0.5))
    lab.fig.canvas.callbacks.process("button_press_event",
                                     MouseEvent("button_press_event", lab.fig.canvas, x, y, button=button))


def shown(lab: labeler.Labeler, phase: str, j: int) -> str:
    return lab.panels[(phase, j)]["label"].get_text()


def test_levels_from_starts() -> None:
    assert labeler.levels_from_starts({0: 0, 1: 2, 2: 3, 3: 5, 4: 7}, 9) == [0, 0, 1, 2, 2, 3, 3, 4, 4]
    assert labeler.levels_from_starts({2: 3}, 5) == [2] * 5


def test_session_keys_clicks_boundaries_undo_save_resume(index: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    lab = labeler.Labeler(index, path, user="ann", autosave_every=1000)
    assert lab.current == 0 and lab.subject == 1
    click(lab, "ED", 0)  # no class chosen yet: nothing labelled
    assert lab.label_of("ED", 0) is None and "choose a class" in lab.message
    key(lab, "1")
    click(lab, "ED", 0)
    key(lab, "2")
    click(lab, "ED", 1)
    assert [lab.label_of("ED", j) for j in range(3)] == ["oap", "ap", None]
    assert shown(lab, "ED", 1) == "1: AP" and "2 UNSAVED" in lab.status()
    key(lab, "z")  # undo the last click
    assert lab.label_of("ED", 1) is None and shown(lab, "ED", 1) == "1: --"
    # boundary mode fills a row: mid starts at 2, bs at 4, obs at 5
    key(lab, "b")
    for cls, j in (("1", 0), ("2", 1), ("3", 2), ("4", 4), ("5", 5)):
        key(lab, cls)
        click(lab, "ED", j)
    assert [lab.label_of("ED", j) for j in range(6)] == ["oap", "ap", "mid", "mid", "bs", "obs"]
    assert lab.label_of("ES", 0) is None
    key(lab, "c")  # ED's labels as ES's starting point, then one ES correction
    assert [lab.label_of("ES", j) for j in range(6)] == ["oap", "ap", "mid", "mid", "bs", "obs"]
    key(lab, "5")
    click(lab, "ES", 4)
    assert lab.label_of("ES", 4) == "obs" and shown(lab, "ES", 4) == "4: OBS"
    key(lab, " ")  # save
    assert "all saved" in lab.status()
    saved = pd.read_csv(path)
    assert len(saved) == 12 and set(saved.labeled_by) == {"ann"} and saved.labeled_at.notna().all()
    assert "subjects done 1/2" in lab.progress()
    # next subject, label one slice, then "crash" (no save): the unsaved change is lost, the rest resumes
    key(lab, "right")
    assert lab.subject == 2
    key(lab, "3")
    click(lab, "ED", 0)
    lab2 = labeler.Labeler(index, path, user="bob")
    assert lab2.subject == 2 and lab2.label_of("ED", 0) is None
    # moving between subjects autosaves, and a backup of the previous file is kept
    key(lab2, "1")
    click(lab2, "ED", 0)
    key(lab2, "left")
    assert len(pd.read_csv(path)) == 13 and list(tmp_path.glob("labels.csv.bak-*"))
    key(lab2, "l")  # jumps clamp at the ends
    assert lab2.current == 1
    key(lab2, "h")
    assert lab2.current == 0


def test_prefill_accept_correct_and_split_accepts(index: pd.DataFrame, tmp_path: Path) -> None:
    preds = index.assign(pred=[["oap", "ap", "mid", "mid", "bs", "obs"][k] for k in index.order])
    path = tmp_path / "labels.csv"
    lab = labeler.Labeler(index, path, predictions=preds, user="cy")
    assert shown(lab, "ED", 2) == "2: -- (P MID)"
    for _ in lab.subjects:
        key(lab, "a")  # accept the model's labels for this subject (both phases)
        key(lab, "right")
    key(lab, "1")
    click(lab, "ES", 5)  # correct one slice by hand: shown in red against the prediction
    assert lab.panels[("ES", 5)]["label"].get_color() == labeler.session.COLORS["disagree"]
    key(lab, " ")
    labels = splits.read_labels(path)
    data = splits.join_labels(index, labels, str(path))
    assert len(data) == len(index) and data.label.notna().all()
    assert (data.label == "oap").sum() == 4 + 1  # four stacks' first slice + the correction


def test_prefill_from_segmentation_levels(index: pd.DataFrame, tmp_path: Path) -> None:
    """to_png's labels.csv of a segmented NIfTI source (column label) pre-fills the labeler like predictions."""
    derived = index.assign(label=[["oap", "ap", "ap", "mid", "bs", "bs"][k] for k in index.order],
                           labeled_by="segmentation")[["subject", "series", "frame", "label", "labeled_by"]]
    lab = labeler.Labeler(index, tmp_path / "mine.csv", predictions=derived, user="cy")
    assert shown(lab, "ED", 3) == "3: -- (P MID)"
    key(lab, "a")
    assert [lab.labels[k]["label"] for k in lab.keys[lab.subjects[0]]["ES"]] == ["oap", "ap", "ap", "mid", "bs", "bs"]
    with pytest.raises(ValueError, match="column pred.*column label"):
        labeler.Labeler(index, tmp_path / "x.csv", predictions=derived.drop(columns="label"))


def test_heart_view_review_order_window_keys_and_cache(index: pd.DataFrame, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    centre = labeler.heart_centre([_image(k, "ED") for k in range(6)], [_image(k, "ES") for k in range(6)])
    assert centre is not None and abs(centre[0] - 24) < 3 and abs(centre[1] - 14) < 3
    assert labeler.heart_centre([_image(0, "ED")] * 3, [_image(0, "ED")] * 3) is None  # nothing moves
    probs = {1: [0.9, 0.025, 0.025, 0.025, 0.025], 2: [0.3, 0.3, 0.2, 0.1, 0.1]}
    preds = index.assign(pred="oap", **{f"p_{c}": [probs[s][i] for s in index.subject]
                                        for i, c in enumerate(("oap", "ap", "mid", "bs", "obs"))})
    reads = []
    monkeypatch.setattr(labeler.session, "load_png", lambda p: reads.append(p) or images.load_png(p))
    lab = labeler.Labeler(index, tmp_path / "l.csv", predictions=preds, review="uncertain")
    assert lab.subjects == [2, 1]  # the doubtful subject first
    ax = lab.panels[("ED", 0)]["ax"]
    assert ax.get_xlim()[1] - ax.get_xlim()[0] == pytest.approx(2 * labeler.session.HEART_HALF_MM / 0.5)
    key(lab, "f")
    assert ax.get_xlim() == pytest.approx((-0.5, 39.5))
    key(lab, "up")
    key(lab, "+")
    assert lab.panels[("ED", 0)]["image"].get_clim() != (0, 255)
    n_reads = len(reads)
    key(lab, "1")
    click(lab, "ED", 3)
    key(lab, "right")
    key(lab, "left")  # back and forth: images come from the cache
    assert len(reads) == n_reads + 12 and n_reads == 12
    click(lab, "ED", 2, button=3)  # a right-click moves the heart centre for this subject
    assert lab.centres[lab.subject] is not None
    with pytest.raises(ValueError, match="needs --predictions"):
        labeler.Labeler(index, tmp_path / "l.csv", review="uncertain", show=False)


def test_string_subject_ids_label_save_and_resume(index: pd.DataFrame, tmp_path: Path) -> None:
    """Clinical exports name subjects by folder (SCD0000101, 0042): the labeler keeps those names."""
    named = index.assign(subject=index.subject.map({1: "SCD0000101", 2: "0042"}))
    path = tmp_path / "labels.csv"
    lab = labeler.Labeler(named, path, user="ann", autosave_every=1000)
    assert lab.subjects == ["0042", "SCD0000101"] and lab.subject == "0042"
    key(lab, "3")
    click(lab, "ED", 0)
    key(lab, " ")
    saved = labeler.session.io.read_table(path)
    assert saved.subject.tolist() == ["0042"] and saved.label.tolist() == ["mid"]
    again = labeler.Labeler(named, path, user="bob")  # resumes at the first subject with an unlabelled slice
    assert again.subject == "0042" and again.label_of("ED", 0) == "mid" and again.label_of("ED", 1) is None
