"""Real scanner exports and damaged inputs: compressed and enhanced DICOM, geometry validation, same-place
series, and that no single file or subject can stop filter_dicom, to_png or predict.

Each test builds its own small corpus (16 x 12 images) with one defect per subject next to clean subjects,
and asserts the outcome: kept, excluded with the rule and the file named, or one clear stage error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from saxlevel import parallel, predict, sources
from saxlevel.ingest import images, pngs
from saxlevel.phantom import dicomio
from saxlevel.sources import contract, dicomfile, kaggle, pixeldata, rules

from conftest import REPO
from test_dicom import make_study

SYNTAXES = sorted(dicomio.TRANSFER_SYNTAXES)


def _study(root: Path, sid: int) -> Path:
    return root / "train" / "train" / str(sid) / "study"


def _file(root: Path, sid: int, series: int = 12, frame: int = 2) -> Path:
    return _study(root, sid) / f"sax_{series}" / f"IM-{series:04d}-{frame:04d}.dcm"


def _patch(path: Path, keyword: str, raw: bytes | None) -> None:
    """Store ``raw`` as the encoded value of ``keyword`` (garbage a validating writer would refuse), or delete it."""
    ds = pydicom.dcmread(path)
    tag = Tag(pydicom.datadict.tag_for_keyword(keyword))
    if raw is None:
        del ds[tag]
    else:
        raw += b" " * (len(raw) % 2)
        vr = pydicom.datadict.dictionary_VR(tag)
        ds._dict[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    ds.save_as(path)


def _pngs(root: Path, index: pd.DataFrame, out: Path) -> dict[tuple, bytes]:
    """to_png of every subject in ``index`` (ED frame 1, ES frame 3): {(subject, phase, order): PNG bytes}."""
    got = {}
    for _, g in index.groupby("subject"):
        rows, problems, _ = pngs.subject_to_png(g, out, 1, 3, (2.0, 98.0))
        assert not problems, problems
        got.update({(r["subject"], r["phase"], r["order"]): Path(r["path"]).read_bytes() for r in rows})
    return got


EXPORTS = [("classic", s) for s in SYNTAXES] + [("enhanced", "explicit"), ("enhanced", "jpeg-lossless"),
                                                ("enhanced", "rle")]


@pytest.mark.parametrize("form,syntax", EXPORTS)
def test_lossless_exports_give_the_same_index_and_pngs(tmp_path: Path, form: str, syntax: str) -> None:
    """Every lossless transfer syntax and the enhanced multi-frame form: same images, positions, frames, PNGs."""
    make_study(tmp_path / "a", 1, descending=True)
    make_study(tmp_path / "b", 1, descending=True)
    dicomio.export_study(_study(tmp_path / "b", 1), form, syntax)
    if form == "enhanced":
        assert len(list(_study(tmp_path / "b", 1).rglob("*.dcm"))) == 5  # one file per slice
    ref, ex_a, _ = sources.index_root(tmp_path / "a", progress=False)
    got, ex_b, _ = sources.index_root(tmp_path / "b", progress=False)
    assert ex_a.empty and ex_b.empty, ex_b.detail.tolist()
    same = ["series", "slice", "frame", "order", "position_mm", "rows", "cols", "pixel_spacing", "slice_thickness"]
    pd.testing.assert_frame_equal(ref[same].reset_index(drop=True), got[same].reset_index(drop=True))
    assert (got.file_frame > 0).any() == (form == "enhanced")
    assert _pngs(tmp_path / "a", ref, tmp_path / "pa") == _pngs(tmp_path / "b", got, tmp_path / "pb")


def _damaged_corpus(root: Path) -> dict[int, tuple[str, str, str]]:
    """Clean subjects 1-3 and one defect per other subject: {sid: (rule, file name, text in the detail)}."""
    want: dict[int, tuple[str, str, str]] = {}
    for sid in range(1, 40):
        make_study(root, sid)
    patches = {
        4: ("PixelSpacing", b"nan\\nan", "PixelSpacing"),
        5: ("PixelSpacing", b"0\\0", "PixelSpacing"),
        6: ("ImagePositionPatient", b"nan\\1\\2", "ImagePositionPatient"),
        7: ("ImageOrientationPatient", b"nan\\0\\0\\0\\1\\0", "ImageOrientationPatient"),
        8: ("ImagePositionPatient", b"1\\2", "ImagePositionPatient has 2 value"),
        9: ("ImagePositionPatient", b"abc\\1\\2", "ImagePositionPatient"),
        10: ("ImageOrientationPatient", b"1\\0\\0\\1\\0\\0", "orthogonal unit"),
        11: ("ImageOrientationPatient", b"abc", "ImageOrientationPatient"),
        12: ("PixelSpacing", b"x\\y", "PixelSpacing"),
        13: ("ImagePositionPatient", None, "ImagePositionPatient missing"),
        14: ("PixelSpacing", b"-1\\1", "must be positive"),
    }
    for sid, (keyword, raw, text) in patches.items():
        _patch(_file(root, sid), keyword, raw)
        want[sid] = ("bad_geometry", _file(root, sid).name, text)
    _patch(_file(root, 15), "InstanceNumber", b"x1")
    want[15] = ("unreadable", _file(root, 15).name, "InstanceNumber")
    _patch(_file(root, 16), "Rows", None)
    want[16] = ("unreadable", _file(root, 16).name, "Rows")
    ds = pydicom.dcmread(_file(root, 17))  # Rows/Columns larger than the pixel data
    ds.Rows = 32
    ds.save_as(_file(root, 17))
    want[17] = ("pixel_length", _file(root, 17).name, "Rows x Columns")  # too short: its own rule
    dicomio.transcode(_file(root, 18), "rle")
    raw = _file(root, 18).read_bytes()
    _file(root, 18).write_bytes(raw[: len(raw) - 40])  # compressed stream cut short
    want[18] = ("unreadable", _file(root, 18).name, "truncated")
    for sid, uid in ((19, b"1.2.840.10008.1.2.4.94"), (20, b"1.2.840.10008.1.2.4.99")):
        dicomio.transcode(_file(root, sid), "jpeg2000")  # then claim a syntax nothing decodes
        raw = _file(root, sid).read_bytes()
        _file(root, sid).write_bytes(raw.replace(b"1.2.840.10008.1.2.4.90", uid))
        want[sid] = ("undecodable", _file(root, sid).name, uid.decode())
    raw = _file(root, 21).read_bytes()
    _file(root, 21).write_bytes(raw[:-100])  # uncompressed pixel data cut short
    want[21] = ("unreadable", _file(root, 21).name, "truncated")
    _file(root, 22).write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 50)  # garbage after a valid preamble
    want[22] = ("unreadable", _file(root, 22).name, "")
    # An enhanced file whose second frame has a NaN position.
    folder = _study(root, 23) / "sax_12"
    dicomio.export_study(_study(root, 23), "enhanced")
    enhanced = folder / "IM-0012.dcm"
    ds = pydicom.dcmread(enhanced)
    tag = Tag("ImagePositionPatient")
    item = ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    item._dict[tag] = RawDataElement(tag, "DS", 8, b"nan\\0\\0 ", 0, False, True)
    ds.save_as(enhanced)
    want[23] = ("bad_geometry", enhanced.name, "frame 2 ImagePositionPatient")
    # Two folders at one place (a repeat under a contiguous folder number) break rule 1 under `paper`.
    shutil.rmtree(_study(root, 24).parent)
    make_study(root, 24, n_slices=6, same_place={3: 2})
    want[24] = ("duplicate", "sax_12, sax_13", "at one place")
    # Valid but unusual: every lossless syntax and the enhanced form are kept.
    for sid, syntax in zip(range(30, 36), SYNTAXES):
        dicomio.export_study(_study(root, sid), "classic", syntax)
    dicomio.export_study(_study(root, 36), "enhanced", "jpeg-ls")
    return want


def test_damaged_corpus_excludes_with_named_files_and_keeps_the_rest(tmp_path: Path) -> None:
    want = _damaged_corpus(tmp_path)
    index, excluded, counts = sources.index_root(tmp_path, jobs=2, progress=False)
    got = {int(s): g for s, g in excluded.groupby("subject")}
    assert set(got) == set(want), (set(got) ^ set(want), excluded.to_string())
    for sid, (rule, name, text) in want.items():
        rec = got[sid].iloc[0]
        assert rec.rule == rule and rec.action == "excluded", (sid, rec.to_dict())
        assert name in rec.detail and text in rec.detail, (sid, rec.detail)
    kept = sorted(index.subject.unique())
    assert kept == [s for s in range(1, 40) if s not in want]
    assert index.position_mm.notna().all() and len(index) == len(kept) * 20
    by_rule = counts["excluded_by_rule"]
    assert by_rule["bad_geometry"] == 12 and by_rule["pixel_length"] == 1 and by_rule["undecodable"] == 2
    # to_png decodes every kept subject, compressed and enhanced ones included.
    pngs = _pngs(tmp_path, index, tmp_path / "png")
    assert len(pngs) == len(kept) * 10


def test_same_place_series_repair_keeps_the_last_acquisition(tmp_path: Path) -> None:
    make_study(tmp_path, 1, n_slices=6, same_place={3: 2})
    index, excluded, _ = sources.index_root(tmp_path, policy="repair", progress=False)
    # sax_13 repeats sax_12's place, so position 3 was never acquired: a gap, recorded and not cut.
    assert excluded.rule.tolist() == ["duplicate", "noncontiguous"]
    assert excluded.action.tolist() == ["repaired", "warning"]
    assert "kept the last usable acquisition sax_13" in excluded.detail.iloc[0]
    order = index.drop_duplicates("series").sort_values("order").series.tolist()
    assert order == ["sax_10", "sax_11", "sax_13", "sax_14", "sax_15"]
    # 0.25 x SliceThickness: slices 1.5 mm apart (7 mm thick) are one place, 2 mm apart are two.
    assert rules.same_position_mm(7.0) == pytest.approx(1.75) and rules.same_position_mm(float("nan")) == 1.0


def test_unavailable_decoder_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    class Missing:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg-libjpeg>=2.1"]

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Missing())
    pixeldata.decoder_problem.cache_clear()
    try:
        text = pixeldata.decoder_problem("1.2.840.10008.1.2.4.80")
    finally:
        pixeldata.decoder_problem.cache_clear()
    assert "JPEG-LS Lossless" in text and "pylibjpeg-libjpeg" in text and "requirements.txt" in text


def test_damaged_compressed_pixels_exclude_in_to_png(tmp_path: Path) -> None:
    """Headers fine, compressed stream garbage: filter_dicom keeps it, to_png excludes it naming the file."""
    make_study(tmp_path, 1)
    make_study(tmp_path, 2)
    f = _file(tmp_path, 2, series=12, frame=3)  # the ES frame
    dicomio.transcode(f, "rle")
    ds = pydicom.dcmread(f)
    frags = bytearray(ds.PixelData)
    frags[20:40] = b"\xff" * 20  # RLE header: segment count and offsets
    ds.PixelData = bytes(frags)
    ds.save_as(f)
    index, excluded, _ = sources.index_root(tmp_path, progress=False)
    assert excluded.empty
    out = {}
    for sid, g in index.groupby("subject"):
        out[sid] = pngs.subject_to_png(g, tmp_path / "png", 1, 3, (2.0, 98.0))
    assert out[1][0] and not out[1][1]
    assert out[2][1][0]["rule"] == "undecodable" and f.name in out[2][1][0]["detail"]


def _die_on_two(i: int) -> int:
    if i == 2:
        os._exit(3)  # a native crash: no exception reaches Python
    return i * 10


def test_a_worker_crash_costs_one_task() -> None:
    got = parallel.map_isolated(_die_on_two, [(i,) for i in range(6)], jobs=2,
                                on_failure=lambda task, why: -task[0], desc="t", progress=False)
    assert got == [0, 10, -2, 30, 40, 50]


def _raise_on_three(i: int) -> int:
    if i == 3:
        raise ValueError("nobody foresaw this")
    return i * 10


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_exception_costs_one_task(jobs: int) -> None:
    got = parallel.map_isolated(_raise_on_three, [(i,) for i in range(5)], jobs=jobs,
                                on_failure=lambda task, why: why, desc="t", progress=False)
    assert got == [0, 10, 20, "ValueError: nobody foresaw this", 40]


def test_an_unforeseen_error_excludes_only_its_subject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_study(tmp_path, 1)
    make_study(tmp_path, 2)
    real = kaggle.sax_entries

    def entries(study: Path) -> list:
        if study.parent.name == "2":
            raise KeyError("boom")
        return real(study)

    monkeypatch.setattr(kaggle, "sax_entries", entries)
    index, excluded, counts = sources.index_root(tmp_path, jobs=1, progress=False)
    assert sorted(index.subject.unique()) == [1] and counts["subjects_kept"] == 1
    rec = excluded.iloc[0]
    assert rec.rule == "error" and rec.subject == 2 and "KeyError: 'boom'" in rec.detail and "2/study" in rec.detail


def _stage(script: str, *args: str, params: str | None = None, tmp: Path) -> subprocess.CompletedProcess:
    """Run a stage script with the repository's params.yaml, ``params`` (YAML) merged over its sections."""
    prm = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in (yaml.safe_load(params or "{}") or {}).items():
        prm[section] = {**prm.get(section, {}), **values}
    pfile = tmp / "params.yaml"
    pfile.write_text(yaml.safe_dump(prm))
    return subprocess.run([sys.executable, str(REPO / "stages" / script), *args, "--params", str(pfile)],
                          capture_output=True, text=True, cwd=REPO)


def _one_line_error(r: subprocess.CompletedProcess, stage: str, text: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith(f"{stage}: error:")]
    assert len(lines) == 1 and text in lines[0], r.stderr


def test_stage_level_errors_are_one_line(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_study(raw, 1)
    make_study(raw, 2)
    out_file = tmp_path / "a_file"
    out_file.write_text("x")
    common = ("--raw", str(raw), "--metrics", str(tmp_path / "f.json"))
    _one_line_error(_stage("filter_dicom.py", *common, "--out", str(out_file), tmp=tmp_path),
                    "filter_dicom", "not a folder")
    _one_line_error(_stage("filter_dicom.py", *common, "--out", str(tmp_path / "i"), tmp=tmp_path,
                           params="filter:\n  jobs: two\n"), "filter_dicom", "filter.jobs")
    r = _stage("filter_dicom.py", *common, "--out", str(tmp_path / "i"), tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    png = ("--index", str(tmp_path / "i/index.csv"), "--out", str(tmp_path / "png"))
    _one_line_error(_stage("to_png.py", *png, tmp=tmp_path, params="to_png:\n  window: \"2-98\"\n"),
                    "to_png", "to_png.window")
    _one_line_error(_stage("to_png.py", *png, tmp=tmp_path, params="to_png:\n  ed_frame: first\n"),
                    "to_png", "to_png.ed_frame")
    _one_line_error(_stage("to_png.py", "--index", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "png"),
                           tmp=tmp_path), "to_png", "filter_dicom")
    assert not (tmp_path / "png").exists() and not (tmp_path / "png.tmp").exists()


def test_nothing_left_stops_the_stage_and_leaves_outputs_alone(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for sid in (1, 2):
        make_study(raw, sid)
        _patch(_file(raw, sid), "PixelSpacing", b"0\\0")
    (tmp_path / "i").mkdir()
    (tmp_path / "i" / "keep.txt").write_text("previous run")
    r = _stage("filter_dicom.py", "--raw", str(raw), "--metrics", str(tmp_path / "f.json"), "--out",
               str(tmp_path / "i"), tmp=tmp_path)
    _one_line_error(r, "filter_dicom", "all 2 subjects excluded")
    assert (tmp_path / "i" / "keep.txt").exists() and not (tmp_path / "i.tmp").exists()
    # to_png: every subject's images constant -> nothing to write -> error, no half-written folder.
    raw2 = tmp_path / "raw2"
    make_study(raw2, 3)
    for f in _study(raw2, 3).rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.PixelData = np.zeros((16, 12), np.uint16).tobytes()
        ds.save_as(f)
    r = _stage("filter_dicom.py", "--raw", str(raw2), "--metrics", str(tmp_path / "f.json"), "--out",
               str(tmp_path / "i2"), tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _stage("to_png.py", "--index", str(tmp_path / "i2/index.csv"), "--out", str(tmp_path / "png"), tmp=tmp_path)
    _one_line_error(r, "to_png", "all 1 subjects excluded")
    assert not (tmp_path / "png").exists() and not (tmp_path / "png.tmp").exists()


def test_predict_indexes_compressed_and_enhanced_copies_alike(tmp_path: Path) -> None:
    """predict's index of a subject is the same from a JPEG Lossless copy, an enhanced copy (one file per
    slice) and a flat folder holding the whole study as one enhanced file."""
    make_study(tmp_path / "a", 1, descending=True)
    ref = predict.index_folder(_study(tmp_path / "a", 1))
    same = ["series", "frame", "order", "position_mm"]
    for form, syntax in (("classic", "jpeg-lossless"), ("enhanced", "explicit")):
        copy = tmp_path / f"{form}-{syntax}" / "1"
        shutil.copytree(_study(tmp_path / "a", 1).parent, copy)
        dicomio.export_study(copy / "study", form, syntax)
        got = predict.index_folder(copy)
        pd.testing.assert_frame_equal(ref[same].reset_index(drop=True), got[same].reset_index(drop=True))
    flat = tmp_path / "flat"
    files = sorted(_study(tmp_path / "a", 1).rglob("*.dcm"))
    dicomio.to_enhanced(files, flat / "stack.dcm")
    got = predict.index_folder(flat)
    assert got.path.nunique() == 1 and len(got) == len(ref)
    assert got.drop_duplicates("series").sort_values("order").position_mm.round(3).tolist() == \
        ref.drop_duplicates("series").sort_values("order").position_mm.round(3).tolist()
    pix = [images.read_pixels(p, k) for p, k in zip(got.sort_values(["order", "frame"]).path,
                                                    got.sort_values(["order", "frame"]).file_frame)]
    want = [images.read_pixels(p) for p in ref.sort_values(["order", "frame"]).path]
    assert all((a == b).all() for a, b in zip(pix, want))


def test_file_names_of_real_exports(tmp_path: Path) -> None:
    """Upper-case .DCM and extensionless files are images; macOS ._* copies, .DS_Store and DICOMDIR are not."""
    make_study(tmp_path / "a", 1)
    make_study(tmp_path / "b", 1)
    study = _study(tmp_path / "b", 1)
    for k, f in enumerate(sorted(study.rglob("*.dcm"))):
        if k % 3 == 1:
            f.rename(f.with_suffix(".DCM"))
        elif k % 3 == 2:
            f.rename(f.with_suffix(""))
    (study / "sax_11" / "._IM-0011-0001.dcm").write_bytes(b"\0\5\26\7 AppleDouble")
    (study / "sax_11" / ".DS_Store").write_bytes(b"Bud1")
    (study / "sax_12" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    ref, _, _ = sources.index_root(tmp_path / "a", progress=False)
    got, excluded, _ = sources.index_root(tmp_path / "b", progress=False)
    assert excluded.empty, excluded.detail.tolist()
    assert ref[["series", "frame", "order"]].equals(got[["series", "frame", "order"]])


def test_a_subject_found_twice_is_recorded(tmp_path: Path) -> None:
    make_study(tmp_path, 1)
    make_study(tmp_path, 2)
    make_study(tmp_path, 2, nested=False)  # the same id again, unpacked in the older layout
    index, excluded, counts = sources.index_root(tmp_path, progress=False)
    assert sorted(index.subject.unique()) == [1, 2] and counts["subjects_kept"] == 2
    rec = excluded.iloc[0]
    assert rec.rule == "duplicate" and rec.action == "repaired" and "train/2/study: ignored" in rec.detail


class _Probe:
    """A stand-in model: predict_folder only reads its saxlevel.json preprocessing (stack_probabilities is
    replaced by a recorder)."""

    def __init__(self, window: list[float], size: int) -> None:
        self.info = {"preprocessing": {"window_percentiles": window, "ed_frame": 1, "es_frame": 3,
                                       "image_size": size}, "backbone": "mobilenet", "head": "dense"}


def _record_stacks(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    seen: list[np.ndarray] = []

    def probabilities(model: object, grays: list[np.ndarray]) -> list[np.ndarray]:
        seen.extend(grays)
        return [np.full((len(gray), 5), 0.2) for gray in grays]

    monkeypatch.setattr(predict, "stack_probabilities", probabilities)
    return seen


def test_predict_drops_an_undecodable_slice_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One image cannot be decoded: predict warns naming it and predicts that stack's other slices."""
    make_study(tmp_path, 1)
    f = _file(tmp_path, 1, series=12, frame=1)
    dicomio.transcode(f, "rle")
    ds = pydicom.dcmread(f)
    frags = bytearray(ds.PixelData)
    frags[20:40] = b"\xff" * 20
    ds.PixelData = bytes(frags)
    ds.save_as(f)
    seen = _record_stacks(monkeypatch)
    with pytest.warns(UserWarning, match="ED frame 1: slice dropped: .*IM-0012-0001.dcm"):
        table = predict.predict_folder(_study(tmp_path, 1), _Probe([2, 98], 8))  # type: ignore[arg-type]
    assert [len(g) for g in seen] == [4, 5]
    assert set(table[table.phase == "ED"].series) == {"sax_10", "sax_11", "sax_13", "sax_14"}


def test_predict_follows_the_models_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """predict windows with the percentiles the model records, not a default."""
    from saxlevel.learning import features

    make_study(tmp_path, 1)
    first = _study(tmp_path, 1) / "sax_10" / "IM-0010-0001.dcm"
    for window in ([2, 98], [30, 70]):
        seen = _record_stacks(monkeypatch)
        predict.predict_folder(_study(tmp_path, 1), _Probe(window, 12))  # type: ignore[arg-type]
        want = features.square_resize(images.window(images.read_pixels(first), *window), 12)
        assert (seen[0][0] == want).all()
    assert not (features.square_resize(images.window(images.read_pixels(first), 2, 98), 12) == want).all()


def _outcome(path: Path, fast: bool) -> tuple:
    """read_frames' result as comparable data: ('ok', rows with arrays as lists) or ('defect', rule)."""
    try:
        rows = dicomfile.read_frames(path, fast=fast)
    except contract.FileDefect as exc:
        assert path.name in str(exc), str(exc)
        return ("defect", exc.rule)
    return ("ok", repr([{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in rows]))


def test_fast_header_reader_agrees_with_pydicom(tmp_path: Path) -> None:
    """dicomheader reads plain files (explicit and implicit VR little endian) to the same rows, and the same
    defect rule, as the pydicom path, and hands every other file (compressed, enhanced, damaged) back to it."""
    _damaged_corpus(tmp_path)
    implicit = _file(tmp_path, 1, frame=3)
    ds = pydicom.dcmread(implicit)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(implicit)
    assert pydicom.dcmread(implicit).file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    decimal = _file(tmp_path, 2, frame=3)
    _patch(decimal, "InstanceNumber", b"3.0")  # IS written as a whole decimal: pydicom reads 3
    files = sorted(tmp_path.rglob("*.dcm"))
    read_fast = {f for f in files if dicomfile.fast_header(f) is not None}
    for f in files:
        assert _outcome(f, fast=True) == _outcome(f, fast=False), f
    assert implicit in read_fast and decimal in read_fast and _file(tmp_path, 15) in read_fast
    assert _outcome(decimal, fast=True)[0] == "ok"
    # Handed back: deflated and compressed syntaxes (30, 32-35), enhanced files (23, 36), garbage, truncation.
    for sid in (23, 30, 32, 33, 34, 35, 36):
        assert not read_fast & set(_study(tmp_path, sid).rglob("*.dcm")), sid
    assert not {_file(tmp_path, 22), _file(tmp_path, 18)} & read_fast
    assert len(read_fast) > len(files) * 0.7
