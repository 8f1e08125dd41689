"""predict's input checks: clear messages for folders it cannot use (the model path is in test_e2e)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from saxlevel import predict
from saxlevel.phantom import dicomio, geometry

from test_dicom import make_study


def test_no_sax_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(predict.PredictError, match="no SAX images"):
        predict.index_folder(tmp_path / "empty")
    with pytest.raises(predict.PredictError, match="not a folder"):
        predict.index_folder(tmp_path / "missing")


def test_corrupt_file_is_dropped_and_named(tmp_path: Path) -> None:
    """One bad file costs its frame, not its slice: predict keeps every slice at the frames all slices have."""
    make_study(tmp_path, 7)
    bad = tmp_path / "train/train/7/study/sax_12/IM-0012-0002.dcm"
    bad.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="IM-0012-0002.dcm.*file dropped"):
        index = predict.index_folder(tmp_path / "train/train/7")
    assert index.series.nunique() == 5 and sorted(index.frame.unique()) == [1, 3, 4]
    make_study(tmp_path / "b", 8, skip=(2,))  # a missing folder: order comes from positions, all slices kept
    with pytest.warns(UserWarning, match="noncontiguous: gap of 20.0 mm.*every position kept"):
        index = predict.index_folder(tmp_path / "b/train/train/8")
    assert index.series.nunique() == 4


def test_mixed_orientations(tmp_path: Path) -> None:
    make_study(tmp_path, 8)
    study = tmp_path / "train/train/8/study"
    # overwrite one slice with a long-axis-like orientation but a SAX description
    patient = dicomio.Patient("8", "050Y", "F", 900.0, dicomio.uid("t", 8), dicomio.uid("f", 8))
    plane = geometry.plane_through(np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), 2.0, 16, 12)
    for f in sorted((study / "sax_13").glob("*.dcm")):
        frame = int(f.stem.split("-")[-1])
        dicomio.write_image(f, patient, np.ones((16, 12), np.uint16), plane=plane, frame=frame, frames=4,
                            thickness=7.0, series=13, acquisition=1, slice_location=0.0, description="sax")
    with pytest.raises(predict.PredictError, match="orientation"):
        predict.index_folder(study)


def test_flat_folder_and_repair_warning(tmp_path: Path) -> None:
    make_study(tmp_path, 9, dup=1)
    study = tmp_path / "train/train/9/study"
    with pytest.warns(UserWarning, match="duplicate"):
        index = predict.index_folder(study)
    assert index.series.nunique() == 5 and not index.duplicated(["slice", "frame"]).any()
    flat = tmp_path / "flat"
    flat.mkdir()
    make_study(tmp_path / "src", 10, descending=True)
    for f in (tmp_path / "src").rglob("*.dcm"):
        (flat / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    # A whole-study export also holds long-axis series: dropped by SeriesDescription, without a warning.
    patient = dicomio.Patient("10", "050Y", "F", 900.0, dicomio.uid("t", 10), dicomio.uid("f", 10))
    plane = geometry.plane_through(np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), 2.0, 16, 12)
    dicomio.write_image(flat / "4ch_IM-0030-0001.dcm", patient, np.ones((16, 12), np.uint16), plane=plane, frame=1,
                        frames=4, thickness=7.0, series=30, acquisition=1, slice_location=0.0, description="4ch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = predict.index_folder(flat)
    order = index.drop_duplicates("series").sort_values("order")
    assert order.series.tolist() == [f"slice_{k}" for k in range(5)] and not index.path.str.contains("4ch").any()
    assert (np.diff(order.position_mm) > 0).all()
