"""LV coverage QC and the AHA assignment from levels (saxlevel.evaluation.coverage), the phantom's truncated stacks, and
coverage detection on the real ACDC segmentations (skipped, saying so, where they are absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saxlevel import CLASS_INDEX, CLASSES
from saxlevel.evaluation import coverage, table5
from saxlevel.phantom import generate, plan

from conftest import REPO, phantom_params

ACDC = REPO.parent / "shared" / "data" / "acdc"


def _idx(levels: str) -> np.ndarray:
    return np.array([CLASS_INDEX[x] for x in levels.split()])


def _probs(levels: np.ndarray, p: float = 0.8) -> np.ndarray:
    out = np.full((len(levels), 5), (1 - p) / 4)
    out[np.arange(len(levels)), levels] = p
    return out


def test_an_end_is_covered_when_its_end_slice_is_beyond_the_lv() -> None:
    assert coverage.ends_covered(_idx("oap ap mid bs obs")) == (True, True)
    assert coverage.ends_covered(_idx("ap mid bs obs")) == (False, True)
    assert coverage.ends_covered(_idx("oap ap mid bs")) == (True, False)
    # a stray out-of-apical level mid-stack does not make a stack that starts inside the LV reach the apex
    assert coverage.ends_covered(_idx("ap oap mid bs bs")) == (False, False)


def test_stack_coverage_confidence_is_the_end_slices_probability() -> None:
    levels = _idx("ap mid bs obs")
    probs = _probs(levels, 0.7)
    probs[0] = [0.25, 0.55, 0.1, 0.05, 0.05]  # apex end: P(out-of-apical) = 0.25
    got = coverage.stack_coverage(levels, probs)
    assert (got["apex_covered"], got["base_covered"], got["n_slices"]) == (False, True, 4)
    assert (got["first_level"], got["last_level"]) == ("ap", "obs")
    assert got["apex_confidence"] == pytest.approx(0.75) and got["base_confidence"] == pytest.approx(0.7)
    assert got["confidence"] == pytest.approx(0.7)


def _levels_table(stacks: dict[str, str]) -> pd.DataFrame:
    rows = []
    for phase, levels in stacks.items():
        idx = _idx(levels)
        probs = _probs(idx)
        for k, lvl in enumerate(levels.split()[::-1]):  # rows in reverse: the order column must decide
            k = len(idx) - 1 - k
            rows.append({"subject": "S1", "phase": phase, "frame": 1 if phase == "ED" else 9, "series": f"s{k}",
                         "order": k, "position_mm": 10.0 * k, "level": lvl,
                         **{f"p_{c}": probs[k, i] for i, c in enumerate(CLASSES)}})
    return pd.DataFrame(rows)


def test_coverage_table_and_verdict_name_the_missing_end() -> None:
    table = _levels_table({"ED": "oap ap mid bs obs", "ES": "ap mid bs obs"})
    cover = coverage.coverage_table(table)
    assert cover.phase.tolist() == ["ED", "ES"] and cover.apex_covered.tolist() == [True, False]
    assert cover.base_covered.all() and cover.n_slices.tolist() == [5, 4]
    said = coverage.verdict(cover)
    assert said.startswith("incomplete: apex not covered in ES") and "first slice is ap" in said and "base" not in said
    assert coverage.verdict(coverage.coverage_table(_levels_table({"ED": "oap mid obs"}))).startswith("complete")


def test_aha_table_assigns_the_17_segment_regions() -> None:
    aha = coverage.aha_table(_levels_table({"ED": "oap ap mid mid bs obs"})).sort_values("order")
    assert aha.aha_region.tolist() == ["apex", "apical", "mid", "mid", "basal", "none"]
    assert aha.aha_segments.tolist() == ["17", "13-16", "7-12", "7-12", "1-6", ""]
    assert list(coverage.AHA) == list(CLASSES)  # one region per level, in anatomical order


def test_detection_counts_missing_ends_as_positives() -> None:
    truth_missing = np.array([True, True, True, False, False, False, False])
    pred_missing = np.array([True, True, False, False, False, False, True])
    got = coverage.detection(truth_missing, pred_missing)
    assert (got["missing"], got["present"]) == (3, 4)
    assert got["sensitivity"] == pytest.approx(2 / 3, abs=1e-4) and got["specificity"] == pytest.approx(0.75)
    assert coverage.detection(np.zeros(3, bool), np.zeros(3, bool))["sensitivity"] is None


def _predictions(true: dict[str, str], pred: dict[str, str]) -> pd.DataFrame:
    rows = []
    for sid in true:
        t, p = true[sid].split(), _idx(pred[sid])
        probs = _probs(p)
        rows += [{"split": "test", "subject": sid, "phase": "ED", "order": k, "true": t[k],
                  **{f"p_{c}": probs[k, i] for i, c in enumerate(CLASSES)}} for k in range(len(t))]
    return pd.DataFrame(rows)


def test_evaluate_reports_coverage_detection_per_model() -> None:
    true = {"a": "oap ap mid bs obs", "b": "ap mid bs obs", "c": "ap mid bs", "d": "oap mid bs obs"}
    pred = {"a": "oap ap mid bs obs", "b": "ap mid bs obs", "c": "oap mid bs", "d": "oap mid bs bs"}
    result = table5.evaluate_model(_predictions(true, pred), 0, 0)
    cov = result["argmax"]["test"]["coverage"]
    # apex missing in b and c, detected in b only; present in a and d, both right
    assert cov["apex"] == {"missing": 2, "present": 2, "sensitivity": 0.5, "specificity": 1.0, "accuracy": 0.75}
    # base missing in c, detected; present in a, b, d, d predicted missing
    assert cov["base"]["sensitivity"] == 1.0 and cov["base"]["specificity"] == pytest.approx(2 / 3, abs=1e-4)
    rows = table5.coverage_rows("m", result)
    assert {(r["decode"], r["end"]) for r in rows} == {(d, e) for d in ("argmax", "ordered") for e in ("apex", "base")}
    head = table5.flat_headline("m", "argmax", result["argmax"]["test"])
    assert head["apex_missing_sensitivity"] == 0.5 and head["base_missing_specificity"] == pytest.approx(2 / 3, abs=1e-4)


# -- the phantom's truncated stacks --


@pytest.mark.parametrize("end", ["apex", "base"])
def test_cut_stacks_miss_their_end_in_both_phases(end: str) -> None:
    params = phantom_params(subjects=40, truncated={"apex": 0.0, "base": 0.0})
    for sid in range(1, 9):
        whole, cut = plan.plan_subject(sid, [], params), plan.plan_subject(sid, [], params, end)
        assert cut["truncated"] == end and cut["n"] < whole["n"]
        for frame in (cut["ed"], cut["es"]):
            levels = [r["label"] for r in cut["labels"] if r["frame"] == frame]
            full = [r["label"] for r in whole["labels"] if r["frame"] == frame]
            assert coverage.ends_covered(_idx(" ".join(levels))) == ((False, True) if end == "apex" else (True, False))
            inside = [x for x in full if x not in ("oap", "obs")]
            # the first (apex) or last (base) slice with a blood pool is lost as well
            assert [x for x in levels if x not in ("oap", "obs")] == (inside[1:] if end == "apex" else inside[:-1]) \
                or len(levels) < len(full) - 1
        # the slices left are the whole stack's, at the same heights and positions
        assert set(cut["z_axis"]) <= set(whole["z_axis"])


def test_truncation_is_seeded_disjoint_and_leaves_other_subjects_alone() -> None:
    params = phantom_params(subjects=40, truncated={"apex": 0.2, "base": 0.1})
    chosen = plan.assign_truncation(params)
    assert sorted(chosen.values()).count("apex") == 8 and sorted(chosen.values()).count("base") == 4
    assert chosen == plan.assign_truncation(params)
    plain = phantom_params(subjects=40, truncated={"apex": 0.0, "base": 0.0})
    assert plan.assign_truncation(plain) == {}
    other = next(s for s in range(1, 41) if s not in chosen)
    a, b = plan.plan_subject(other, [], params), plan.plan_subject(other, [], plain)
    assert a["labels"] == b["labels"] and a["z_axis"] == b["z_axis"]
    with pytest.raises(ValueError, match="phantom.truncated has unknown ends"):
        phantom_params(truncated={"middle": 0.1}).validate()
    with pytest.raises(ValueError, match="phantom.truncated must be >= 0"):
        phantom_params(truncated={"apex": 0.7, "base": 0.6}).validate()


def test_phantom_records_its_cut_stacks(tmp_path: Path) -> None:
    truth = generate.make_phantom(tmp_path / "ph", phantom_params(subjects=6, frames=6, jobs=1, truncated={
        "apex": 0.34, "base": 0.17}, defect_rates={d: 0.0 for d in plan.DEFECTS}), progress=False)
    cut = {s: t["truncated"] for s, t in truth["subjects"].items() if "truncated" in t}
    assert sorted(cut.values()) == ["apex", "apex", "base"] and truth["params"]["truncated"]["apex"] == 0.34
    labels = pd.read_csv(tmp_path / "ph" / "labels.csv")
    for sid, end in cut.items():
        mine = labels[labels.subject == int(sid)]
        assert ("oap" if end == "apex" else "obs") not in set(mine.label)
        assert len(mine) == 2 * len(truth["subjects"][sid]["apex_to_base"])


# -- the real ACDC segmentations --


@pytest.mark.skipif(not ACDC.is_dir(), reason=f"real ACDC data not present at {ACDC} (shared read-only data)")
def test_acdc_coverage_truth_follows_the_segmentation(tmp_path: Path) -> None:
    """Every real ACDC stack: its levels from the expert segmentation reach the apex exactly when its apex-most slice
    has no LV cavity, and the base exactly when its base-most slice has none; some stacks miss each end."""
    from saxlevel import sources
    from saxlevel.ingest import seglevels

    root = tmp_path / "acdc"
    (root / "training").mkdir(parents=True)
    for p in sorted((ACDC / "training").iterdir()):
        (root / "training" / p.name).symlink_to(p)
    index, _, _ = sources.index_root(root, progress=False)
    reached = []
    for _, stack in index.groupby(["subject", "frame"]):
        stack = stack.sort_values("order")
        cavity = stack.lv_cavity_px.to_numpy() > 0
        levels = seglevels.levels_from_cavity(stack.position_mm.tolist(), cavity.tolist())
        if levels is None:
            continue
        ends = coverage.ends_covered(_idx(" ".join(levels)))
        assert ends == (not cavity[0], not cavity[-1]), stack.subject.iloc[0]
        reached.append(ends)
    apex, base = (sum(e[i] for e in reached) for i in (0, 1))
    assert len(reached) >= 100 and 0 < apex < len(reached) and 0 < base < len(reached)
