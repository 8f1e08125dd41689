"""One DICOM file -> its images' header fields, without decoding pixels (every DICOM source reads files here).

Plain uncompressed classic files go through ``dicomheader`` (fast); compressed, enhanced and unusual files through
pydicom, imported only where such a file needs it: a Kaggle tree of plain files is read by dicomheader alone, and
pydicom's import (~0.25 s) was a sixth of filter_dicom's whole run on the 80-subject phantom. Enhanced (multi-frame)
files keep each frame's geometry in functional groups, each indexed as its own image.
"""

from __future__ import annotations

import errno
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from saxlevel.sources import dicomheader

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
# pydicom itself is imported where a file needs it (compressed, enhanced or unusual files; decoder checks): a
# Kaggle tree of plain files is read by dicomheader alone, and pydicom's import (~0.25 s) was a sixth of
# filter_dicom's whole run on the 80-subject phantom.
from saxlevel.sources.contract import FileDefect
from saxlevel.sources.pixeldata import (
    check_native_length,
    check_pixel_data,
    image_shape,
    open_dataset,
    required_int,
    tag_number,
)

# Enhanced (multi-frame) SOP classes keep each frame's geometry in functional groups; classic MR Image Storage
# keeps it at the top level. Some exports (GE studies passed through OsiriX, e.g. the Sunnybrook data) write
# an empty, vestigial PerFrameFunctionalGroupsSequence into classic single-frame files, so the sequence's
# presence alone decides nothing: see uses_functional_groups.
ENHANCED_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
})
# ImageOrientationPatient: row and column direction cosines must be unit length and orthogonal. DICOM
# decimal strings carry at most 16 characters, and some scanners write only 3-4 decimals (error ~1e-3).
IOP_TOLERANCE = 0.01


def is_image_name(name: str) -> bool:
    """A file name that may hold a DICOM image: *.dcm in any case, or no extension (PACS exports often have
    none); hidden files (macOS ._* AppleDouble copies, .DS_Store) and DICOMDIR indexes are not images."""
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    return name.lower().endswith(".dcm") or "." not in name


def image_files(folder: Path, recursive: bool = False, any_name: bool = False,
                unlisted: list[str] | None = None) -> list[Path]:
    """The candidate image files of a folder, sorted: names that pass is_image_name (``any_name``: every
    non-hidden name but DICOMDIR). An entry that cannot be inspected (a broken or looping symbolic link, no
    permission) is returned like a file, so that reading it records it as ``unreadable``; a sub-folder that
    cannot be listed, or a folder link back into the walk, is described in ``unlisted`` instead."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def visit(d: Path) -> None:
        try:
            st = d.stat()
            if (st.st_dev, st.st_ino) in seen:
                if unlisted is not None:
                    unlisted.append(f"{d}: a folder link back into folders already read (a loop); not followed")
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if unlisted is not None:
                unlisted.append(f"{d}: cannot list folder ({exc.strerror or exc})")
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            try:
                # the directory entry's own type answers without a stat per file; a link is followed
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False  # broken or looping link: reading it names the problem
            if is_dir:
                if recursive:
                    visit(d / name)
            elif any_name or is_image_name(name):
                found.append(d / name)

    visit(Path(folder))
    return sorted(found)


def read_frames(path: str | Path, fast: bool = True) -> list[dict]:
    """Header fields of every image in one file (pixels never decoded); raises FileDefect naming the problem.

    Checks: the file parses; a decoder exists for its transfer syntax; the pixel data is complete (at least
    Rows x Columns x frames; longer, i.e. padded, data is read as pydicom reads it and noted in ``note``);
    each image's geometry is valid (see ``geometry``). A plain uncompressed classic file is read by
    ``dicomheader`` (``fast``), anything else by pydicom; both give the same result.

    A classic single-frame file's ``frame`` is None: its cardiac phase is its rank among the images at its
    slice position (``number_frames``), never its InstanceNumber alone (which clinical exports number over the
    whole series). Enhanced files number their frames from the functional groups.
    """
    path = Path(path)
    try:
        header = fast_header(path) if fast else None
    except OSError as exc:
        raise FileDefect("unreadable", f"unreadable file {path}: {_os_problem(path, exc)}") from None
    ds: Any  # a pydicom Dataset, or the fast reader's {keyword: value}: both answer .get and `in`
    if header is None:
        ds, notes = open_dataset(path)
        rows, cols, n, note = check_pixel_data(path, ds, notes)
        with warnings.catch_warnings():
            # pydicom validates values as they are read (e.g. UIDs with a leading zero, common in GE exports)
            # and warns for every file; they are read as they are, the warning helps no one here.
            warnings.simplefilter("ignore")
            return _frames(path, ds, rows, cols, n, note)
    else:
        ds = header.fields
        rows, cols, n, bits = image_shape(path, ds)
        note = check_native_length(path, header.pixel_length, header.pixel_offset, header.file_size, rows, cols,
                                    n, bits)
    return _frames(path, ds, rows, cols, n, note)


def fast_header(path: str | Path) -> dicomheader.Header | None:
    """The fast reader's header of a plain file whose geometry is at the top level, or None: pydicom's to read
    (compressed, enhanced, unusual or damaged files)."""
    header = dicomheader.read_header(path)
    return None if header is None or _geometry_in_groups(header.fields) else header


def _geometry_in_groups(fields: dict) -> bool:
    """Whether a file the fast reader read keeps its geometry in functional groups, which only pydicom reads."""
    if not any(k in fields for k in dicomheader.FUNCTIONAL_GROUPS.values()):
        return False
    try:
        return uses_functional_groups(fields, int(fields.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return True


def _frames(path: Path, ds: Any, rows: int, cols: int, n: int, note: str) -> list[dict]:
    """read_frames' rows from an opened, checked file."""
    common = {
        "rows": rows,
        "cols": cols,
        "series_number": tag_number(ds, "SeriesNumber", int, 0),
        "acquisition": tag_number(ds, "AcquisitionNumber", int, 0),
        "description": str(ds.get("SeriesDescription", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        # who and which study: the images of one study folder must share both (rules.mixed_patients)
        "patient_id": str(ds.get("PatientID", "") or "").strip(),
        "study_uid": str(ds.get("StudyInstanceUID", "") or "").strip(),
        "note": note,
    }
    if uses_functional_groups(ds, n):
        frames = [{**f, "instance_number": tag_number(ds, "InstanceNumber", int, 0)}
                  for f in _functional_group_frames(path, ds, n)]
    else:
        # Classic files: one geometry for all images; a classic multi-frame file is a cine at one place.
        geo = geometry(path, ds, ds, ds)
        instance = required_int(path, ds, "InstanceNumber") if n == 1 else tag_number(ds, "InstanceNumber", int, 0)
        frame_time = tag_number(ds, "FrameTime", float, np.nan)
        frames = [{**geo, "frame": None if n == 1 else k + 1, "instance_number": instance,
                   "trigger_time": tag_number(ds, "TriggerTime", float, np.nan) if n == 1 else k * frame_time,
                   "slice_thickness": tag_number(ds, "SliceThickness", float, np.nan),
                   "slice_location": tag_number(ds, "SliceLocation", float, np.nan)} for k in range(n)]
    return [{**common, **f, "file_frame": k} for k, f in enumerate(frames)]


def _os_problem(path: Path, exc: OSError) -> str:
    """What an OSError on opening a directory entry means, in words."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.ENOENT and path.is_symlink():
        return f"broken symbolic link (to {os.readlink(path)})"
    return exc.strerror or str(exc)


def uses_functional_groups(ds: Any, n: int) -> bool:
    """Whether a file's image geometry lives in its functional groups (Enhanced MR) rather than at the top level.

    By SOP class and frame count, not by the presence of PerFrameFunctionalGroupsSequence: an enhanced SOP class,
    or a multi-frame file with per-frame groups, uses them; a classic single-frame file with its own
    ImagePositionPatient uses its top-level tags even when it carries a (vestigial) per-frame sequence."""
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return False
    if str(ds.get("SOPClassUID", "")) in ENHANCED_SOP_CLASSES or n > 1:
        return True
    return "ImagePositionPatient" not in ds


def number_frames(df: pd.DataFrame) -> pd.Series:
    """The cardiac frame number (1-based) of each image row: the one its file gave (enhanced, multi-frame), else
    its rank by (TriggerTime, InstanceNumber, then file name) among the images of its series at its slice (see
    frame_ranks). In numpy: this runs once per subject beside header reads that take ~0.05 ms a file."""
    todo = df["frame"].isna().to_numpy()
    if not todo.any():
        return df["frame"].astype(int)
    rows = np.flatnonzero(todo)
    series = [u or f"#{n}" for u, n in zip(df["series_uid"].to_numpy()[rows], df["series_number"].to_numpy()[rows])]
    slice_ = df["slice"].to_numpy()[rows]
    series_code = np.unique(np.array(series, dtype=str), return_inverse=True)[1]
    trigger = np.nan_to_num(df["trigger_time"].to_numpy(float)[rows], nan=np.inf)
    instance = df["instance_number"].to_numpy(np.int64)[rows]
    path_code = np.unique(df["path"].to_numpy(str)[rows], return_inverse=True)[1]
    order = np.lexsort((path_code, instance, trigger, series_code, slice_))
    group = np.r_[0, np.flatnonzero((np.diff(slice_[order]) != 0) | (np.diff(series_code[order]) != 0)) + 1,
                  len(order)]
    frame = df["frame"].to_numpy(object).copy()
    for a, b in zip(group[:-1], group[1:]):
        members = order[a:b]
        frame[rows[members]] = frame_ranks(trigger[members], instance[members])
    return pd.Series(frame, index=df.index).astype(int)


def frame_ranks(trigger: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Frame numbers of one slice's images, sorted by (trigger time, InstanceNumber).

    The dense rank: images with the same trigger time and InstanceNumber (a repeated image) share a number, so
    they stay a rule 1 duplicate. Where the InstanceNumbers step evenly (by 1 in Kaggle's per-slice numbering,
    by 1 or by the slice count in series-wide numbering) a skipped multiple of the step is a missing image and
    its number is skipped too, so the other images keep their phase; any other pattern is ranked plainly."""
    new = np.ones(len(trigger), dtype=bool)
    new[1:] = (trigger[1:] != trigger[:-1]) | (instance[1:] != instance[:-1])
    dense = np.cumsum(new)
    steps = np.diff(instance[new])
    if len(steps) and (steps > 0).all():
        step = int(steps.min())
        if (steps % step == 0).all():
            return 1 + (instance - instance[0]) // step
    return dense


def geometry(path: Path, position: Dataset, orientation: Dataset, measures: Dataset, where: str = "") -> dict:
    """Validated image geometry: IPP (3 finite numbers), IOP (two unit orthogonal direction cosine vectors),
    PixelSpacing (2 finite positive numbers). ``where`` names the frame for multi-frame files."""
    ipp = _numbers(path, position, "ImagePositionPatient", 3, where)
    iop = _numbers(path, orientation, "ImageOrientationPatient", 6, where)
    (r0, r1, r2), (c0, c1, c2) = iop[:3].tolist(), iop[3:].tolist()
    # Plain floats: numpy's per-call overhead on 3-vectors was a third of the header read (376,000 files).
    if (abs(math.sqrt(r0 * r0 + r1 * r1 + r2 * r2) - 1) > IOP_TOLERANCE
            or abs(math.sqrt(c0 * c0 + c1 * c1 + c2 * c2) - 1) > IOP_TOLERANCE
            or abs(r0 * c0 + r1 * c1 + r2 * c2) > IOP_TOLERANCE):
        raise FileDefect("bad_geometry", f"{path}: {where}ImageOrientationPatient {iop.tolist()} is not two "
                         f"orthogonal unit vectors (tolerance {IOP_TOLERANCE})")
    spacing = _numbers(path, measures, "PixelSpacing", 2, where)
    if (spacing <= 0).any():
        raise FileDefect("bad_geometry", f"{path}: {where}PixelSpacing {spacing.tolist()} must be positive")
    normal = np.array([r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0])  # row x column
    return {"ipp": ipp, "normal": normal, "pixel_spacing": float(spacing[0])}


def _numbers(path: Path, item: Dataset, keyword: str, n: int, where: str) -> np.ndarray:
    """``n`` finite numbers from a decimal-string tag, or FileDefect('bad_geometry') naming file and tag."""
    try:
        value = item.get(keyword)
    except Exception as exc:  # pydicom converts DS on access and raises on garbage
        raise FileDefect("bad_geometry", f"{path}: {where}{keyword} is not numeric ({exc})") from None
    if value is None or value == "":
        raise FileDefect("bad_geometry", f"{path}: {where}{keyword} missing")
    # a multi-valued element: pydicom's MultiValue or the fast reader's list
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    try:
        arr = np.array([float(v) for v in values])
    except (TypeError, ValueError):
        raise FileDefect("bad_geometry", f"{path}: {where}{keyword} {values} is not numeric") from None
    if arr.shape != (n,):
        raise FileDefect("bad_geometry", f"{path}: {where}{keyword} has {arr.size} value(s), needs {n}")
    if not np.isfinite(arr).all():
        raise FileDefect("bad_geometry", f"{path}: {where}{keyword} {arr.tolist()} is not finite")
    return arr


def _functional_group_frames(path: Path, ds: Dataset, n: int) -> list[dict]:
    """Enhanced MR: each frame's geometry and timing from its per-frame (else the shared) functional groups."""
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != n:
        raise FileDefect("bad_geometry", f"{path}: {len(per_frame)} per-frame functional groups for "
                         f"NumberOfFrames {n}")
    from pydicom.dataset import Dataset

    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else Dataset()

    def macro(item: Dataset, keyword: str, k: int) -> Dataset:
        for source in (item, shared):
            seq = source.get(keyword)
            if seq:
                return seq[0]
        raise FileDefect("bad_geometry", f"{path}: frame {k + 1}: no {keyword} in the functional groups")

    frames = []
    for k, item in enumerate(per_frame):
        where = f"frame {k + 1} "
        measures = macro(item, "PixelMeasuresSequence", k)
        geo = geometry(path, macro(item, "PlanePositionSequence", k), macro(item, "PlaneOrientationSequence", k),
                       measures, where)
        content = item.get("FrameContentSequence")
        cardiac = item.get("CardiacSynchronizationSequence") or shared.get("CardiacSynchronizationSequence")
        frames.append({**geo, "slice_thickness": tag_number(measures, "SliceThickness", float, np.nan),
                       "temporal": tag_number(content[0], "TemporalPositionIndex", int, 0) if content else 0,
                       "trigger_time": tag_number(cardiac[0], "NominalCardiacTriggerDelayTime", float, np.nan)
                       if cardiac else np.nan, "slice_location": np.nan})
    return _number_frames(frames)


def _number_frames(frames: list[dict]) -> list[dict]:
    """The cardiac frame number of each image: TemporalPositionIndex when every frame has one, else the rank
    by trigger delay (then file order) among the file's images at the same position."""
    if all(f["temporal"] > 0 for f in frames):
        return [{**{k: v for k, v in f.items() if k != "temporal"}, "frame": f["temporal"]} for f in frames]
    at: dict[tuple, list[int]] = {}
    for k, f in enumerate(frames):
        at.setdefault(tuple(np.round(f["ipp"], 1)), []).append(k)
    number = {}
    for ks in at.values():
        ranked = sorted(ks, key=lambda k: (np.nan_to_num(frames[k]["trigger_time"], nan=np.inf), k))
        number.update({k: i + 1 for i, k in enumerate(ranked)})
    return [{**{k: v for k, v in f.items() if k != "temporal"}, "frame": number[i]} for i, f in enumerate(frames)]


