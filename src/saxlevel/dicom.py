"""Index raw cine SAX DICOM studies: header reads, the paper's exclusion rules, apex->base order.

Paper section 2.1 drops a subject when (1) more than one image has the same identifiers
(subject, slice index N of sax_N, frame), (2) the number of slices differs between frames, or
(3) the slice indices are not contiguous. Policy ``repair`` keeps such subjects instead and records
what it changed. Files that cannot be used (unreadable, truncated, no pixels, missing tags) exclude
their subject with a reason naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from tqdm import tqdm

SPLITS = ("train", "validate", "test")
RULES = ("duplicate", "inconsistent", "noncontiguous", "unreadable", "no_sax", "not_sax", "orientation",
         "empty_series")
REQUIRED_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns", "PixelSpacing",
                 "InstanceNumber", "BitsAllocated")
SAX_FOLDER = re.compile(r"^sax_(\d+)$")
# Patient LPS direction from apex to base (right, posterior, superior): the LV apex points
# anterior, inferior and left, so a SAX normal is oriented to have a positive component along this.
BASE_DIRECTION = np.array([-1.0, 1.0, 1.0]) / np.sqrt(3.0)
# Slices whose normals differ by more than this are not one parallel stack.
MAX_NORMAL_ANGLE_DEG = 10.0

INDEX_COLUMNS = ["subject", "split", "series", "slice", "frame", "path", "position_mm", "order",
                 "rows", "cols", "pixel_spacing", "slice_thickness", "series_number", "acquisition",
                 "trigger_time", "slice_location"]
EXCLUDED_COLUMNS = ["subject", "rule", "detail", "action"]


@dataclass(frozen=True)
class Study:
    subject: int
    split: str
    path: Path


def find_studies(raw: str | Path) -> list[Study]:
    """All <id>/study folders under raw/{split}/ or raw/{split}/{split}/ (both Kaggle layouts), by id."""
    raw = Path(raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"DICOM root {raw} does not exist: set data.raw in params.yaml or pass --raw")
    found: dict[int, Study] = {}
    for split in SPLITS:
        for parent in (raw / split, raw / split / split):
            if not parent.is_dir():
                continue
            for sub in parent.iterdir():
                if sub.name.isdigit() and (sub / "study").is_dir():
                    found[int(sub.name)] = Study(int(sub.name), split, sub / "study")
    if not found:
        raise FileNotFoundError(
            f"no studies under {raw}: expected {raw}/{{train,validate,test}}/[same/]<id>/study/sax_N/*.dcm "
            "(unzip the Kaggle archives there)"
        )
    return [found[k] for k in sorted(found)]


def read_header(path: Path) -> dict:
    """One image's header fields (pixels never read); raises ValueError naming what is wrong."""
    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            pixel_tell = fp.tell()
    except Exception as exc:  # pydicom raises many types for damaged files
        raise ValueError(f"unreadable DICOM {path}: {exc.__class__.__name__}: {exc}") from None
    missing = [t for t in REQUIRED_TAGS if t not in ds]
    if missing:
        raise ValueError(f"{path}: missing required tag(s) {', '.join(missing)}")
    # stop_before_pixels leaves the file at the PixelData element: what follows must hold the pixels.
    remaining = os.path.getsize(path) - pixel_tell
    expected = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
    if remaining < 8:
        raise ValueError(f"{path}: no pixel data")
    if remaining < expected:
        raise ValueError(f"{path}: truncated ({remaining} bytes left, pixel data needs {expected})")
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    return {
        "frame": int(ds.InstanceNumber),
        "ipp": np.array(ds.ImagePositionPatient, dtype=float),
        "normal": np.cross(iop[:3], iop[3:]),
        "rows": int(ds.Rows),
        "cols": int(ds.Columns),
        "pixel_spacing": float(ds.PixelSpacing[0]),
        "slice_thickness": _number(ds, "SliceThickness", float, np.nan),
        "series_number": _number(ds, "SeriesNumber", int, 0),
        "acquisition": _number(ds, "AcquisitionNumber", int, 0),
        "trigger_time": _number(ds, "TriggerTime", float, np.nan),
        "slice_location": _number(ds, "SliceLocation", float, np.nan),
        "description": str(ds.get("SeriesDescription", "")),
    }


def _number(ds: pydicom.Dataset, tag: str, kind: type, default: float) -> float:
    """An optional numeric tag (absent or empty -> default)."""
    value = ds.get(tag)
    return default if value is None or value == "" else kind(value)


def oriented_normal(normal: np.ndarray) -> np.ndarray:
    """The unit stack normal pointing from the apex toward the base (see BASE_DIRECTION)."""
    n = normal / np.linalg.norm(normal)
    return n if float(n @ BASE_DIRECTION) >= 0 else -n


def _is_sax_description(desc: str) -> bool:
    """SeriesDescription cross-check: a sax_ folder must not hold a long-axis series."""
    d = desc.lower()
    return not any(k in d for k in ("2ch", "4ch", "3ch", "lax", "lvot"))


def index_study(study: Study, policy: str = "paper") -> tuple[list[dict], list[dict], int]:
    """(kept image rows, exclusion/repair records, files read) for one Kaggle-layout subject."""
    folders = sorted((p for p in study.path.iterdir() if p.is_dir() and SAX_FOLDER.match(p.name)),
                     key=lambda p: int(SAX_FOLDER.match(p.name).group(1)))
    if not folders:
        return [], [{"subject": study.subject, "rule": "no_sax", "detail": f"no sax_N series folder in {study.path}",
                     "action": "excluded"}], 0
    entries = [(folder.name, int(SAX_FOLDER.match(folder.name).group(1)), f)
               for folder in folders for f in sorted(folder.glob("*.dcm"))]
    empty = [f.name for f in folders if not any(f.glob("*.dcm"))]
    rows, problems, n_files = index_entries(study.subject, study.split, entries, policy)
    if empty:
        # An empty series folder is a slice without images: excluded under the paper policy
        # (its stack would be incomplete), dropped and recorded under repair.
        action = "repaired" if policy == "repair" and rows else "excluded"
        problems.append({"subject": study.subject, "rule": "empty_series", "action": action,
                         "detail": f"no .dcm files in {', '.join(empty)}" + ("; dropped" if action == "repaired" else "")})
        if action == "excluded":
            rows = []
    return rows, problems, n_files


def index_entries(sid: int, split: str, entries: list[tuple[str, int, Path]],
                  policy: str = "paper") -> tuple[list[dict], list[dict], int]:
    """Apply the exclusion rules and apex->base ordering to (series name, slice index N, file) entries."""
    problems: list[dict] = []

    def problem(rule: str, detail: str, action: str = "excluded") -> None:
        problems.append({"subject": sid, "rule": rule, "detail": detail, "action": action})

    rows: list[dict] = []
    for series, n, f in entries:
        try:
            h = read_header(f)
        except ValueError as exc:
            problem("unreadable", str(exc))
            continue
        if not _is_sax_description(h["description"]):
            problem("not_sax", f"{f}: series {series} but SeriesDescription {h['description']!r}")
            continue
        rows.append({"subject": sid, "split": split, "series": series, "slice": n, "path": str(f), **h})
    n_files = len(entries)
    if not rows and not problems:
        problem("no_sax", "no SAX DICOM images in the sax_N folders")
    if not rows or any(p["rule"] in ("unreadable", "not_sax") for p in problems):
        return [], problems, n_files

    df = pd.DataFrame(rows)
    # Rule 1: several images with the same identifiers (subject, slice N, frame).
    dup = df[df.duplicated(["slice", "frame"], keep=False)]
    if len(dup):
        first = dup.iloc[0]
        names = ", ".join(Path(p).name for p in dup[(dup.slice == first.slice) & (dup.frame == first.frame)].path)
        detail = (f"{dup.groupby(['slice', 'frame']).ngroups} (slice, frame) identifiers repeated, "
                  f"e.g. {first.series} frame {first.frame}: {names}")
        if policy == "repair":
            # Kaggle FAQ: the last acquisition at a location is usually the best one.
            df = df.sort_values(["slice", "frame", "series_number", "acquisition", "path"])
            df = df.drop_duplicates(["slice", "frame"], keep="last")
            problem("duplicate", detail + "; kept the last acquisition", "repaired")
        else:
            problem("duplicate", detail)
    # Rule 2: the number of slices differs between frames.
    per_frame = df.groupby("frame")["slice"].nunique()
    if per_frame.nunique() > 1:
        frames_per_slice = df.groupby("series")["frame"].nunique()
        short = frames_per_slice[frames_per_slice < frames_per_slice.max()]
        detail = (f"slices per frame vary {per_frame.min()}-{per_frame.max()}; "
                  f"{', '.join(f'{s} has {c} frames' for s, c in short.items())} (others {frames_per_slice.max()})")
        if policy == "repair":
            df = df[~df.series.isin(short.index)]
            problem("inconsistent", detail + "; dropped the short slices", "repaired")
        else:
            problem("inconsistent", detail)
    # Rule 3: slice indices not contiguous.
    idx = sorted(df["slice"].unique())
    gaps = [f"sax_{i}" for i in range(idx[0], idx[-1] + 1) if i not in set(idx)]
    if gaps:
        detail = f"slice indices {idx[0]}-{idx[-1]} miss {', '.join(gaps)}"
        if policy == "repair":
            run = _longest_run(idx)
            df = df[df["slice"].isin(run)]
            problem("noncontiguous", detail + f"; kept the longest run sax_{run[0]}-sax_{run[-1]}", "repaired")
        else:
            problem("noncontiguous", detail)
    if any(p["action"] == "excluded" for p in problems):
        return [], problems, n_files

    # Apex -> base order from geometry: position = IPP . n, n oriented toward the base.
    normals = np.stack(df["normal"].to_numpy())
    n0 = oriented_normal(normals[0])
    cosines = np.abs(normals @ n0) / np.linalg.norm(normals, axis=1)
    if cosines.min() < np.cos(np.deg2rad(MAX_NORMAL_ANGLE_DEG)):
        worst = df.iloc[int(np.argmin(cosines))]
        angle = np.rad2deg(np.arccos(np.clip(cosines.min(), -1, 1)))
        problem("orientation", f"{worst.path}: slice normal {angle:.0f} deg from the stack's; not one SAX stack")
        return [], problems, n_files
    df["position_mm"] = [float(ipp @ n0) for ipp in df["ipp"]]
    pos = df.groupby("series")["position_mm"].mean().sort_values()
    df["order"] = df["series"].map({s: i for i, s in enumerate(pos.index)})
    df = df.sort_values(["order", "frame"])
    return df[INDEX_COLUMNS].to_dict("records"), problems, n_files


def _longest_run(idx: list[int]) -> list[int]:
    """The longest run of consecutive integers in a sorted list (first one on ties)."""
    best, cur = [idx[0]], [idx[0]]
    for a, b in zip(idx, idx[1:]):
        cur = cur + [b] if b == a + 1 else [b]
        if len(cur) > len(best):
            best = cur
    return best


def _index_star(args: tuple) -> tuple[list[dict], list[dict], int]:
    return index_study(*args)


def index_root(raw: str | Path, policy: str = "paper", jobs: int = 1,
               progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Index every study under ``raw``: (kept images, exclusions/repairs, counts)."""
    if policy not in ("paper", "repair"):
        raise ValueError(f"filter.policy must be 'paper' or 'repair', got {policy!r}")
    studies = find_studies(raw)
    tasks = [(s, policy) for s in studies]
    jobs = max(1, min(int(jobs), os.cpu_count() or 1))
    bar = dict(total=len(tasks), desc="filter_dicom", unit="subject", disable=not progress)
    if jobs == 1:
        results: Iterable = (index_study(*t) for t in tasks)
        results = list(tqdm(results, **bar))
    else:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(tqdm(pool.map(_index_star, tasks, chunksize=4), **bar))
    rows = [r for res in results for r in res[0]]
    problems = [p for res in results for p in res[1]]
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    excluded = pd.DataFrame(problems, columns=EXCLUDED_COLUMNS)
    dropped = set(excluded.loc[excluded.action == "excluded", "subject"])
    counts = {
        "subjects_found": len(studies),
        "subjects_kept": len(studies) - len(dropped),
        "subjects_excluded": len(dropped),
        "files_read": sum(res[2] for res in results),
        "images_kept": len(index),
        "excluded_by_rule": {r: int(excluded[(excluded.rule == r) & (excluded.action == "excluded")].subject.nunique())
                             for r in RULES},
        "repaired_by_rule": {r: int(excluded[(excluded.rule == r) & (excluded.action == "repaired")].subject.nunique())
                             for r in RULES},
    }
    return index, excluded, counts
