"""Clinical DICOM exports: one folder per subject in any layout, series-wide numbering, vestigial functional
groups, padded pixel data, unreadable directory entries, and the real GE study of ../shared/data/sunnybrook.

Every quirk is first built by this project's own code (the phantom's clinical form, small hand-made files);
the real-data tests skip, saying so, where ../shared/data is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from saxlevel import io, predict, sources
from saxlevel import params as P
from saxlevel.ingest import pngs, splits
from saxlevel.phantom import make_phantom
from saxlevel.sources import dicomfile
from test_scanner_exports import _file, _Probe, _record_stacks, _stage, _study

from conftest import REPO, phantom_params
from test_dicom import make_study

SUNNYBROOK = REPO.parent / "shared" / "data" / "sunnybrook"
SCD = SUNNYBROOK / "dicoms" / "SCD0000101"
# The expert contoured the Sunnybrook study at these phases (its README).
EXPERT_ED, EXPERT_ES = 19, 8
needs_sunnybrook = pytest.mark.skipif(not SCD.is_dir(), reason=f"real data absent: {SCD} (../shared/data is not "
                                      "part of a clone; these tests run where it is mounted)")


def _cyclic(a: int, b: int, n: int) -> int:
    d = abs(a - b) % n
    return min(d, n - d)


@pytest.fixture(scope="module")
def clinical(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-subject phantom in the clinical form (PH0001/1.dcm ...), 10 frames, one subject with a repeat."""
    out = tmp_path_factory.mktemp("clinical") / "ph"
    rates = {"duplicate": 1 / 6, "inconsistent": 0.0, "noncontiguous": 0.0, "black": 0.0}
    make_phantom(out, phantom_params(subjects=6, seed=2, frames=10, format="clinical", defect_rates=rates, jobs=2),
                 progress=False)
    return out


def test_clinical_phantom_is_a_real_export(clinical: Path) -> None:
    """One folder per subject, files 1..N, one SAX series numbered over the whole series, vestigial groups."""
    subjects = sorted(p.name for p in clinical.iterdir() if p.is_dir())
    assert subjects == [f"PH{k:04d}" for k in range(1, 7)]
    files = sorted((clinical / "PH0002").iterdir(), key=lambda p: int(p.stem))
    assert files[0].name == "1.dcm" and all(f.suffix == ".dcm" for f in files)
    sax = [ds for ds in map(pydicom.dcmread, files) if ds.SeriesNumber == 300]
    assert len({ds.SeriesInstanceUID for ds in sax}) == 1 and {ds.SeriesDescription for ds in sax} == {""}
    assert sorted(int(ds.InstanceNumber) for ds in sax) == list(range(1, len(sax) + 1))
    assert all("PerFrameFunctionalGroupsSequence" in ds and "ImagePositionPatient" in ds for ds in sax)


def test_clinical_phantom_through_filter_to_png_and_split(clinical: Path, tmp_path: Path) -> None:
    truth = json.loads((clinical / "truth.json").read_text())["subjects"]
    index, excluded, counts = sources.index_root(clinical, jobs=2, progress=False)
    assert counts["layout"] == "subject folders" and counts["subjects_found"] == 6
    dup = [s for s, t in truth.items() if t["defects"]]
    assert sorted(excluded[excluded.action == "excluded"].subject.unique()) == dup
    assert set(excluded[excluded.action == "excluded"].rule) == {"duplicate"}
    left_out = excluded[excluded.action == "ignored"]
    # Per subject: three localizer planes (not a cine) and the 2ch and 4ch series (long-axis), each named.
    assert (left_out.groupby("subject").size() == 5).all() and set(left_out.rule) == {"other_series"}
    assert left_out.detail.str.contains("Localizer").sum() == 18 and left_out.detail.str.contains("'4ch'").sum() == 6
    for sid, g in index.groupby("subject"):
        order = g.drop_duplicates("series").sort_values("order").series.tolist()
        assert order == truth[sid]["apex_to_base"], sid
        assert sorted(g.frame.unique()) == list(range(1, 11))
        # The raw series-wide InstanceNumber is kept beside the frame number derived from it.
        assert g.instance_number.max() == len(g) and g.instance_number.min() == 1
    # to_png picks ED/ES and split joins the phantom's labels: nothing labelled by hand, string ids throughout.
    cfg = P.png_settings(P.load(REPO / "params.yaml"), jobs=1)
    result = pngs.write_pngs(index, tmp_path / "png", cfg, progress=False)
    assert len(result.chosen) == 5 and result.excluded.empty
    assert pngs.frame_hit_rates(result.chosen, index, clinical / "truth.json") == {
        "ed_frame_hit_rate_pm1": 1.0, "es_frame_hit_rate_pm1": 1.0}
    io.write_csv(tmp_path / "index.csv", result.index)
    data = splits.make_split(io.read_table(tmp_path / "index.csv"), str(clinical / "labels.csv"), (3, 1, 1), 0)
    assert data.subject.map(type).eq(str).all() and data.label.notna().all()


def test_a_vestigial_functional_group_sequence_is_classic(tmp_path: Path) -> None:
    """A classic MR file with an empty PerFrameFunctionalGroupsSequence keeps its top-level geometry."""
    make_study(tmp_path, 1)
    f = _file(tmp_path, 1)
    plain = dicomfile.read_frames(f)
    ds = pydicom.dcmread(f)
    ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset()])
    ds.save_as(f)
    got = dicomfile.read_frames(f)
    assert len(got) == 1 and np.allclose(got[0]["ipp"], plain[0]["ipp"]) and got[0]["frame"] is None
    assert dicomfile.uses_functional_groups(ds, 1) is False
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR: the groups are where the geometry is
    assert dicomfile.uses_functional_groups(ds, 1) is True


@pytest.mark.parametrize("trigger,instance,want", [
    ([0, 40, 80, 120], [221, 222, 223, 224], [1, 2, 3, 4]),  # series-wide numbering
    ([0, 80, 120], [1, 3, 4], [1, 3, 4]),  # a missing image keeps the others' phases
    ([0, 40, 80], [5, 17, 29], [1, 2, 3]),  # numbering that steps by the slice count
    ([0, 0, 40, 40], [1, 1, 2, 2], [1, 1, 2, 2]),  # a repeated image shares its number (rule 1)
    ([0, 40, 80], [3, 1, 2], [1, 2, 3]),  # InstanceNumber against trigger time: the plain rank
])
def test_frames_are_ranks_at_a_slice(trigger: list, instance: list, want: list) -> None:
    got = dicomfile.frame_ranks(np.array(trigger, float), np.array(instance))
    assert got.tolist() == want


def test_frame_numbers_never_come_from_instance_number_alone(tmp_path: Path) -> None:
    """A Kaggle-layout study whose files carry series-wide InstanceNumbers indexes frames 1..F at every slice."""
    make_study(tmp_path, 3, n_slices=4, frames=5)
    study = _study(tmp_path, 3)
    for k, folder in enumerate(sorted(study.iterdir())):
        for f in folder.iterdir():
            ds = pydicom.dcmread(f)
            ds.InstanceNumber = int(ds.InstanceNumber) + 5 * k
            ds.save_as(f)
    index, excluded, _ = sources.index_root(tmp_path, progress=False)
    assert excluded.empty and (index.groupby("series").frame.apply(sorted).map(list) == [[1, 2, 3, 4, 5]] * 4).all()
    assert index.instance_number.max() == 20


def _padded_stack(root: Path, source: Path, sid: int = 1) -> list[Path]:
    """A 3-slice x 3-frame Kaggle study made of copies of ``source`` (padded pixel data kept as it is)."""
    out = []
    ds = pydicom.dcmread(source)
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    normal = np.cross(row, col)
    for k in range(3):
        for frame in range(1, 4):
            ds.ImagePositionPatient = [f"{v:.4f}" for v in np.array(ds.ImagePositionPatient, float) * 0 +
                                       k * 10.0 * normal]
            ds.InstanceNumber, ds.TriggerTime, ds.SeriesNumber = frame, f"{40 * (frame - 1)}", 10 + k
            ds.SliceThickness = "8"
            path = root / "train" / "train" / str(sid) / "study" / f"sax_{10 + k}" / f"IM-{frame:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path)
            out.append(path)
    return out


def test_pydicoms_padded_file_as_a_sax_stack_is_kept(tmp_path: Path) -> None:
    padded = Path(get_testdata_file("MR_small_padded.dcm"))
    files = _padded_stack(tmp_path, padded)
    assert len(pydicom.dcmread(files[0]).PixelData) > 64 * 64 * 2  # the padding survived the copy
    index, excluded, counts = sources.index_root(tmp_path, progress=False)
    assert counts["subjects_kept"] == 1 and len(index) == 9
    notes = excluded[excluded.rule == "pixel_length"]
    assert len(notes) == 9 and set(notes.action) == {"warning"} and notes.detail.str.contains("more than").all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own warning about the excess bytes
        rows, problems, _ = pngs.subject_to_png(index, tmp_path / "png", 1, 2, (2.0, 98.0))
    assert not problems and len(rows) == 6


def test_padding_on_the_fast_path_is_noted_and_short_data_is_its_own_rule(tmp_path: Path) -> None:
    make_study(tmp_path, 1)
    make_study(tmp_path, 2)
    f = _file(tmp_path, 1)
    ds = pydicom.dcmread(f)
    ds.PixelData = ds.PixelData + b"\0" * 64
    ds.save_as(f)
    g = _file(tmp_path, 2)
    ds = pydicom.dcmread(g)
    ds.PixelData = ds.PixelData[:-64]
    ds.save_as(g)
    index, excluded, _ = sources.index_root(tmp_path, progress=False)
    assert sorted(index.subject.unique()) == [1]
    rec = excluded.set_index("subject")
    assert rec.loc[1].rule == "pixel_length" and rec.loc[1].action == "warning" and f.name in rec.loc[1].detail
    assert rec.loc[2].rule == "pixel_length" and rec.loc[2].action == "excluded" and g.name in rec.loc[2].detail


def test_unreadable_directory_entries_are_recorded(tmp_path: Path) -> None:
    """Looping and broken symbolic links in a sax folder: recorded as unreadable files, never skipped."""
    make_study(tmp_path, 1)
    make_study(tmp_path, 2)
    folder = _study(tmp_path, 2) / "sax_12"
    os.symlink("IM-0012-0009.dcm", folder / "IM-0012-0009.dcm")  # a link to itself: a loop
    os.symlink("nowhere.dcm", folder / "IM-0012-0010.dcm")
    index, excluded, _ = sources.index_root(tmp_path, progress=False)
    assert sorted(index.subject.unique()) == [1]
    rec = excluded[excluded.subject == 2]
    assert set(rec.rule) == {"unreadable"} and len(rec) == 2
    assert rec.detail.str.contains("IM-0012-0009.dcm.*symbolic link loop").any()
    assert rec.detail.str.contains("IM-0012-0010.dcm.*broken symbolic link").any()


def test_subject_folders_any_layout(tmp_path: Path) -> None:
    """Nested series folders, extensionless and odd names, a DICOMDIR, a text file and a folder link loop."""
    src = tmp_path / "src"
    names = make_study(src, 4, n_slices=5, frames=4)
    root = tmp_path / "root"
    for k, f in enumerate(sorted((src / "train/train/4/study").rglob("*.dcm"))):
        target = root / "patient004" / "exam" / f"series{k % 3}" / (f"IM{k:05d}" if k % 2 else f"1.2.3.{k}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    (root / "patient004" / "DICOMDIR").write_bytes(b"\0" * 200)
    (root / "patient004" / "notes.txt").write_text("acquired on a Tuesday")
    os.symlink("..", root / "patient004" / "exam" / "up")
    os.symlink("gone", root / "patient004" / "exam" / "IM99999")
    index, excluded, counts = sources.index_root(root, progress=False)
    assert counts["layout"] == "subject folders" and counts["subjects_kept"] == 1
    assert index.subject.unique().tolist() == ["patient004"] and len(index) == 20
    assert index.drop_duplicates("series").sort_values("order").series.tolist() == [f"slice_{k}" for k in range(5)]
    assert len(names) == 5
    by_rule = excluded.groupby("rule").detail.apply(list).to_dict()
    assert any("notes.txt" in d for d in by_rule["not_dicom"])
    assert any("IM99999" in d and "broken symbolic link" in d for d in by_rule["unreadable"])
    assert any("loop" in d for d in by_rule["unreadable"])
    assert not excluded.detail.str.contains("DICOMDIR").any()


def test_subject_ids_keep_their_names() -> None:
    assert io.subject_id(np.int64(7)) == 7 and io.subject_id("0042") == "0042" and io.subject_id("12") == 12
    frame = io.with_subject_ids(pd.DataFrame({"subject": ["1", "2", "patient003"]}))
    assert frame.subject.tolist() == ["1", "2", "patient003"]
    assert io.with_subject_ids(pd.DataFrame({"subject": ["1", "20"]})).subject.tolist() == [1, 20]


def test_a_root_that_is_one_subject_says_so(tmp_path: Path) -> None:
    (tmp_path / "1.dcm").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="looks like one subject's folder"):
        sources.index_root(tmp_path)


# --- the real GE study (../shared/data/sunnybrook) ----------------------------------------------------------

@needs_sunnybrook
def test_sunnybrook_study_through_predict(monkeypatch: pytest.MonkeyPatch) -> None:
    """12 slices apex->base, 20 frames each, ED and ES within one phase of the expert's contoured phases."""
    index = predict.index_folder(SCD)
    assert index.series.nunique() == 12 and sorted(index.frame.unique()) == list(range(1, 21))
    order = index.drop_duplicates("series").sort_values("order")
    assert (np.diff(order.position_mm) > 0).all()
    # File-order slice 0 (InstanceNumber 1-20) is the most basal one; the expert's contoured slices (file order
    # 2-10) show an LV cavity, so they lie between the apex and the base.
    assert order.iloc[-1].series == index.loc[index.instance_number == 1, "series"].iloc[0]
    chosen = pngs.choose_frames(index, "auto", "auto")
    assert _cyclic(chosen["ED"], EXPERT_ED, 20) <= 1 and _cyclic(chosen["ES"], EXPERT_ES, 20) <= 1
    seen = _record_stacks(monkeypatch)
    probe = _Probe([2, 98], 16)
    probe.info["preprocessing"].update(ed_frame="auto", es_frame="auto")
    table = predict.predict_folder(SCD, probe)  # type: ignore[arg-type]
    assert [len(g) for g in seen] == [12, 12] and table.subject.unique().tolist() == ["SCD0000101"]


@needs_sunnybrook
def test_sunnybrook_root_through_the_stages(tmp_path: Path) -> None:
    """filter_dicom -> to_png on the folder of studies keeps the study, in the same order as predict."""
    root = SUNNYBROOK / "dicoms"
    done = _stage("filter_dicom.py", "--raw", str(root), "--out", str(tmp_path / "i"), "--metrics",
                  str(tmp_path / "f.json"), tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "subject folders layout" in done.stdout and "1 subjects -> 1 kept" in done.stdout
    done = _stage("to_png.py", "--index", str(tmp_path / "i/index.csv"), "--out", str(tmp_path / "png"),
                  "--metrics", str(tmp_path / "p.json"), tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    png = io.read_table(tmp_path / "png/index.csv")
    assert png.subject.unique().tolist() == ["SCD0000101"] and len(png) == 24
    ref = predict.index_folder(SCD).drop_duplicates("series").sort_values("order")
    for _, stack in png.groupby("phase"):
        assert stack.sort_values("order").series.tolist() == ref.series.tolist()
    frames = png.drop_duplicates("phase").set_index("phase").frame
    assert _cyclic(int(frames["ED"]), EXPERT_ED, 20) <= 1 and _cyclic(int(frames["ES"]), EXPERT_ES, 20) <= 1


def test_filter_stage_names_the_layout(tmp_path: Path) -> None:
    make_study(tmp_path / "k", 1)
    done = subprocess.run([sys.executable, str(REPO / "stages/filter_dicom.py"), "--raw", str(tmp_path / "k"),
                           "--out", str(tmp_path / "i"), "--metrics", str(tmp_path / "f.json"), "--jobs", "1"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "(kaggle layout)" in done.stdout
    assert json.loads((tmp_path / "f.json").read_text())["layout"] == "kaggle"


def test_a_folder_without_dicom_names_what_it_holds(tmp_path: Path) -> None:
    make_study(tmp_path / "k", 1)
    shutil.copytree(tmp_path / "k/train/train/1/study", tmp_path / "root" / "ok")
    (tmp_path / "root" / "nifti").mkdir()
    (tmp_path / "root" / "nifti" / "scan.nii.gz").write_bytes(b"\x1f\x8b" + b"\0" * 400)  # no known naming
    (tmp_path / "root" / "acdc").mkdir()
    (tmp_path / "root" / "acdc" / "patient001_frame01.nii.gz").write_bytes(b"\x1f\x8b" + b"\0" * 400)
    index, excluded, counts = sources.index_root(tmp_path / "root", progress=False)
    assert counts["subjects_kept"] == 1 and index.subject.unique().tolist() == ["ok"]
    rec = excluded[(excluded.subject == "nifti") & (excluded.rule == "no_sax")].detail.iloc[0]
    assert "not DICOM" in rec and "NIfTI is read where named as ACDC" in rec
    damaged = excluded[(excluded.subject == "acdc") & (excluded.action == "excluded")]
    assert damaged.rule.tolist() == ["unreadable"] and "patient001_frame01.nii.gz" in damaged.detail.iloc[0]
