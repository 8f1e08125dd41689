"""filter_dicom's rules, errors and apex->base ordering on small hand-built DICOM trees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saxlevel import predict, sources
from saxlevel.phantom import dicomio, geometry

from conftest import REPO


def _orientation(flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = geometry._unit(np.cross(geometry.MEAN_ROW, geometry.MEAN_COL))  # points toward the base
    row = geometry._unit(geometry.MEAN_ROW - n * (geometry.MEAN_ROW @ n))
    col = np.cross(n, row)
    return (col, row, n) if flip else (row, col, n)


def make_study(root: Path, sid: int, n_slices: int = 5, frames: int = 4, *, descending: bool = False,
               flip: bool = False, split: str = "train", nested: bool = True, start: int = 10,
               sl_sign: float = 1.0, skip: tuple = (), short: dict | None = None, dup: int | None = None,
               extra_frames_series: dict | None = None, same_place: dict | None = None,
               numbers: list[int] | None = None) -> list[str]:
    """Write a tiny SAX study; return the series names from apex to base. ``same_place`` {k: j} puts
    slice k at slice j's position (a repeated acquisition stored under its own folder number); ``numbers`` the
    sax_N folder numbers apex to base (default start, start + 1, ...)."""
    row, col, n = _orientation(flip)
    patient = dicomio.Patient(str(sid), "050Y", "F", 900.0, dicomio.uid("t", sid), dicomio.uid("f", sid))
    base = (root / split / split) if nested else (root / split)
    study = base / str(sid) / "study"
    numbers = list(numbers) if numbers else [start + k for k in range(n_slices)]
    if descending:
        numbers = numbers[::-1]
    names = []
    for k in range(n_slices):
        num = numbers[k]
        names.append(f"sax_{num}")
        if k in skip:
            continue
        place = (same_place or {}).get(k, k)
        center = np.array([10.0, -20.0, 5.0]) + place * 10.0 * n  # k = 0 most apical
        plane = geometry.plane_through(center, row, col, 2.0, 16, 12)
        for f in range(1, (short or {}).get(k, frames) + 1):
            pix = (np.arange(16 * 12).reshape(16, 12) % 50 + k).astype(np.uint16)
            kw = dict(plane=plane, frame=f, frames=frames, thickness=7.0, series=num, acquisition=1,
                      slice_location=sl_sign * float(plane.ipp @ plane.normal), description="sax")
            dicomio.write_image(study / f"sax_{num}" / f"IM-{num:04d}-{f:04d}.dcm", patient, pix, **kw)
            if dup == k:
                kw.update(series=num + 100, acquisition=2)
                dicomio.write_image(study / f"sax_{num}" / f"IM-{num + 100:04d}-{f:04d}.dcm", patient, pix, **kw)
    return names


@pytest.mark.parametrize("descending,flip,sl_sign", [(False, False, 1.0), (True, False, -1.0),
                                                      (False, True, -1.0), (True, True, 1.0)])
def test_order_from_geometry(tmp_path: Path, descending: bool, flip: bool, sl_sign: float) -> None:
    names = make_study(tmp_path, 1, descending=descending, flip=flip, sl_sign=sl_sign)
    index, excluded, counts = sources.index_root(tmp_path, progress=False)
    assert excluded.empty and counts["subjects_kept"] == 1
    got = index.drop_duplicates("series").sort_values("order").series.tolist()
    assert got == names
    assert (np.diff(index.drop_duplicates("series").sort_values("order").position_mm) > 0).all()


def test_both_layouts_and_distractors_ignored(tmp_path: Path) -> None:
    make_study(tmp_path, 1, nested=True)
    make_study(tmp_path, 2, nested=False, split="validate")
    (tmp_path / "train" / "train" / "1" / "study" / "2ch_30").mkdir()
    (tmp_path / "train" / "train" / "1" / "study" / "2ch_30" / "IM-0030-0001.dcm").write_bytes(b"junk")
    index, excluded, _ = sources.index_root(tmp_path, progress=False)
    assert sorted(index.subject.unique()) == [1, 2] and excluded.empty
    assert set(index[index.subject == 2].split) == {"validate"}


def test_rules_all_recorded(tmp_path: Path) -> None:
    make_study(tmp_path, 1)  # clean
    make_study(tmp_path, 2, dup=2)  # rule 1
    make_study(tmp_path, 3, short={1: 3})  # rule 2
    make_study(tmp_path, 4, skip=(2,))  # rule 3
    make_study(tmp_path, 5, dup=1, skip=(3,))  # rules 1 and 3 together
    index, excluded, counts = sources.index_root(tmp_path, progress=False, jobs=2)
    rules = excluded.groupby("subject").rule.apply(sorted).to_dict()
    assert rules == {2: ["duplicate"], 3: ["inconsistent"], 4: ["noncontiguous"], 5: ["duplicate", "noncontiguous"]}
    assert sorted(index.subject.unique()) == [1]
    assert counts["excluded_by_rule"]["duplicate"] == 2 and counts["subjects_kept"] == 1
    assert "miss sax_12" in excluded[excluded.subject == 4].detail.item()


def test_repair_policy(tmp_path: Path) -> None:
    make_study(tmp_path, 2, dup=2)
    make_study(tmp_path, 3, short={4: 2})
    make_study(tmp_path, 4, n_slices=6, skip=(1,))
    index, excluded, counts = sources.index_root(tmp_path, policy="repair", progress=False)
    assert counts["subjects_kept"] == 3 and set(excluded.action) == {"repaired", "warning"}
    s2 = index[index.subject == 2]
    assert not s2.duplicated(["slice", "frame"]).any() and s2.series_number.max() == 112  # last acquisition
    assert index[index.subject == 3].series.nunique() == 4  # short slice dropped, its position recorded
    assert "no usable acquisition (sax_14 has 2 of 4 frames)" in excluded[excluded.subject == 3].detail.item()
    # A missing position is a gap in geometry: recorded, every acquired position kept (no cut to a run).
    assert index[index.subject == 4].series.nunique() == 5
    gap = excluded[excluded.subject == 4]
    assert gap.rule.tolist() == ["noncontiguous"] and gap.action.item() == "warning"
    assert "about 1 position(s) never acquired" in gap.detail.item()


def test_repairs_compose_by_geometry(tmp_path: Path) -> None:
    """The held-back DSB2 case: sax_5-sax_9 plus sax_38 (a repeat at the apex) and sax_57 (a repeat mid-stack).
    paper: rule 1 with the positions named; repair and predict: every position, the last acquisitions, and the
    same stack."""
    numbers = [5, 6, 7, 8, 9, 38, 57]
    make_study(tmp_path, 1, n_slices=7, numbers=numbers, same_place={5: 0, 6: 2})
    make_study(tmp_path, 2, n_slices=7, numbers=numbers, same_place={5: 0, 6: 2}, short={6: 3})
    index, excluded, _ = sources.index_root(tmp_path, policy="paper", progress=False)
    assert index.empty
    dup = excluded[(excluded.subject == 1) & (excluded.rule == "duplicate")].detail.tolist()
    assert len(dup) == 2 and all("mm along the stack normal" in d for d in dup)
    assert any(d.startswith("sax_5, sax_38 are at one place") for d in dup)
    index, excluded, _ = sources.index_root(tmp_path, policy="repair", progress=False)
    s1 = index[index.subject == 1].drop_duplicates("series").sort_values("order")
    assert s1.series.tolist() == ["sax_38", "sax_6", "sax_57", "sax_8", "sax_9"]  # 5 places, last acquisitions
    assert (np.diff(s1.position_mm) > 0).all()
    assert not (excluded.rule == "noncontiguous").any()  # evenly spaced: one stack whatever the folder numbers
    # Subject 2's last acquisition mid-stack (sax_57) is short: the earlier one at that place is used instead.
    s2 = index[index.subject == 2].drop_duplicates("series").sort_values("order")
    assert s2.series.tolist() == ["sax_38", "sax_6", "sax_7", "sax_8", "sax_9"]
    note = excluded[(excluded.subject == 2) & excluded.detail.str.contains("sax_7, sax_57")].detail.item()
    assert "kept the last usable acquisition sax_7 (sax_57 has 3 of 4 frames)" in note
    for sid in (1, 2):
        with pytest.warns(UserWarning, match="duplicate"):
            got = predict.index_folder(tmp_path / f"train/train/{sid}")
        want = index[index.subject == sid]
        assert got[["series", "frame", "path"]].values.tolist() == want[["series", "frame", "path"]].values.tolist()


def test_bad_files_exclude_with_named_file(tmp_path: Path) -> None:
    make_study(tmp_path, 1)
    make_study(tmp_path, 2)
    make_study(tmp_path, 3)
    make_study(tmp_path, 4)
    bad = sorted((tmp_path / "train/train/2/study/sax_11").glob("*.dcm"))[0]
    bad.write_bytes(bad.read_bytes()[:600])  # truncated inside the header or pixels
    trunc = sorted((tmp_path / "train/train/3/study/sax_12").glob("*.dcm"))[0]
    trunc.write_bytes(trunc.read_bytes()[:-100])  # pixel data cut short
    junk = tmp_path / "train/train/4/study/sax_10/IM-0010-0009.dcm"
    junk.write_bytes(b"not a dicom file")
    index, excluded, _ = sources.index_root(tmp_path, progress=False)
    assert sorted(index.subject.unique()) == [1]
    for sid, f in ((2, bad), (3, trunc), (4, junk)):
        row = excluded[excluded.subject == sid]
        assert row.rule.tolist() == ["unreadable"] and str(f) in row.detail.item()
    assert "truncated" in excluded[excluded.subject == 3].detail.item()


def test_empty_series_folder_is_recorded(tmp_path: Path) -> None:
    make_study(tmp_path, 1)
    make_study(tmp_path, 2)
    (tmp_path / "train/train/2/study/sax_15").mkdir()  # an empty slice folder after the stack
    (tmp_path / "train/train/3/study/sax_1").mkdir(parents=True)  # a study with no images at all
    index, excluded, counts = sources.index_root(tmp_path, progress=False)
    assert sorted(index.subject.unique()) == [1] and counts["subjects_found"] == 3
    assert excluded[excluded.subject == 2].rule.tolist() == ["empty_series"]
    assert "sax_15" in excluded[excluded.subject == 2].detail.item()
    assert excluded[excluded.subject == 3].rule.tolist()[0] == "no_sax"
    index, excluded, _ = sources.index_root(tmp_path, policy="repair", progress=False)
    assert sorted(index.subject.unique()) == [1, 2]
    assert excluded[excluded.subject == 2].action.tolist() == ["repaired"]


def test_missing_root_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.raw"):
        sources.index_root(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no subjects"):
        sources.index_root(tmp_path)


def test_filter_stage_on_phantom_matches_truth(phantom_dir: Path, tmp_path: Path) -> None:
    """Run the stage script on a tree it has never seen; excluded = truth's defect subjects."""
    r = subprocess.run([sys.executable, str(REPO / "stages/filter_dicom.py"), "--raw", str(phantom_dir),
                        "--out", str(tmp_path / "i"), "--metrics", str(tmp_path / "f.json"),
                        "--params", str(REPO / "params.yaml")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    truth = json.loads((phantom_dir / "truth.json").read_text())["subjects"]
    excluded = pd.read_csv(tmp_path / "i" / "excluded.csv")
    got = {str(s): sorted(g.rule) for s, g in excluded.groupby("subject")}
    want = {sid: s["defects"] for sid, s in truth.items() if s["defects"] and s["defects"] != ["black"]}
    assert got == want
    index = pd.read_csv(tmp_path / "i" / "index.csv")
    for sid, g in index.groupby("subject"):
        assert g.drop_duplicates("series").sort_values("order").series.tolist() == truth[str(sid)]["apex_to_base"]
    m = json.loads((tmp_path / "f.json").read_text())
    assert m["files_per_second"] > 0 and m["subjects_found"] == 12
    # to_png then drops the black study (constant images) and finds ED/ES
    r = subprocess.run([sys.executable, str(REPO / "stages/to_png.py"), "--index", str(tmp_path / "i/index.csv"),
                        "--out", str(tmp_path / "png"), "--metrics", str(tmp_path / "p.json"),
                        "--truth", str(phantom_dir / "truth.json"), "--params", str(REPO / "params.yaml")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    pex = pd.read_csv(tmp_path / "png" / "excluded.csv")
    black = [sid for sid, s in truth.items() if "black" in s["defects"]]
    assert [str(s) for s in pex.subject] == black and pex.rule.tolist() == ["constant"]
    pm = json.loads((tmp_path / "p.json").read_text())
    assert pm["ed_frame_hit_rate_pm1"] >= 0.9 and pm["es_frame_hit_rate_pm1"] >= 0.9
