"""The phantom: valid DICOM, Kaggle layout, geometry, labels, defects, balance, determinism."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from saxlevel import CLASSES
from saxlevel.phantom import anatomy, make_phantom, plan

from conftest import phantom_params

REQUIRED = ["PatientID", "PatientAge", "PatientSex", "SeriesDescription", "SeriesNumber", "InstanceNumber",
            "TriggerTime", "NominalInterval", "CardiacNumberOfImages", "Rows", "Columns", "PixelSpacing",
            "SliceThickness", "ImageOrientationPatient", "ImagePositionPatient", "SliceLocation",
            "BitsStored", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]


def test_layout_and_tags(phantom_dir: Path) -> None:
    truth = json.loads((phantom_dir / "truth.json").read_text())
    files = sorted(phantom_dir.rglob("*.dcm"))
    assert files
    for f in files[::7]:
        ds = pydicom.dcmread(f)
        assert ds.file_meta.MediaStorageSOPClassUID == pydicom.uid.MRImageStorage
        for tag in REQUIRED:
            assert tag in ds, (f, tag)
        assert ds.BitsStored == 12 and ds.pixel_array.dtype == np.uint16
        assert ds.pixel_array.max() <= 4095
        assert ds.PixelSpacing[0] == ds.PixelSpacing[1]
        split = f.parts[-6]
        assert f.parts[-5] == split and split in ("train", "validate", "test")
        assert truth["subjects"][ds.PatientID]["split"] == split
    # ids numbered per split as on Kaggle: train first, then validate, then test
    splits = [truth["subjects"][str(i)]["split"] for i in range(1, 13)]
    assert splits == sorted(splits, key=["train", "validate", "test"].index)
    # distractor long-axis series exist and share the counter
    names = {p.name.split("_")[0] for p in phantom_dir.glob("*/*/*/study/*")}
    assert names == {"sax", "2ch", "4ch"}
    assert (phantom_dir / "train.csv").exists() and (phantom_dir / "validate.csv").exists()
    vols = pd.read_csv(phantom_dir / "train.csv")
    assert list(vols.columns) == ["Id", "Systole", "Diastole"] and (vols.Systole < vols.Diastole).all()


def test_positions_step_along_normal(phantom_dir: Path) -> None:
    truth = json.loads((phantom_dir / "truth.json").read_text())
    for sid, s in truth["subjects"].items():
        if s["defects"]:
            continue
        study = next(phantom_dir.glob(f"*/*/{sid}/study"))
        pos = []
        for series in s["apex_to_base"]:
            ds = pydicom.dcmread(sorted((study / series).glob("*.dcm"))[0], stop_before_pixels=True)
            iop = np.array(ds.ImageOrientationPatient, dtype=float)
            normal = np.cross(iop[:3], iop[3:])
            pos.append(float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)))
        steps = np.abs(np.diff(pos))
        assert np.allclose(steps, s["slice_step_mm"], atol=0.01), (sid, steps)


def test_labels_cover_ed_es_of_every_sax_slice(phantom_dir: Path) -> None:
    truth = json.loads((phantom_dir / "truth.json").read_text())
    labels = pd.read_csv(phantom_dir / "labels.csv")
    assert list(labels.columns) == ["subject", "series", "frame", "label"]
    assert set(labels.label) <= set(CLASSES)
    for sid, s in truth["subjects"].items():
        got = labels[labels.subject == int(sid)]
        for series in s["apex_to_base"]:
            frames = set(got[got.series == series].frame)
            assert frames == {s["ed_frame"], s["es_frame"]}, (sid, series)
        # levels never go backwards from apex to base
        for frame in (s["ed_frame"], s["es_frame"]):
            seq = got[got.frame == frame].set_index("series").loc[s["apex_to_base"], "label"]
            idx = [CLASSES.index(x) for x in seq]
            assert idx == sorted(idx)


def test_defects_listed_in_truth(phantom_dir: Path) -> None:
    truth = json.loads((phantom_dir / "truth.json").read_text())
    found = collections.Counter(d for s in truth["subjects"].values() for d in s["defects"])
    assert found == {"duplicate": 1, "inconsistent": 1, "noncontiguous": 1, "black": 1}
    black = next(sid for sid, s in truth["subjects"].items() if "black" in s["defects"])
    f = next(phantom_dir.glob(f"*/*/{black}/study/sax_*/*.dcm"))
    assert pydicom.dcmread(f).pixel_array.max() == 0


def test_defect_rates() -> None:
    rates = {"duplicate": 0.05, "inconsistent": 0.03, "noncontiguous": 0.04, "black": 0.01}
    got = plan.assign_defects(phantom_params(subjects=200, seed=3, defect_rates=rates))
    counts = collections.Counter(d for v in got.values() for d in v)
    assert counts == {k: round(r * 200) for k, r in rates.items()}


def test_bad_params_are_named() -> None:
    with pytest.raises(ValueError, match="phantom.frames"):
        phantom_params(frames=2).validate()
    with pytest.raises(ValueError, match="unknown defects"):
        phantom_params(defect_rates={"typo": 0.1}).validate()


def test_label_derivation_by_geometry() -> None:
    heart = anatomy.sample_heart(np.random.default_rng(0))
    s = anatomy.heart_state(heart, 0.0)
    L = s.cavity_length
    assert anatomy.slice_label(heart, 0.0, s.apex_z - 10) == "oap"  # below the apex
    assert anatomy.slice_label(heart, 0.0, s.apex_z + 0.1) == "oap"  # cavity too small to see
    assert anatomy.slice_label(heart, 0.0, s.apex_z + 0.2 * L) == "ap"
    assert anatomy.slice_label(heart, 0.0, s.apex_z + 0.5 * L) == "mid"  # through the papillary muscles
    assert anatomy.slice_label(heart, 0.0, s.apex_z + 0.9 * L) == "bs"
    assert anatomy.slice_label(heart, 0.0, s.base_z + 5) == "obs"
    # through-plane motion: just below the ED base is basal at ED, above the base at ES
    assert anatomy.slice_label(heart, 0.0, s.base_z - 2) == "bs"
    assert anatomy.slice_label(heart, 1.0, s.base_z - 2) == "obs"
    # the papillary muscles really are in the image at mid level, not at ap level
    u, v = np.meshgrid(np.linspace(-40, 40, 161, dtype=np.float32), np.linspace(-40, 40, 161, dtype=np.float32))
    def dark_in_cavity(z: float) -> int:
        img = anatomy.render(heart, 0.0, u, v, np.full_like(u, z))
        rc = anatomy._radius(z, s.base_z, L, s.rc)
        return int(((u * u + v * v < rc * rc) & (img < heart.blood * 0.9)).sum())
    assert dark_in_cavity(s.apex_z + 0.5 * L) > 0
    assert dark_in_cavity(s.apex_z + 0.2 * L) == 0


def test_class_balance_close_to_table3() -> None:
    # Paper Table 3 (training): oap 15.5, ap 23.1, mid 23.2, bs 17.7, obs 20.5 %.
    target = {"oap": 15.5, "ap": 23.1, "mid": 23.2, "bs": 17.7, "obs": 20.5}
    params = phantom_params(subjects=100, seed=0)
    counts = collections.Counter(
        r["label"] for sid in range(1, 101) for r in plan.plan_subject(sid, [], params)["labels"]
    )
    total = sum(counts.values())
    for name, pct in target.items():
        assert abs(100 * counts[name] / total - pct) <= 5, (name, counts)


def test_slices_per_subject_like_kaggle() -> None:
    params = phantom_params(subjects=100, seed=0)
    n = [plan.plan_subject(sid, [], params)["n"] for sid in range(1, 101)]
    assert min(n) >= 8 and max(n) <= 25
    assert 10 <= collections.Counter(n).most_common(1)[0][0] <= 12


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_deterministic(tmp_path: Path) -> None:
    params = phantom_params(subjects=3, seed=11, frames=6, jobs=1)
    make_phantom(tmp_path / "a", params, progress=False)
    make_phantom(tmp_path / "b", phantom_params(subjects=3, seed=11, frames=6, jobs=2), progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    make_phantom(tmp_path / "c", phantom_params(subjects=3, seed=12, frames=6, jobs=1), progress=False)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_cli(tmp_path: Path) -> None:
    from saxlevel.cli import main

    assert main(["phantom", "--out", str(tmp_path / "x"), "--subjects", "3", "--seed", "1", "--frames", "6"]) == 0
    assert (tmp_path / "x" / "truth.json").exists()
    assert main(["phantom", "--out", str(tmp_path / "y"), "--subjects", "3", "--frames", "1"]) == 2
