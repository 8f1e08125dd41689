"""Cohort-scale predict: a root of studies in one run, the same levels as one-study predict, errors recorded and
skipped, a resumable rerun, a local Dask cluster, and a study folder that mixes patients refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from saxlevel import predict, sources
from saxlevel.cohort import roots, run, summary
from saxlevel.evaluation import coverage
from saxlevel.phantom import make_phantom

from conftest import phantom_params

pytestmark = pytest.mark.skipif(not predict.SHIPPED_MODEL.is_file(), reason="no shipped model in this checkout")
NO_DEFECTS = {"duplicate": 0.0, "inconsistent": 0.0, "noncontiguous": 0.0, "black": 0.0}
DAMAGED = "PH0005"


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five clinical-export subjects (some stacks cut at an end); the fifth damaged: every file overwritten."""
    root = tmp_path_factory.mktemp("cohort") / "root"
    make_phantom(root, phantom_params(subjects=5, seed=11, frames=6, format="clinical", defect_rates=NO_DEFECTS,
                                      truncated={"apex": 0.3, "base": 0.3}, jobs=2), progress=False)
    for f in (root / DAMAGED).iterdir():
        f.write_bytes(b"not a DICOM file")
    return root


def _studies(root: Path) -> list:
    studies = roots.find_cohort(root)
    assert studies is not None
    return studies


def test_a_root_of_patients_is_a_cohort_and_one_patient_is_a_study(cohort_root: Path, tmp_path: Path) -> None:
    assert [s.subject for s in _studies(cohort_root)] == ["PH0001", "PH0002", "PH0003", "PH0004", "PH0005"]
    assert roots.find_cohort(cohort_root / "PH0001") is None
    # one patient's study with its images in two series folders: still one study
    one = tmp_path / "one"
    files = sorted((cohort_root / "PH0002").iterdir())
    for k, f in enumerate(files):
        (one / f"series{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, one / f"series{k % 2}" / f.name)
    assert roots.find_cohort(one) is None


def test_a_kaggle_tree_and_a_nifti_dataset_are_roots(phantom_dir: Path, tmp_path: Path) -> None:
    kaggle = roots.find_cohort(phantom_dir)
    assert kaggle is not None and len(kaggle) == 12
    make_phantom(tmp_path / "nifti", phantom_params(subjects=3, seed=1, frames=6, format="nifti",
                                                    defect_rates=NO_DEFECTS, jobs=1), progress=False)
    nifti = roots.find_cohort(tmp_path / "nifti")
    assert nifti is not None and len(nifti) == 3


def test_a_study_folder_of_two_patients_is_refused_naming_both(cohort_root: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "root" / "mixed"
    shutil.copytree(cohort_root / "PH0001", mixed)
    other = sorted((cohort_root / "PH0002").iterdir())[0]
    shutil.copy(other, mixed / "zz_other.dcm")
    with pytest.raises(predict.PredictError, match=r"mixed_patients: .*PatientID 1 .*PatientID 2 "):
        predict.index_folder(mixed)
    # filter_dicom too: excluded with its reason, never one stack
    index, excluded, _ = sources.index_root(tmp_path / "root", policy="repair", jobs=1, progress=False)
    assert index.empty and excluded.rule.tolist() == ["mixed_patients"] and "zz_other.dcm" in excluded.detail[0]


def test_the_cohort_run_matches_one_study_predict_records_errors_and_resumes(
        cohort_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    studies = _studies(cohort_root)
    settings = run.Settings(str(predict.SHIPPED_MODEL))
    table = run.run_cohort(studies, settings, tmp_path / "cohort", jobs=2, progress=False)
    assert table.subject.tolist() == [s.subject for s in studies]
    assert table.set_index("subject").status.to_dict() == {"PH0001": "ok", "PH0002": "ok", "PH0003": "ok",
                                                           "PH0004": "ok", DAMAGED: "error"}
    assert DAMAGED in table.set_index("subject").message[DAMAGED]  # the message names the study's folder
    for s in studies[:4]:
        levels, cover, _ = predict.run(s.path, predict.SHIPPED_MODEL, tmp_path / "loop" / s.subject)
        got = pd.read_csv(tmp_path / "cohort" / s.subject / "levels.csv")
        pd.testing.assert_frame_equal(got, pd.read_csv(tmp_path / "loop" / s.subject / "levels.csv"))
        row = table.set_index("subject").loc[s.subject]
        assert row.verdict == coverage.verdict(cover).split(":")[0]
        assert row.apex_covered_ed == bool(cover.apex_covered.iloc[0]) and row.slices == cover.n_slices.max()
        # figures only where coverage fails (the default for a root)
        assert (tmp_path / "cohort" / s.subject / "levels_ED.png").exists() == (row.verdict == "incomplete")
    assert (tmp_path / "cohort" / "cohort.html").read_text().count("<table") == 4

    # a rerun loads no model and redoes nothing; a changed input file redoes its subject only
    loads = []
    real_load = predict.load_model
    monkeypatch.setattr(predict, "load_model", lambda *a: loads.append(a) or real_load(*a))
    again = run.run_cohort(studies, settings, tmp_path / "cohort", jobs=2, progress=False)
    assert loads == []
    pd.testing.assert_frame_equal(again, table)
    changed = sorted((cohort_root / "PH0003").iterdir())[0]
    changed.write_bytes(changed.read_bytes())  # same bytes, new modification time
    before = json.loads((tmp_path / "cohort/PH0001" / run.FINGERPRINT).read_text())
    third = run.run_cohort(studies, settings, tmp_path / "cohort", jobs=1, progress=False)
    assert len(loads) == 1
    assert json.loads((tmp_path / "cohort/PH0001" / run.FINGERPRINT).read_text()) == before
    pd.testing.assert_frame_equal(third.drop(columns=list(summary.TIMING)), table.drop(columns=list(summary.TIMING)))


def test_a_local_dask_cluster_writes_what_the_local_run_writes(cohort_root: Path, tmp_path: Path) -> None:
    studies = _studies(cohort_root)
    settings = run.Settings(str(predict.SHIPPED_MODEL), figures="none")
    local = run.run_cohort(studies, settings, tmp_path / "local", jobs=1, progress=False)
    dask = run.run_cohort(studies, settings, tmp_path / "dask", workers=2, progress=False)
    pd.testing.assert_frame_equal(dask.drop(columns=list(summary.TIMING)), local.drop(columns=list(summary.TIMING)))
    for s in studies[:4]:
        for name in ("levels.csv", "coverage.csv", "aha.csv"):
            assert (tmp_path / "dask" / s.subject / name).read_bytes() == (tmp_path / "local" / s.subject / name).read_bytes()


def test_the_cli_runs_a_root(cohort_root: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "saxlevel.cli", "predict", str(cohort_root), "--out", str(tmp_path / "o"),
                        "--figures", "none"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "a root of 5 studies" in r.stdout and "1 errors" in r.stdout
    table = pd.read_csv(tmp_path / "o" / "cohort.csv")
    assert len(table) == 5 and not list((tmp_path / "o").rglob("*.png"))


def test_summary_counts_missing_ends() -> None:
    table = summary.cohort_table([
        {"subject": "a", "status": "ok", "verdict": "complete", "apex_covered_ed": True, "base_covered_ed": True,
         "apex_covered_es": True, "base_covered_es": True, "seconds": 1.0},
        {"subject": "b", "status": "ok", "verdict": "incomplete", "apex_covered_ed": False, "base_covered_ed": True,
         "apex_covered_es": True, "base_covered_es": True, "seconds": 2.0},
        summary.error_row("c", "dicom folder", "unreadable: x", [], "m", 0.5)])
    assert summary.missing(table, "apex").tolist() == [False, True, False]
    assert summary.missing(table, "base").tolist() == [False, False, False]
