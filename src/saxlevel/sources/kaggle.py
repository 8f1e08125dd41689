"""The Kaggle Data Science Bowl trees: ``{train,validate,test}/[same/]<id>/study/sax_N/*.dcm``, one subject per id.

The slice index N of ``sax_N`` is the paper's slice identifier (rule 3 of section 2.1 judges its contiguity).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass
# pydicom itself is imported where a file needs it (compressed, enhanced or unusual files; decoder checks): a
# Kaggle tree of plain files is read by dicomheader alone, and pydicom's import (~0.25 s) was a sixth of
# filter_dicom's whole run on the 80-subject phantom.
from saxlevel.sources.contract import SPLITS, Study
from saxlevel.sources.dicomfile import image_files
from saxlevel.sources.rules import index_entries

SAX_FOLDER = re.compile(r"^sax_(\d+)$")


def find_studies(raw: str | Path, shadowed: list[Study] | None = None) -> list[Study]:
    """All <id>/study folders under raw/{split}/ or raw/{split}/{split}/ (both Kaggle layouts), by id.
    An id found twice (both layouts unpacked, or in two splits) keeps its first place; the others are
    appended to ``shadowed`` so the caller can record them."""
    raw = Path(raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"DICOM root {raw} does not exist: set data.raw in params.yaml or pass --raw")
    found: dict[int | str, Study] = {}
    for split in SPLITS:
        for parent in (raw / split / split, raw / split):
            if not parent.is_dir():
                continue
            for sub in sorted(parent.iterdir()):
                if sub.name.isdigit() and (sub / "study").is_dir():
                    study = Study(int(sub.name), split, sub / "study")
                    if study.subject in found:
                        if shadowed is not None:
                            shadowed.append(study)
                    else:
                        found[study.subject] = study
    if not found:
        raise FileNotFoundError(
            f"no studies under {raw}: expected {raw}/{{train,validate,test}}/[same/]<id>/study/sax_N/*.dcm "
            "(unzip the Kaggle archives there)"
        )
    return [found[k] for k in sorted(found)]


def sax_folders(study: Path) -> list[tuple[str, int, Path]]:
    """(name, slice index N, folder) of every sax_N folder of a study, by N."""
    found = [(p.name, int(m.group(1)), p) for p in study.iterdir() if p.is_dir() and (m := SAX_FOLDER.match(p.name))]
    return sorted(found, key=lambda t: t[1])


def sax_entries(study: Path) -> list[tuple[str, int, Path]]:
    """(series, slice index N, file) for every image file in the sax_N folders of a study."""
    return [(name, n, f) for name, n, folder in sax_folders(study) for f in image_files(folder)]


def index_study(study: Study, policy: str = "paper") -> tuple[list[dict], list[dict], int]:
    """(kept image rows, exclusion/repair records, files read) for one Kaggle-layout subject."""
    folders = sax_folders(study.path)
    if not folders:
        return [], [{"subject": study.subject, "rule": "no_sax", "detail": f"no sax_N series folder in {study.path}",
                     "action": "excluded"}], 0
    entries = sax_entries(study.path)
    empty = [name for name, _, folder in folders if not image_files(folder)]
    rows, problems, n_files = index_entries(study.subject, study.split, entries, policy)
    if empty:
        # An empty series folder is a slice without images: excluded under the paper policy
        # (its stack would be incomplete), dropped and recorded under repair.
        action = "repaired" if policy == "repair" and rows else "excluded"
        problems.append({"subject": study.subject, "rule": "empty_series", "action": action,
                         "detail": f"no DICOM files in {', '.join(empty)}" + ("; dropped" if action == "repaired" else "")})
        if action == "excluded":
            rows = []
    return rows, problems, n_files
