"""Whether a folder is one study or a root of studies, decided by what it holds and by the DICOM headers.

- A NIfTI volume or subject folder, a Kaggle study (``study/`` or ``sax_N`` folders): one study.
- A Kaggle tree (``train/``, ``validate/``, ``test/``): a root; each ``<id>/study`` is a study.
- A NIfTI dataset (subject folders named as ACDC, M&Ms, M&Ms-2 or UK Biobank name them): a root.
- A folder of DICOM in any sub-layout: one study when the first image of each sub-folder (and of the folder
  itself) names one (PatientID, StudyInstanceUID); a root when they name several, each sub-folder a study. A study
  whose own files still mix patients is refused by the indexer (rule ``mixed_patients``), never one stack.
"""

from __future__ import annotations

from pathlib import Path

from saxlevel import sources
from saxlevel.sources import contract, dicomfile, kaggle, nifti


def study_key(folder: Path) -> tuple[str, str] | None:
    """(PatientID, StudyInstanceUID) of the first readable DICOM image under ``folder`` (in name order), or None
    where it holds none."""
    for f in dicomfile.image_files(folder, recursive=True, any_name=True):
        try:
            frames = dicomfile.read_frames(f)
        except (contract.FileDefect, OSError, ValueError):
            continue
        return frames[0]["patient_id"], frames[0]["study_uid"]
    return None


def find_cohort(root: str | Path) -> list[contract.Study] | None:
    """The studies of ``root`` when it is a root of several, or None when it is one study (predict it as one)."""
    root = Path(root)
    if not root.is_dir() or nifti.subject_layout(root):
        return None
    if sources.detect_layout(root) == sources.KAGGLE:
        return kaggle.find_studies(root)
    if (root / "study").is_dir() or kaggle.sax_folders(root):
        return None
    subdirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if any(nifti.subject_layout(p) for p in subdirs) or any(nifti.find_subjects(p, depth=2) for p in subdirs[:3]):
        return sources.find_subject_folders(root)
    if dicomfile.image_files(root):
        return None  # images at the top: one study (if they mix patients, the indexer refuses it)
    keys = {k for k in (study_key(p) for p in subdirs) if k is not None}
    if len(keys) <= 1:
        return None  # one patient's study, its series in sub-folders
    return [contract.Study(p.name, "predict", p) for p in subdirs]
