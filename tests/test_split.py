"""split: subject-wise, deterministic, labels joined with clear errors, Tables 1-3."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saxlevel.ingest import images, splits


def _images(n_subjects: int = 10) -> pd.DataFrame:
    rows = [{"subject": s, "phase": ph, "frame": 1 if ph == "ED" else 4, "series": f"sax_{k}", "order": k}
            for s in range(1, n_subjects + 1) for ph in ("ED", "ES") for k in range(3)]
    return pd.DataFrame(rows)


def test_assign_splits_deterministic_and_ratios() -> None:
    subjects = list(range(1, 975))
    a = splits.assign_splits(subjects, splits.PAPER_RATIOS, seed=1)
    assert a == splits.assign_splits(subjects[::-1], splits.PAPER_RATIOS, seed=1)
    counts = pd.Series(a).value_counts().to_dict()
    assert counts == {"train": 576, "val": 214, "test": 184}
    assert a != splits.assign_splits(subjects, splits.PAPER_RATIOS, seed=2)
    small = splits.assign_splits([1, 2, 3], splits.PAPER_RATIOS, seed=0)
    assert sorted(small.values()) == ["test", "train", "val"]


def test_join_labels_errors_and_warnings() -> None:
    imgs = _images(3)
    labels = imgs[["subject", "series", "frame"]].assign(label="mid")
    out = splits.join_labels(imgs, labels)
    assert (out.label == "mid").all()
    with pytest.raises(splits.LabelError, match=r"2 of 18 images have no label.*saxlevel label"):
        splits.join_labels(imgs, labels.iloc[2:])
    extra = pd.concat([labels, pd.DataFrame([{"subject": 99, "series": "sax_1", "frame": 1, "label": "ap"}])])
    with pytest.warns(UserWarning, match="1 labels .* match no image"):
        splits.join_labels(imgs, extra)


def test_unknown_class_is_error(tmp_path) -> None:
    p = tmp_path / "l.csv"
    pd.DataFrame([{"subject": 1, "series": "sax_1", "frame": 1, "label": "MID"}]).to_csv(p, index=False)
    with pytest.raises(splits.LabelError, match="unknown class"):
        splits.read_labels(p)


def test_tables() -> None:
    data = _images(4).assign(label=["oap", "mid", "obs"] * 8, split=["train"] * 12 + ["val"] * 6 + ["test"] * 6)
    t = splits.tables(data)
    assert t["table1_subjects"]["train"]["count"] == 2 and t["table2_stacks"]["total"]["count"] == 8
    assert t["table3_classes"]["train"]["oap"] == {"count": 4, "percent": 33.3}
    assert list(t["table3_classes"]["val"]) == ["oap", "ap", "mid", "bs", "obs"]


def test_window_constant_and_range() -> None:
    with pytest.raises(images.ConstantImage):
        images.window(np.zeros((8, 8)))
    img = images.window(np.arange(100, dtype=float).reshape(10, 10))
    assert img.dtype == np.uint8 and img.min() == 0 and img.max() == 255
