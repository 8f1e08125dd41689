"""Real data as it comes (issue 35): repeated DSB2 acquisitions under far folder numbers, M&Ms-2's per-phase
layout and its broken cases, and ED on real cines from the R-wave prior. Each path is tested on data the phantom
writes; the shared real studies (../shared/data) are read where present and skipped, saying so, where absent."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saxlevel import params as P
from saxlevel import predict, sources
from saxlevel.ingest import phases, pngs, seglevels
from saxlevel.phantom import generate, plan

from conftest import REPO

SHARED = REPO.parent / "shared" / "data"
NO_RULES = {"duplicate": 0.0, "inconsistent": 0.0, "noncontiguous": 0.0, "black": 0.0}


def _phantom(root: Path, fmt: str, rates: dict[str, float], subjects: int = 4, frames: int = 8) -> dict:
    prm = plan.PhantomParams.from_params(P.load(REPO / "params.yaml"), subjects=subjects, frames=frames, jobs=1,
                                             format=fmt, defect_rates={**NO_RULES, **rates},
                                             truncated={"apex": 0.0, "base": 0.0})
    return generate.make_phantom(root, prm, progress=False)


@pytest.fixture(scope="module")
def late(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("late") / "phantom"
    return root, _phantom(root, "classic", {"late_repeat": 0.5})


def test_late_repeats_paper_excludes_repair_and_predict_keep_every_position(late: tuple[Path, dict]) -> None:
    root, truth = late
    repeated = {sid: t for sid, t in truth["subjects"].items() if "late_repeat" in t["defects"]}
    assert len(repeated) == 2
    index, excluded, _ = sources.index_root(root, policy="paper", progress=False)
    for sid, t in repeated.items():
        dup = excluded[(excluded.subject.astype(str) == sid) & (excluded.rule == "duplicate")].detail.tolist()
        assert len(dup) == 2 and all("mm along the stack normal" in d for d in dup)  # the positions named
        for first, again in t["late_repeats"].items():
            assert any(d.startswith(f"{first}, {again} are at one place") for d in dup)
    assert set(index.subject.astype(str)) == set(truth["subjects"]) - set(repeated)
    index, excluded, _ = sources.index_root(root, policy="repair", progress=False)
    for sid, t in repeated.items():
        got = index[index.subject.astype(str) == sid].drop_duplicates("series").sort_values("order").series.tolist()
        want = [t["late_repeats"].get(s, s) for s in t["apex_to_base"]]  # every position, the last acquisition
        assert got == want
        records = excluded[excluded.subject.astype(str) == sid]
        assert set(records.rule) == {"duplicate"} and set(records.action) == {"repaired"}
        with pytest.warns(UserWarning, match="kept the last usable acquisition"):
            by_predict = predict.index_folder(next(root.glob(f"*/*/{sid}")))
        mine = index[index.subject.astype(str) == sid]
        assert by_predict[["series", "frame", "path"]].values.tolist() == mine[["series", "frame", "path"]].values.tolist()


def test_late_repeat_phantom_defect_is_opt_in_and_classic_only(tmp_path: Path) -> None:
    assert "late_repeat" not in P.load(REPO / "params.yaml")["phantom"]["defect_rates"]  # rate 0 by default
    with pytest.raises(ValueError, match="late_repeat: classic only"):
        _phantom(tmp_path / "x", "clinical", {"late_repeat": 0.5})
    with pytest.raises(ValueError, match="mnms2 only"):
        _phantom(tmp_path / "y", "nifti", {"la_only": 0.25})


# -- M&Ms-2's per-phase layout ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnms2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mnms2") / "phantom"
    rates = {"missing_gt": 0.125, "gt_shape": 0.125, "la_only": 0.125, "cine_only": 0.125}
    return root, _phantom(root, "mnms2", rates, subjects=8, frames=6)


def test_mnms2_layout_indexes_every_slice_with_the_thirds_levels(mnms2: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = mnms2
    index, excluded, counts = sources.index_root(root, progress=False)
    assert counts["layout"] == "nifti (mnms2)" and counts["subjects_found"] == 8
    intact = [s for s, t in truth["subjects"].items() if not t["defects"]]
    assert len(intact) == 4
    result = pngs.write_pngs(index, tmp_path / "png", P.png_settings(P.load(REPO / "params.yaml")), progress=False)
    labels = pd.DataFrame(result.labels)
    for sid in intact:
        rows = index[index.subject == sid]
        n = len(truth["subjects"][sid]["apex_to_base"])
        assert len(rows) == 2 * n and sorted(rows.phase.unique()) == ["ED", "ES"]  # every slice, both phases
        for phase in ("ED", "ES"):
            stack = rows[rows.phase == phase].sort_values("order")
            assert (np.diff(stack.position_mm) > 0).all()  # apex -> base
            want = seglevels.levels_from_cavity(stack.position_mm.tolist(), (stack.lv_cavity_px > 0).tolist())
            got = labels[(labels.subject == sid) & (labels.frame == int(stack.frame.iloc[0]))]
            assert got.set_index("series").loc[stack.series, "label"].tolist() == want
        left_out = excluded[(excluded.subject == sid) & (excluded.action == "ignored")].detail.str.cat()
        assert "_SA_CINE.nii.gz: the 4-D cine is not needed" in left_out and "_LA_ED.nii.gz" in left_out


def test_mnms2_broken_cases_are_records_not_tracebacks(mnms2: tuple[Path, dict]) -> None:
    root, truth = mnms2
    index, excluded, _ = sources.index_root(root, progress=False)
    case = {t["defects"][0]: s for s, t in truth["subjects"].items() if t["defects"]}

    def records(defect: str) -> pd.DataFrame:
        return excluded[excluded.subject == case[defect]]

    # a missing _gt: indexed, recorded, no levels for that phase
    r = records("missing_gt")
    assert "its segmentation" in r[r.rule == "segmentation"].detail.item() and "is missing" in r.detail.str.cat()
    assert (index.subject == case["missing_gt"]).any()
    # a _gt of another shape: excluded, naming the file
    r = records("gt_shape")
    assert r[r.action == "excluded"].rule.tolist() == ["segmentation"]
    assert "_SA_ES_gt.nii.gz" in r[r.action == "excluded"].detail.item()
    # long-axis files only: excluded as no_sax, saying what was found
    r = records("la_only")
    assert r.rule.tolist() == ["no_sax"] and "long-axis files only" in r.detail.item()
    # the cine alone: indexed, ED/ES from its images, recorded
    r = records("cine_only")
    assert "detected from the cine's images" in r[r.rule == "frames"].detail.item()
    rows = index[index.subject == case["cine_only"]]
    assert rows.frame.nunique() == 6 and rows.segmentation.fillna("").eq("").all()
    # predict reads each folder, or says clearly why not
    for defect in ("missing_gt", "cine_only"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert len(predict.index_folder(root / "Training" / case[defect]))
    for defect, message in (("gt_shape", "segmentation shape"), ("la_only", "long-axis files only")):
        with pytest.raises(predict.PredictError, match=message):
            predict.index_folder(root / "Training" / case[defect])


# -- ED near the R wave ---------------------------------------------------------------------------------------------

def test_r_wave_from_trigger_times() -> None:
    assert phases.r_wave_frame(np.arange(30) * 37.5) == 0.0  # DSB2: frame 1 at TriggerTime 0
    assert phases.r_wave_frame(18.75 + np.arange(20) * 37.5) == pytest.approx(-0.5)  # GE: half a step after it
    assert phases.r_wave_frame(None) is None and phases.r_wave_frame(np.full(20, np.nan)) is None
    assert phases.r_wave_frame(np.array([0.0, 40.0, 40.0, 80.0])) is None  # not increasing: no prior
    assert phases.ed_window(10) == 2 and phases.ed_window(20) == 2 and phases.ed_window(30) == 3


def test_ed_is_the_curve_maximum_near_the_r_wave() -> None:
    # A 20-phase curve whose flat diastasis peaks at phase 17, while the volume at phases 19-20 is just below it.
    curve = np.array([9.8, 9.0, 7.0, 5.0, 3.0, 2.0, 1.8, 2.2, 3.5, 5.0, 6.5, 7.8, 8.6, 9.2, 9.6, 9.9, 10.0, 9.95,
                      9.9, 9.85])
    trigger = 18.75 + np.arange(20) * 37.5
    ed, note = phases.ed_near_r_wave(curve, trigger)
    assert ed == 18 and "peaks at frame 17" in note and "frame 19" in note  # phase 19: one from the R wave
    assert phases.ed_near_r_wave(curve, None) == (16, "")  # no trigger times: the whole cycle, as before
    assert phases.ed_near_r_wave(np.roll(curve, 4), trigger)[1] == ""  # prior and curve agree: no note
    # the phantom's ED (frame 1 +/- 2) stays inside the window whatever its place
    for ed_frame in (9, 10, 1, 2, 3):
        c = np.cos(2 * np.pi * (np.arange(10) - (ed_frame - 1)) / 10)
        assert phases.ed_near_r_wave(c, np.arange(10) * 90.0)[0] == ed_frame - 1


# -- the shared real studies (research data, read-only; never copied into the repository) ------------------------

sunnybrook = pytest.mark.skipif(not (SHARED / "sunnybrook").is_dir(),
                                reason=f"the real GE study is not present at {SHARED / 'sunnybrook'}")
mnms = pytest.mark.skipif(not (SHARED / "mnms").is_dir(), reason=f"real M&Ms data not present at {SHARED / 'mnms'}")


@sunnybrook
def test_real_ge_study_ed_es_within_one_phase_of_the_expert(tmp_path: Path) -> None:
    """The expert contoured ED at phase 19 and ES at phase 8 (of 20; README of the shared folder)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = predict.index_folder(SHARED / "sunnybrook" / "dicoms" / "SCD0000101")
    chosen = pngs.choose_frames(index, "auto", "auto")
    for phase, expert in (("ED", 19), ("ES", 8)):
        d = abs(chosen[phase] - expert) % 20
        assert min(d, 20 - d) <= 1, (phase, chosen)


@mnms
def test_real_mnms_subjects_levels_follow_the_thirds_rule(tmp_path: Path) -> None:
    index, excluded, counts = sources.index_root(SHARED / "mnms", progress=False)
    assert counts["layout"] == "nifti (mnms)" and counts["subjects_kept"] == counts["subjects_found"] >= 3
    result = pngs.write_pngs(index, tmp_path / "png", P.png_settings(P.load(REPO / "params.yaml")), progress=False)
    labels = pd.DataFrame(result.labels)
    for (sid, frame), stack in index.groupby(["subject", "frame"]):
        stack = stack.sort_values("order")
        assert (np.diff(stack.position_mm) > 0).all()
        want = seglevels.levels_from_cavity(stack.position_mm.tolist(), (stack.lv_cavity_px > 0).tolist())
        got = labels[(labels.subject == sid) & (labels.frame == frame)].set_index("series")
        assert got.loc[stack.series, "label"].tolist() == want
