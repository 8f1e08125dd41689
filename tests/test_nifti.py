"""NIfTI sources (ACDC, M&Ms and UK Biobank naming), levels from segmentations, the NIfTI phantom, and the real
ACDC patients of ../shared/data/acdc (skipped, saying so, where they are absent)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from saxlevel import CLASSES, io, sources
from saxlevel import params as P
from saxlevel.ingest import pngs, seglevels
from saxlevel.phantom import generate, plan
from saxlevel.sources import nifti, niftiindex

from conftest import REPO

ACDC = REPO.parent / "shared" / "data" / "acdc"


# -- the level rule --

def rank_rule(n_before: int, n_lv: int, n_after: int) -> list[str]:
    """The issue's rule written out by rank: oap, then floor(3 (r + 0.5) / n) over the LV, then obs."""
    return ([CLASSES[0]] * n_before + [CLASSES[1 + int(3 * (r + 0.5) // n_lv)] for r in range(n_lv)]
            + [CLASSES[4]] * n_after)


@pytest.mark.parametrize("n_lv", range(1, 14))
def test_even_steps_give_the_rank_thirds(n_lv: int) -> None:
    for before, after in ((0, 0), (2, 1), (1, 3)):
        n = before + n_lv + after
        positions = -40.0 + 8.0 * np.arange(n)
        cavity = [before <= k < before + n_lv for k in range(n)]
        assert seglevels.levels_from_cavity(positions, cavity) == rank_rule(before, n_lv, after)


def test_uneven_steps_use_positions_and_order_does_not_matter() -> None:
    # LV slices at 0, 10, 20, 25, 30 mm: extent [-5, 32.5], thirds at 7.5 and 20 mm.
    positions = np.array([-10.0, 0, 10, 20, 25, 30, 40])
    cavity = [False, True, True, True, True, True, False]
    levels = seglevels.levels_from_cavity(positions, cavity)
    assert levels == ["oap", "ap", "mid", "bs", "bs", "bs", "obs"]
    shuffle = np.random.default_rng(0).permutation(len(positions))
    again = seglevels.levels_from_cavity(positions[shuffle], np.array(cavity)[shuffle])
    assert again == [levels[i] for i in shuffle]
    # a slice inside the LV without cavity pixels (a segmentation gap) still counts by its position
    assert seglevels.levels_from_cavity(positions, [False, True, True, False, True, True, False]) == levels
    assert seglevels.levels_from_cavity(positions, [False] * 7) is None


# -- the NIfTI phantom and the ACDC layout --

@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """4 phantom subjects in ACDC's layout (one all-black), and the same subjects as Kaggle DICOM."""
    root = tmp_path_factory.mktemp("nifti")
    prm = P.load(REPO / "params.yaml")
    common = {"subjects": 4, "frames": 8, "jobs": 1, "defect_rates": {"duplicate": 0.0, "inconsistent": 0.0,
                                                                    "noncontiguous": 0.0, "black": 0.25}}
    truth = generate.make_phantom(root / "acdc", plan.PhantomParams.from_params(prm, format="nifti", **common),
                                  progress=False)
    generate.make_phantom(root / "dicom", plan.PhantomParams.from_params(prm, format="classic", **common),
                          progress=False)
    return root, truth


def _seg_levels(folder: Path, frame: int, label: int = 3) -> list[str]:
    """Levels apex->base recomputed straight from a segmentation file and its affine (independent of the source)."""
    gt = nib.load(str(next(folder.glob(f"*_frame{frame:02d}_gt.nii.gz"))))
    data, aff = np.asarray(gt.dataobj), gt.affine
    normal = np.cross(np.diag([-1, -1, 1]) @ aff[:3, 1], np.diag([-1, -1, 1]) @ aff[:3, 0])
    normal *= np.sign(normal @ np.array([-1, 1, 1]))  # toward the base: right-posterior-superior (LPS)
    centre = [(data.shape[0] - 1) / 2, (data.shape[1] - 1) / 2]
    pos = [float((np.diag([-1, -1, 1]) @ (aff[:3, :3] @ [centre[0], centre[1], k] + aff[:3, 3])) @ normal)
           for k in range(data.shape[2])]
    levels = seglevels.levels_from_cavity(pos, (data == label).any(axis=(0, 1)))
    assert levels is not None
    return [levels[k] for k in np.argsort(pos)]


def test_phantom_acdc_layout_through_filter_and_to_png(phantom: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = phantom
    index, excluded, counts = sources.index_root(root / "acdc", progress=False)
    assert counts["layout"] == "nifti (acdc)" and counts["subjects_found"] == 4 and excluded.empty
    result = pngs.write_pngs(index, tmp_path / "png", P.png_settings(P.load(REPO / "params.yaml")), progress=False)
    black = [s for s, t in truth["subjects"].items() if "black" in t["defects"]]
    assert len(black) == 1 and result.excluded.subject.tolist() == black  # constant images: excluded
    labels = pd.DataFrame(result.labels)
    for sid, t in truth["subjects"].items():
        if sid in black:
            continue
        assert (result.chosen[sid]["ed_frame"], result.chosen[sid]["es_frame"]) == (t["ed_frame"], t["es_frame"])
        ed = sorted((r for r in result.rows if r["subject"] == sid and r["phase"] == "ED"), key=lambda r: r["order"])
        assert [r["series"] for r in ed] == t["apex_to_base"]
        for phase, frame in (("ED", t["ed_frame"]), ("ES", t["es_frame"])):
            got = labels[(labels.subject == sid) & (labels.frame == frame)]
            got = got.set_index("series").loc[t["apex_to_base"], "label"].tolist()
            assert got == _seg_levels(root / "acdc" / "training" / sid, frame), (sid, phase)


def test_nifti_geometry_matches_the_dicom_of_the_same_subjects(phantom: tuple[Path, dict]) -> None:
    """Same phantom subjects as NIfTI (RAS affine) and DICOM (LPS headers): the same slice positions."""
    root, _ = phantom
    a, _, _ = sources.index_root(root / "acdc", progress=False)
    d, _, _ = sources.index_root(root / "dicom", progress=False)
    for sid in range(1, 5):
        na = a[(a.subject == generate.nifti_id(sid))].groupby("order").position_mm.first()
        nd = d[(d.subject == sid)].groupby("order").position_mm.first()
        np.testing.assert_allclose(na.to_numpy(), nd.to_numpy(), atol=1e-3)


def _flip_slices(src: Path, dst: Path) -> None:
    """The same subject stored base-first: slices reversed in the array, the affine changed to match."""
    shutil.copytree(src, dst)
    for p in dst.glob("*.nii.gz"):
        img = nib.load(str(p))
        data, aff = np.asarray(img.dataobj), img.affine.copy()
        n = data.shape[2]
        aff[:3, 3] = aff[:3, 3] + (n - 1) * aff[:3, 2]
        aff[:3, 2] = -aff[:3, 2]
        nib.save(nib.Nifti1Image(data[:, :, ::-1].copy(), aff), str(p))


def test_storage_order_does_not_change_the_stack(phantom: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = phantom
    sid = generate.nifti_id(2)
    _flip_slices(root / "acdc" / "training" / sid, tmp_path / "flipped" / sid)
    a, _, _ = niftiindex.index_subject(next(s for s in sources.find_subject_folders(root / "acdc") if s.subject == sid))
    b, _, _ = niftiindex.index_subject(sources.find_subject_folders(tmp_path / "flipped")[0])
    a, b = pd.DataFrame(a), pd.DataFrame(b)
    for x in (a, b):
        x["pixels"] = [pngs.read_image(p, k).sum() for p, k in zip(x.path, x.file_frame)]
    cols = ["series", "frame", "position_mm", "lv_cavity_px", "pixels"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True), atol=1e-6)
    assert (a.file_frame.to_numpy() != b.file_frame.to_numpy()).any()  # really stored the other way round


def _remap(seg: np.ndarray) -> np.ndarray:
    """ACDC label values (1 RV, 2 myo, 3 LV) -> M&Ms / UK Biobank (1 LV, 2 myo, 3 RV)."""
    return np.choose(seg, [0, 3, 2, 1]).astype(np.uint8)


def _vol(folder: Path, frame: int, gt: bool = False) -> nib.Nifti1Image:
    return nib.load(str(folder / f"{folder.name}_frame{frame:02d}{'_gt' if gt else ''}.nii.gz"))


def test_mnms_and_ukbb_layouts_give_the_acdc_levels(phantom: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = phantom
    sid = generate.nifti_id(3)
    src = root / "acdc" / "training" / sid
    ed, es, frames = truth["subjects"][sid]["ed_frame"], truth["subjects"][sid]["es_frame"], 8
    img = {f: np.asarray(_vol(src, f).dataobj) for f in (ed, es)}
    seg = {f: _remap(np.asarray(_vol(src, f, gt=True).dataobj)) for f in (ed, es)}
    aff = _vol(src, ed).affine
    cine = np.stack([img[ed] if t + 1 == ed else img[es] if t + 1 == es else img[ed] // 2 + t
                     for t in range(frames)], axis=-1)
    labelled = np.stack([seg[t + 1] if t + 1 in seg else np.zeros_like(seg[ed]) for t in range(frames)], axis=-1)
    mnms = tmp_path / "mnms" / "A0S9V9"
    mnms.mkdir(parents=True)
    nib.save(nib.Nifti1Image(cine, aff), str(mnms / "A0S9V9_sa.nii.gz"))
    nib.save(nib.Nifti1Image(labelled, aff), str(mnms / "A0S9V9_sa_gt.nii.gz"))
    # UK Biobank: the cine starts at ED (R-wave trigger); sa_ES.nii.gz is one of its frames
    ukbb = tmp_path / "ukbb" / "1000001"
    ukbb.mkdir(parents=True)
    order = [ed] + [t + 1 for t in range(frames) if t + 1 != ed]
    uk_cine = np.stack([cine[..., f - 1] for f in order], axis=-1)
    nib.save(nib.Nifti1Image(uk_cine, aff), str(ukbb / "sa.nii.gz"))
    nib.save(nib.Nifti1Image(img[es], aff), str(ukbb / "sa_ES.nii.gz"))
    for phase, f in (("ED", ed), ("ES", es)):
        nib.save(nib.Nifti1Image(seg[f], aff), str(ukbb / f"label_sa_{phase}.nii.gz"))
    cfg = P.png_settings(P.load(REPO / "params.yaml"))
    want = pd.DataFrame(pngs.write_pngs(sources.index_root(root / "acdc", progress=False)[0].query("subject == @sid"),
                                        tmp_path / "p0", cfg, progress=False).labels)
    for name, folder, es_frame in (("mnms", mnms.parent, es), ("ukbb", ukbb.parent, order.index(es) + 1)):
        index, excluded, counts = sources.index_root(folder, progress=False)
        assert counts["layout"] == f"nifti ({name})" and excluded.empty
        assert index.frame.nunique() == frames
        res = pngs.write_pngs(index, tmp_path / f"p_{name}", cfg, progress=False)
        chosen = next(iter(res.chosen.values()))
        assert (chosen["ed_frame"], chosen["es_frame"]) == ((ed, es) if name == "mnms" else (1, es_frame))
        got = pd.DataFrame(res.labels)
        for phase in ("ED", "ES"):
            a = want[want.frame == (ed if phase == "ED" else es)].label.tolist()
            b = got[got.frame == chosen[f"{phase.lower()}_frame"]].label.tolist()
            assert a == b, (name, phase)


def test_defects_exclude_with_the_file_named(phantom: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = phantom
    sid = generate.nifti_id(1)
    es = truth["subjects"][sid]["es_frame"]
    cases = tmp_path / "cases"
    for case in ("seg_shape", "stack_shape", "no_cavity"):
        shutil.copytree(root / "acdc" / "training" / sid, cases / case)
    gt = cases / "seg_shape" / f"{sid}_frame{es:02d}_gt.nii.gz"
    g = nib.load(str(gt))
    nib.save(nib.Nifti1Image(np.asarray(g.dataobj)[:-2], g.affine), str(gt))
    im = cases / "stack_shape" / f"{sid}_frame{es:02d}.nii.gz"
    i = nib.load(str(im))
    nib.save(nib.Nifti1Image(np.asarray(i.dataobj)[..., :-1], i.affine), str(im))
    gt = cases / "no_cavity" / f"{sid}_frame{es:02d}_gt.nii.gz"
    g = nib.load(str(gt))
    nib.save(nib.Nifti1Image(np.where(np.asarray(g.dataobj) == 3, 2, np.asarray(g.dataobj)).astype(np.uint8),
                             g.affine), str(gt))
    index, excluded, counts = sources.index_root(cases, progress=False)
    got = excluded[excluded.action == "excluded"].set_index("subject")
    assert got.loc["seg_shape", "rule"] == "segmentation" and f"{sid}_frame{es:02d}_gt.nii.gz" in got.loc["seg_shape", "detail"]
    assert got.loc["stack_shape", "rule"] == "inconsistent" and f"{sid}_frame{es:02d}.nii.gz" in got.loc["stack_shape", "detail"]
    assert counts["subjects_kept"] == 1
    res = pngs.write_pngs(index, tmp_path / "png", P.png_settings(P.load(REPO / "params.yaml")), progress=False)
    assert res.excluded.rule.tolist() == ["segmentation"] and "ES stack" in res.excluded.detail.iloc[0]
    assert not res.labels


def test_stages_write_labels_that_split_trains_on(phantom: tuple[Path, dict], tmp_path: Path) -> None:
    """filter_dicom -> to_png -> split on the NIfTI phantom: to_png's labels.csv is the labels contract."""
    root, _ = phantom

    def stage(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    out = stage("stages/filter_dicom.py", "--raw", str(root / "acdc"), "--out", str(tmp_path / "i"),
                "--metrics", str(tmp_path / "f.json"), "--jobs", "1")
    assert "(nifti (acdc) layout): 4 subjects -> 4 kept" in out
    out = stage("stages/to_png.py", "--index", str(tmp_path / "i/index.csv"), "--out", str(tmp_path / "png"),
                "--metrics", str(tmp_path / "p.json"), "--truth", str(root / "acdc/truth.json"), "--jobs", "1")
    assert "levels from the segmentations" in out
    labels = io.read_table(tmp_path / "png/labels.csv")
    assert set(labels.labeled_by) == {"segmentation"} and set(labels.label) <= set(CLASSES)
    out = stage("stages/split.py", "--index", str(tmp_path / "png/index.csv"), "--labels", str(tmp_path / "png/labels.csv"),
                "--out", str(tmp_path / "split.csv"), "--metrics", str(tmp_path / "d.json"))
    split = io.read_table(tmp_path / "split.csv")
    assert split.label.notna().all() and len(split) == len(labels)


# -- the real ACDC patients (../shared/data/acdc; research data, never copied into the repository) --

acdc = pytest.mark.skipif(not ACDC.is_dir(), reason=f"real ACDC data not present at {ACDC} (shared read-only data)")


@acdc
def test_real_acdc_patients_are_indexed_apex_to_base_with_their_levels(tmp_path: Path) -> None:
    root = tmp_path / "acdc"
    (root / "training").mkdir(parents=True)
    patients = sorted((ACDC / "training").iterdir())[::8][:10]  # 10 patients across the five groups
    for p in patients:
        (root / "training" / p.name).symlink_to(p)
    index, excluded, counts = sources.index_root(root, progress=False)
    assert counts["layout"] == "nifti (acdc)" and counts["subjects_kept"] == len(patients) and excluded.empty
    res = pngs.write_pngs(index, tmp_path / "png", P.png_settings(P.load(REPO / "params.yaml")), progress=False)
    labels = pd.DataFrame(res.labels)
    for p in patients:
        rows = index[index.subject == p.name]
        n = int(rows.slice.max()) + 1
        assert len(rows) == 2 * n  # every slice of both volumes
        # this copy's voxel axis k runs base -> apex (README): apex first means k descending
        ed = rows[rows.frame == 1].sort_values("order")
        assert ed.file_frame.tolist() == list(range(n - 1, -1, -1))
        cavity = ed.lv_cavity_px.to_numpy()
        es_cavity = rows[rows.frame == 2].sort_values("order").lv_cavity_px.to_numpy()
        assert cavity.sum() > es_cavity.sum()  # ED has the larger LV blood pool
        for frame in (1, 2):
            got = labels[(labels.subject == p.name) & (labels.frame == frame)].set_index("series")
            assert got.loc[[f"slice_{k}" for k in range(n)], "label"].tolist() == _seg_levels(p, frame)


def test_acdc_ids_split_stratified_by_group() -> None:
    from saxlevel.ingest import splits

    subjects = [f"patient{n:03d}" for n in range(1, 101) if n % 7]  # 86 of ACDC's training patients
    groups = splits.strata(subjects)
    assert groups is not None and groups["patient001"] == "DCM" and groups["patient061"] == "NOR"
    assert groups["patient100"] == "RV" and splits.acdc_group("patient0001") is None  # the phantom's ids
    got = splits.assign_stratified(subjects, (576, 214, 184), 0, groups)
    assert got == splits.assign_stratified(subjects, (576, 214, 184), 0, groups)  # seeded
    for g in splits.ACDC_GROUPS:
        per = pd.Series([got[s] for s in subjects if groups[s] == g]).value_counts()
        assert per["train"] > per["val"] >= per["test"] >= 3  # every group in every split, in proportion
    assert splits.strata([*subjects, "SCD0000101"]) is None  # not every subject names a group


def test_cavity_label_parameter() -> None:
    assert nifti.cavity_label_setting("auto") is None and nifti.cavity_label_setting(1) == 1
    for bad in (0, "three", True, -3):
        with pytest.raises(ValueError, match="filter.lv_cavity_label"):
            nifti.cavity_label_setting(bad)


def test_contour_levels_of_a_dicom_study(tmp_path: Path) -> None:
    """Sunnybrook-style contours (IM-0001-NNNN-icontour-manual.txt for file NNNN.dcm) give levels by the rule."""
    from saxlevel import crossdomain
    from saxlevel.ingest import contours

    assert contours.polygon_area(np.array([[0, 0], [4, 0], [4, 3], [0, 3]], float)) == 12.0
    rows = []
    for k in range(6):  # 6 slices x 3 frames, file number = 3 k + frame
        for frame in (1, 2, 3):
            rows.append({"subject": "S1", "series": f"slice_{k}", "frame": frame, "order": k,
                         "position_mm": 10.0 * k, "path": str(tmp_path / f"{3 * k + frame}.dcm"), "file_frame": 0})
    index = pd.DataFrame(rows)
    square = "\n".join(f"{x} {y}" for x, y in ((0, 0), (9, 0), (9, 9), (0, 9)))
    small = "\n".join(f"{x} {y}" for x, y in ((0, 0), (3, 0), (3, 3), (0, 3)))
    (tmp_path / "c").mkdir()
    for k in (1, 2, 3, 4):  # ED (frame 1) contours on slices 1-4, ES (frame 3) on 1-3, smaller
        (tmp_path / "c" / f"IM-0001-{3 * k + 1:04d}-icontour-manual.txt").write_text(square)
    for k in (1, 2, 3):
        (tmp_path / "c" / f"IM-0001-{3 * k + 3:04d}-icontour-manual.txt").write_text(small)
    labels = contours.contour_levels(index, tmp_path / "c")
    ed = labels[labels.frame == 1]
    es = labels[labels.frame == 3]
    assert set(ed.phase) == {"ED"} and set(es.phase) == {"ES"}
    assert ed.label.tolist() == ["oap", "ap", "mid", "mid", "bs", "obs"]  # 4 LV slices: 3 (r + 0.5) / 4
    assert es.label.tolist() == ["oap", "ap", "mid", "bs", "obs", "obs"]
    rows = crossdomain.dicom_rows(index, labels)
    assert len(rows) == 12 and set(rows.split) == {"test"}
