"""One subject's image rows -> its kept, apex->base ordered stack: the paper's exclusion rules and the repairs.

Paper section 2.1 drops a subject when (1) more than one image has the same identifiers (subject, slice index N of
sax_N, frame), (2) the number of slices differs between frames, or (3) the slice indices are not contiguous. Policy
``repair`` keeps such subjects instead and records what it changed. Policy ``predict`` (one new subject, saxlevel
predict) repairs what it can without losing slices: rule 2 keeps the frames all slices have, rule 3 only warns.
Files that cannot be used (unreadable, truncated, no pixels, missing tags, a transfer syntax nothing here decodes,
invalid geometry) exclude their subject with a reason naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    pass
# pydicom itself is imported where a file needs it (compressed, enhanced or unusual files; decoder checks): a
# Kaggle tree of plain files is read by dicomheader alone, and pydicom's import (~0.25 s) was a sixth of
# filter_dicom's whole run on the 80-subject phantom.
from saxlevel.sources.contract import FILE_RULES, INDEX_COLUMNS, FileDefect, Problem, recorder
from saxlevel.sources.dicomfile import number_frames, read_frames

# Patient LPS direction from apex to base (right, posterior, superior): the LV apex points
# anterior, inferior and left, so a SAX normal is oriented to have a positive component along this.
BASE_DIRECTION = np.array([-1.0, 1.0, 1.0]) / np.sqrt(3.0)
# Slices whose normals differ by more than this are not one parallel stack.
MAX_NORMAL_ANGLE_DEG = 10.0
# Two series closer than this share of SliceThickness are at the same place: Kaggle slices are 6-8 mm
# thick with steps of 5-10 mm (never below 0.6 x thickness), while a repeated acquisition at one place
# differs by rounding only. Without SliceThickness, SAME_POSITION_MM applies.
SAME_POSITION_FRACTION = 0.25
SAME_POSITION_MM = 1.0


def oriented_normal(normal: np.ndarray) -> np.ndarray:
    """The unit stack normal pointing from the apex toward the base (see BASE_DIRECTION)."""
    n = normal / np.linalg.norm(normal)
    return n if float(n @ BASE_DIRECTION) >= 0 else -n


def is_sax_description(desc: str) -> bool:
    """SeriesDescription cross-check: a sax_ folder must not hold a long-axis series."""
    d = desc.lower()
    return not any(k in d for k in ("2ch", "4ch", "3ch", "lax", "lvot"))


def read_entries(sid: int | str, split: str, entries: Sequence[tuple[str | None, int, Path]], problem: Problem,
                 drop_bad_files: bool = False) -> list[dict]:
    """Index rows of every image in (series, slice index, file) entries; a bad file is a recorded problem
    (its subject excluded, or with ``drop_bad_files`` the file dropped and the drop recorded). A long-axis
    file in a sax_N series is such a problem; entries without a series (a flat folder) keep theirs for the
    caller to sort out."""
    rows: list[dict] = []
    for series, n, f in entries:
        try:
            frames = read_frames(f)
            if series is not None and not is_sax_description(frames[0]["description"]):
                raise FileDefect("not_sax", f"{f}: series {series} but SeriesDescription "
                                 f"{frames[0]['description']!r}")
        except FileDefect as exc:
            _file_problem(problem, exc.rule, str(exc), drop_bad_files, None if series is None else n)
            continue
        except Exception as exc:  # noqa: BLE001  a file no check foresaw must not stop the run
            _file_problem(problem, "error", f"{f}: {exc.__class__.__name__}: {exc}", drop_bad_files,
                          None if series is None else n)
            continue
        if frames[0]["note"]:
            problem("pixel_length", frames[0]["note"], "warning")
        rows.extend({"subject": sid, "split": split, "series": series, "slice": n, "path": str(f), **h}
                    for h in frames)
    return rows


def _file_problem(problem: Problem, rule: str, detail: str, drop: bool, slice_: int | None) -> None:
    """A bad file: excludes its subject, or (``drop``) is dropped, remembering its sax_N folder (None: unknown)
    so that repair_stack does not count its missing frame against that folder's acquisition."""
    if drop:
        problem(rule, detail + "; file dropped", "repaired", dropped_file=True, slice=slice_)
    else:
        problem(rule, detail)


def index_entries(sid: int | str, split: str, entries: list[tuple[str, int, Path]], policy: str = "paper",
                  drop_bad_files: bool = False) -> tuple[list[dict], list[dict], int]:
    """Read (series name, slice index N, file) entries, apply the exclusion rules and order apex->base."""
    problems: list[dict] = []
    problem = recorder(sid, problems)
    rows = read_entries(sid, split, entries, problem, drop_bad_files)
    if mixed_patients(rows, problem):  # checked once per reader, right after reading (dicom_folder likewise)
        return [], problems, len(entries)
    return apply_rules(sid, rows, problems, policy), problems, len(entries)


def same_position_mm(thickness: float) -> float:
    """Positions closer than this are one place (see SAME_POSITION_FRACTION)."""
    return SAME_POSITION_FRACTION * thickness if np.isfinite(thickness) and thickness > 0 else SAME_POSITION_MM


def _thickest(thickness: np.ndarray) -> float:
    """The largest finite SliceThickness among some images (NaN when none has one)."""
    return float(np.nanmax(thickness)) if np.isfinite(thickness).any() else np.nan


def position_clusters(positions: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Cluster number (0 = most apical) of each position: sorted neighbours closer than same_position_mm join."""
    order = np.argsort(positions, kind="stable")
    out = np.zeros(len(positions), dtype=int)
    k = 0
    for a, b in zip(order, order[1:]):
        tol = same_position_mm(_thickest(np.array([thickness[a], thickness[b]], dtype=float)))
        if positions[b] - positions[a] >= tol:
            k += 1
        out[b] = k
    return out


def apply_rules(sid: int | str, rows: list[dict], problems: list[dict], policy: str) -> list[dict]:
    """The kept, apex->base ordered index rows of one subject after the exclusion rules (records appended)."""
    problem = recorder(sid, problems)
    if not rows and not problems:
        problem("no_sax", "no SAX DICOM images in the sax_N folders")
    if not rows or any(p["rule"] in FILE_RULES and p["action"] == "excluded" for p in problems):
        return []

    df = pd.DataFrame(rows)
    df["frame"] = number_frames(df)
    # One parallel stack: every slice normal within MAX_NORMAL_ANGLE_DEG of the first.
    normals = np.stack(df["normal"].to_numpy())
    n0 = oriented_normal(normals[0])
    cosines = np.abs(normals @ n0) / np.linalg.norm(normals, axis=1)
    if cosines.min() < np.cos(np.deg2rad(MAX_NORMAL_ANGLE_DEG)):
        worst = df.iloc[int(np.argmin(cosines))]
        angle = np.rad2deg(np.arccos(np.clip(cosines.min(), -1, 1)))
        problem("orientation", f"{worst.path}: slice normal {angle:.0f} deg from the stack's; not one SAX stack")
        return []
    # Apex -> base position of each image: IPP . n, n oriented toward the base.
    df["position_mm"] = [float(ipp @ n0) for ipp in df["ipp"]]

    if policy in ("repair", "predict"):
        df = repair_stack(df, problems, problem)
    else:
        df = _paper_rules(df, problem)
    if any(p["action"] == "excluded" for p in problems) or df.empty:
        return []

    pos = df.groupby("series")["position_mm"].mean().sort_values()
    df["order"] = df["series"].map({s: i for i, s in enumerate(pos.index)})
    df = df.sort_values(["order", "frame", "file_frame"])
    return df.reindex(columns=INDEX_COLUMNS).to_dict("records")  # SOURCE_COLUMNS empty (NaN) for DICOM


def mixed_patients(rows: list[dict], problem: Problem) -> bool:
    """Whether one study folder's images come from more than one patient or study (PatientID, StudyInstanceUID):
    such a folder is never one stack (a folder of several subjects given as one, or files copied into the wrong
    folder); it is excluded, rule ``mixed_patients``, naming the first two with a file of each. Repeated
    acquisitions of one patient's stack are one patient and one study, and repair_stack handles them."""
    first: dict[tuple[str, str], str] = {}
    for r in rows:
        key = (r.get("patient_id", ""), r.get("study_uid", ""))
        first.setdefault(key, str(r["path"]))
    if len(first) < 2:
        return False
    (a, fa), (b, fb) = sorted(first.items())[:2]
    problem("mixed_patients", f"images of {len(first)} patients or studies in one study folder, e.g. PatientID "
            f"{a[0] or '(none)'} (study {a[1] or '(none)'}, {fa}) and PatientID {b[0] or '(none)'} (study "
            f"{b[1] or '(none)'}, {fb}): give each patient's study its own folder (a folder of such folders is "
            "a cohort root)")
    return True


def _paper_rules(df: pd.DataFrame, problem: Problem) -> pd.DataFrame:
    """The paper's rules 1-3 as they are (section 2.1): each breach is recorded and excludes the subject. Rule 3
    judges folder numbers, as the paper's slice indices were."""
    # Rule 1: several images with the same identifiers (subject, slice N, frame).
    dup = df[df.duplicated(["slice", "frame"], keep=False)]
    if len(dup):
        first = dup.iloc[0]
        names = ", ".join(f"{Path(p).name}" + (f"[{k}]" if k else "")
                          for p, k in dup[(dup.slice == first.slice) & (dup.frame == first.frame)][["path", "file_frame"]]
                          .itertuples(index=False))
        detail = (f"{dup.groupby(['slice', 'frame']).ngroups} (slice, frame) identifiers repeated, "
                  f"e.g. {first.series} frame {first.frame}: {names}")
        problem("duplicate", detail)
    # Rule 1 also covers series folders at one place: a repeated acquisition stored under another number.
    _same_place_records(df, problem)
    # Rule 2: the number of slices differs between frames.
    per_frame = df.groupby("frame")["slice"].nunique()
    if per_frame.nunique() > 1:
        frames_per_slice = df.groupby("series")["frame"].nunique()
        short = frames_per_slice[frames_per_slice < frames_per_slice.max()]
        detail = (f"slices per frame vary {per_frame.min()}-{per_frame.max()}; "
                  f"{', '.join(f'{s} has {c} frames' for s, c in short.items())} (others {frames_per_slice.max()})")
        problem("inconsistent", detail)
    # Rule 3: slice indices (sax_N folder numbers) not contiguous.
    idx = sorted(set(df["slice"]))
    gaps = [f"sax_{i}" for i in range(idx[0], idx[-1] + 1) if i not in set(idx)]
    if gaps:
        detail = f"slice indices {idx[0]}-{idx[-1]} miss {', '.join(gaps)}"
        problem("noncontiguous", detail)

    return df


def _same_place_records(df: pd.DataFrame, problem: Problem) -> None:
    """Rule 1 also covers sax_N folders at one place (closer than same_position_mm): a repeated acquisition
    stored under another folder number. Each place is recorded with its position."""
    # Per-slice summaries in numpy: a pandas groupby per subject cost as much as reading its headers.
    slices, first, inverse = np.unique(df["slice"].to_numpy(), return_index=True, return_inverse=True)
    if len(slices) < 2:
        return
    count = np.bincount(inverse)
    position = np.bincount(inverse, weights=df["position_mm"].to_numpy(float)) / count
    thickness = np.full(len(slices), np.nan)
    np.fmax.at(thickness, inverse, df["slice_thickness"].to_numpy(float))  # fmax: NaN only where all are
    series = df["series"].to_numpy()[first]
    place = position_clusters(position, thickness)
    for k in np.flatnonzero(np.bincount(place) > 1):
        members = np.flatnonzero(place == k)
        problem("duplicate", _same_place_detail([str(series[i]) for i in members], position[members],
                                                _thickest(thickness[members])))


def _same_place_detail(names: list[str], positions: np.ndarray, thickness: float) -> str:
    spread = float(positions.max() - positions.min())
    return (f"{', '.join(names)} are at one place ({positions.mean():.1f} mm along the stack normal, {spread:.2f} mm "
            f"apart < {same_position_mm(thickness):.2f} mm = {SAME_POSITION_FRACTION} x SliceThickness)")


# A step between neighbouring kept positions longer than this many times the stack's median step is a gap (a
# position never acquired): Kaggle's steps vary by rounding and 5-10 mm between studies, not by half within one.
GAP_FACTOR = 1.5


def repair_stack(df: pd.DataFrame, problems: list[dict], problem: Problem) -> pd.DataFrame:
    """Policies ``repair`` and ``predict``: one image per (place, frame), by geometry, losing no place that has a
    usable acquisition. Each change is recorded.

    - An acquisition is one sax_N folder's series (SeriesInstanceUID, else SeriesNumber); the same frame twice
      within one keeps its last image (AcquisitionNumber, then file).
    - Places are positions along the stack normal (position_clusters), whatever the folder numbers: a repeated
      acquisition stored under a far folder number (sax_38 beside sax_5-sax_18) is one more acquisition at its
      place. Each place keeps its last usable acquisition (highest SeriesNumber, AcquisitionNumber, folder
      number: Kaggle's FAQ says the last at a location is usually the best).
    - Usable: it holds the stack's whole cycle, the most common frame count, less any frames whose files were
      damaged and dropped (predict), which cost the stack that frame, not the place. A place with no usable
      acquisition is dropped and recorded with its position.
    - A gap in positions (a step over GAP_FACTOR x the median step) is recorded, never cut to a run.
    """
    df = _last_image_per_frame(df, problem)
    key = _acquisition_key(df)
    acq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    n_frames = np.bincount(inverse)
    position = np.bincount(inverse, weights=df["position_mm"].to_numpy(float)) / n_frames
    thickness = np.full(len(acq), np.nan)
    np.fmax.at(thickness, inverse, df["slice_thickness"].to_numpy(float))
    recency = np.full(len(acq), np.iinfo(np.int64).min)
    np.maximum.at(recency, inverse, df["acquisition"].to_numpy(np.int64))
    series_number, slice_no = df["series_number"].to_numpy(np.int64)[first], df["slice"].to_numpy()[first]
    names = [_acquisition_name(df.iloc[i]) for i in first]
    counts, freq = np.unique(n_frames, return_counts=True)
    cycle = int(counts[freq == freq.max()].max())  # the most common frame count (the larger on a tie)
    lost = _frames_lost(problems, slice_no)
    place = position_clusters(position, thickness)
    keep: list[int] = []
    for k in range(int(place.max()) + 1):
        members = sorted(np.flatnonzero(place == k), key=lambda i: (series_number[i], recency[i], slice_no[i]))
        usable = [i for i in members if n_frames[i] + lost[i] >= cycle]
        where = f"{position[members].mean():.1f} mm"
        if not usable:
            problem("inconsistent", f"position {where} ({', '.join(names[i] for i in members)}): no usable "
                    f"acquisition ({'; '.join(f'{names[i]} has {n_frames[i]} of {cycle} frames' for i in members)})"
                    "; position dropped", "repaired")
            continue
        keep.append(int(usable[-1]))
        if len(members) > 1:
            skipped = [i for i in members if i not in usable]
            why = (f" ({', '.join(f'{names[i]} has {n_frames[i]} of {cycle} frames' for i in skipped)})"
                   if skipped else "")
            problem("duplicate", _same_place_detail([names[i] for i in members], position[members],
                                                    _thickest(thickness[members]))
                    + f"; kept the last usable acquisition {names[usable[-1]]}{why}", "repaired")
    df = df[np.isin(inverse, keep)]
    if df.empty:
        return df
    frames = df.groupby(key[np.isin(inverse, keep)])["frame"].apply(frozenset)
    common = frozenset.intersection(*frames)
    if any(f != common for f in frames):
        extra = sorted(frozenset.union(*frames) - common)
        df = df[df["frame"].isin(common)]
        problem("inconsistent", f"frame(s) {', '.join(map(str, extra))} missing at some kept position (damaged "
                f"files, or a longer cine); kept the {len(common)} frames every position has", "repaired")
    _record_gaps(np.sort(position[keep]), problem)
    return df


def _last_image_per_frame(df: pd.DataFrame, problem: Problem) -> pd.DataFrame:
    """One image per frame of each acquisition: the last by (AcquisitionNumber, file, frame in file)."""
    cols = ["slice", "series_number", "frame"]
    key = _acquisition_key(df)
    dup = pd.Series(key, index=df.index).to_frame("a").assign(frame=df["frame"]).duplicated(keep=False)
    if not dup.any():
        return df
    first = df[dup.to_numpy()].iloc[0]
    problem("duplicate", f"{int(dup.sum())} images repeat a frame of their series, e.g. {first.series} frame "
            f"{first.frame}; kept the last acquisition of each", "repaired")
    order = df.assign(_a=key).sort_values(["_a", "frame", "acquisition", "path", "file_frame"])
    return order.drop_duplicates(["_a", "frame"], keep="last").drop(columns="_a").sort_values(cols)


def _acquisition_key(df: pd.DataFrame) -> np.ndarray:
    """One key per acquisition: the sax_N folder (or clinical place) and its series."""
    uid = df["series_uid"].astype(str).to_numpy() if "series_uid" in df else np.full(len(df), "")
    return np.array([f"{s}|{u or n}" for s, u, n in zip(df["slice"].to_numpy(), uid, df["series_number"].to_numpy())])


def _acquisition_name(row: Any) -> str:
    """How a record names an acquisition: its folder, with the series number where a folder holds several."""
    return f"{row.series} (series {row.series_number})" if str(row.series).startswith("slice_") or \
        not str(row.series).endswith(f"_{row.series_number}") else str(row.series)


def _frames_lost(problems: list[dict], slices: np.ndarray) -> np.ndarray:
    """Files dropped as damaged (predict) that may have held a frame of each acquisition: those of its sax_N
    folder, plus those of unknown place (a clinical export's files are placed only after reading)."""
    dropped = [p.get("slice") for p in problems if p["action"] == "repaired" and p.get("dropped_file")]
    anywhere = sum(1 for s in dropped if s is None)
    return np.array([anywhere + sum(1 for s in dropped if s == n) for n in slices], dtype=int)


def _record_gaps(positions: np.ndarray, problem: Problem) -> None:
    """Record each step between kept positions longer than GAP_FACTOR x the median step (nothing is cut)."""
    steps = np.diff(positions)
    if len(steps) < 2:
        return
    median = float(np.median(steps))
    for i in np.flatnonzero(steps > GAP_FACTOR * median):
        problem("noncontiguous", f"gap of {steps[i]:.1f} mm between positions {positions[i]:.1f} and "
                f"{positions[i + 1]:.1f} mm (median step {median:.1f} mm: about {round(steps[i] / median) - 1} "
                "position(s) never acquired); every position kept", "warning")
