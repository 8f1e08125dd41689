"""Input sources behind one index contract (``contract.INDEX_COLUMNS``): which layout a root has, and its index.

- ``kaggle``: the Kaggle Data Science Bowl trees, ``{train,validate,test}/[same/]<id>/study/sax_N/*.dcm``; the
  subject id is the numeric folder name.
- ``subject folders``: a clinical export, one folder per subject holding its DICOM files in any sub-layout
  (``dicom_folder``); the subject id is the folder name as it is (``SCD0000101``, ``patient001``).
- ``nifti``: one folder per subject holding NIfTI volumes named as ACDC, M&Ms, M&Ms-2 or UK Biobank name them
  (``nifti``, ``niftiindex``), possibly one or two levels down (ACDC's ``training/patient001``). A root of subject
  folders may mix NIfTI and DICOM subjects; each folder is read by its content.

Shared by the DICOM sources: ``dicomheader`` (the fast header reader), ``dicomfile`` (one file's images and their
geometry), ``pixeldata`` (decodable and complete pixel data), ``rules`` (the paper's exclusion rules and the repairs,
apex->base order), ``contract`` (the index columns, the rules by name, a study, a record).

May import: ``saxlevel`` (``io``, ``parallel``, ``params``) and nothing above this package (not ``ingest``). Never
TensorFlow (a test checks).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from saxlevel import parallel
from saxlevel.sources import contract, dicom_folder, dicomfile, kaggle, nifti, niftiindex

KAGGLE, SUBJECT_FOLDERS, NIFTI = "kaggle", "subject folders", "nifti"


def detect_layout(raw: str | Path) -> str:
    """The layout of a DICOM root: Kaggle's split folders, else one folder per subject."""
    raw = Path(raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"DICOM root {raw} does not exist: set data.raw in params.yaml or pass --raw")
    return KAGGLE if any((raw / split).is_dir() for split in contract.SPLITS) else SUBJECT_FOLDERS


def find_subject_folders(raw: str | Path) -> list[contract.Study]:
    """One study per non-hidden sub-folder of ``raw``, by name; the id is the folder name. A folder that holds
    NIfTI subject folders rather than being one (ACDC's ``training/``, M&Ms' ``Training/Labeled/``) stands
    for the subjects inside it."""
    raw = Path(raw)
    found: list[contract.Study] = []
    for p in sorted(raw.iterdir()):
        if p.name.startswith(".") or not p.is_dir():
            continue
        inner = [] if nifti.subject_layout(p) else nifti.find_subjects(p, depth=2)
        found += inner or [contract.Study(p.name, "none", p)]
    if not found:
        files = dicomfile.image_files(raw)
        hint = (f" ({len(files)} file(s) lie directly in it: it looks like one subject's folder; give its parent, "
                "or move it into a folder named after the subject)") if files else ""
        raise FileNotFoundError(
            f"no subjects under {raw}: expected the Kaggle layout {raw}/{{train,validate,test}}/<id>/study/sax_N/ "
            f"or one folder per subject holding its DICOM files{hint}")
    return found


def _index_one(study: contract.Study, policy: str, kind: str,
               lv_cavity: int | None = None) -> tuple[list[dict], list[dict], int]:
    """One study by its kind: KAGGLE, SUBJECT_FOLDERS (DICOM) or a NIfTI layout name (nifti.LAYOUTS)."""
    if kind == KAGGLE:
        return kaggle.index_study(study, policy)
    if kind in nifti.LAYOUTS:
        return niftiindex.index_subject(study, policy, lv_cavity, kind)
    return dicom_folder.index_subject(study, policy)


def _failed_study(task: tuple, why: str) -> tuple[list[dict], list[dict], int]:
    """The index result of a subject whose indexing raised or killed its worker: excluded, rule ``error``."""
    study = task[0]
    return [], [{"subject": study.subject, "rule": "error", "action": "excluded",
                 "detail": f"{study.path}: {why}"}], 0


def index_root(raw: str | Path, policy: str = "paper", jobs: int = 1, progress: bool = True,
               lv_cavity: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Index every study under ``raw`` in any layout: (kept images, exclusions/repairs/notes, counts).
    ``lv_cavity``: the LV-cavity label of NIfTI segmentations (None: the layout's, see nifti.LAYOUTS)."""
    if policy not in ("paper", "repair"):
        raise ValueError(f"filter.policy must be 'paper' or 'repair', got {policy!r}")  # 'predict' is predict's
    layout = detect_layout(raw)
    shadowed: list[contract.Study] = []
    studies = kaggle.find_studies(raw, shadowed) if layout == KAGGLE else find_subject_folders(raw)
    kinds = [KAGGLE if layout == KAGGLE else nifti.subject_layout(s.path) or SUBJECT_FOLDERS for s in studies]
    if kinds and all(k in nifti.LAYOUTS for k in kinds):
        layout = f"{NIFTI} ({', '.join(sorted(set(kinds)))})"
    results = parallel.map_isolated(
        _index_one, [(s, policy, k, lv_cavity) for s, k in zip(studies, kinds)], jobs, on_failure=_failed_study,
        desc="filter_dicom", unit="subject", progress=progress)
    rows = [r for res in results for r in res[0]]
    problems = [p for res in results for p in res[1]]
    kept_at = {s.subject: s.path for s in studies}
    problems += [{"subject": s.subject, "rule": "duplicate", "action": "repaired",
                  "detail": f"subject {s.subject} also at {s.path}: ignored, {kept_at[s.subject]} used"}
                 for s in shadowed]
    index = pd.DataFrame(rows, columns=contract.INDEX_COLUMNS)
    excluded = pd.DataFrame(problems, columns=contract.EXCLUDED_COLUMNS)
    dropped = set(excluded.loc[excluded.action == "excluded", "subject"])

    def by_rule(action: str) -> dict[str, int]:
        return {r: int(excluded[(excluded.rule == r) & (excluded.action == action)].subject.nunique())
                for r in contract.RULES}

    counts = {
        "layout": layout,
        "subjects_found": len(studies),
        "subjects_kept": len(studies) - len(dropped),
        "subjects_excluded": len(dropped),
        "files_read": sum(res[2] for res in results),
        "images_kept": len(index),
        "excluded_by_rule": by_rule("excluded"),
        "repaired_by_rule": by_rule("repaired"),
        "ignored_by_rule": by_rule("ignored"),
        "noted_by_rule": by_rule("warning"),
    }
    return index, excluded, counts
