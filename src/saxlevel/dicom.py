"""Index raw cine SAX DICOM studies: header reads, the paper's exclusion rules, apex->base order.

Paper section 2.1 drops a subject when (1) more than one image has the same identifiers
(subject, slice index N of sax_N, frame), (2) the number of slices differs between frames, or
(3) the slice indices are not contiguous. Policy ``repair`` keeps such subjects instead and records
what it changed. Policy ``predict`` (one new subject, saxlevel predict) repairs what it can without
losing slices: rule 2 keeps the frames all slices have, rule 3 only warns. Files that cannot be used
(unreadable, truncated, no pixels, missing tags, a transfer syntax nothing here decodes, invalid
geometry) exclude their subject with a reason naming the file.

One index row is one image. Classic files hold one image; enhanced (and classic multi-frame) MR files
hold many, each indexed as its own row with ``file_frame`` (0-based frame inside the file) from the
per-frame functional groups, so every later stage treats them like one file per image.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from saxlevel import dicomheader

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
# pydicom itself is imported where a file needs it (compressed, enhanced or unusual files; decoder checks): a
# Kaggle tree of plain files is read by dicomheader alone, and pydicom's import (~0.25 s) was a sixth of
# filter_dicom's whole run on the 80-subject phantom.

SPLITS = ("train", "validate", "test")
RULES = ("duplicate", "inconsistent", "noncontiguous", "unreadable", "undecodable", "bad_geometry", "pixel_length",
         "no_sax", "not_sax", "orientation", "empty_series", "not_dicom", "other_series", "segmentation", "frames",
         "error")
# Rules that judge a single file (the others judge a subject's stack).
FILE_RULES = ("unreadable", "undecodable", "bad_geometry", "pixel_length", "not_sax", "error")
# Enhanced (multi-frame) SOP classes keep each frame's geometry in functional groups; classic MR Image Storage
# keeps it at the top level. Some exports (GE studies passed through OsiriX, e.g. the Sunnybrook data) write
# an empty, vestigial PerFrameFunctionalGroupsSequence into classic single-frame files, so the sequence's
# presence alone decides nothing: see uses_functional_groups.
ENHANCED_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
})
SAX_FOLDER = re.compile(r"^sax_(\d+)$")
# Patient LPS direction from apex to base (right, posterior, superior): the LV apex points
# anterior, inferior and left, so a SAX normal is oriented to have a positive component along this.
BASE_DIRECTION = np.array([-1.0, 1.0, 1.0]) / np.sqrt(3.0)
# Slices whose normals differ by more than this are not one parallel stack.
MAX_NORMAL_ANGLE_DEG = 10.0
# ImageOrientationPatient: row and column direction cosines must be unit length and orthogonal. DICOM
# decimal strings carry at most 16 characters, and some scanners write only 3-4 decimals (error ~1e-3).
IOP_TOLERANCE = 0.01
# Two series closer than this share of SliceThickness are at the same place: Kaggle slices are 6-8 mm
# thick with steps of 5-10 mm (never below 0.6 x thickness), while a repeated acquisition at one place
# differs by rounding only. Without SliceThickness, SAME_POSITION_MM applies.
SAME_POSITION_FRACTION = 0.25
SAME_POSITION_MM = 1.0
PIXEL_DATA = 0x7FE00010
ITEM, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)

INDEX_COLUMNS = ["subject", "split", "series", "slice", "frame", "path", "file_frame", "position_mm", "order",
                 "rows", "cols", "pixel_spacing", "slice_thickness", "series_number", "acquisition",
                 "trigger_time", "slice_location", "instance_number"]
# Written by segmented NIfTI sources (sources.nifti), empty for DICOM: the segmentation file, the image's LV-cavity
# pixels in it, and the phase (ED/ES) the source names. Optional when an index is read.
SOURCE_COLUMNS = ["segmentation", "lv_cavity_px", "phase"]
INDEX_COLUMNS += SOURCE_COLUMNS
EXCLUDED_COLUMNS = ["subject", "rule", "detail", "action"]


class FileDefect(ValueError):
    """One file cannot be used; ``rule`` is the exclusion rule, the message names the file and the tag."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule


@dataclass(frozen=True)
class Study:
    subject: int | str  # Kaggle: the numeric folder name; a clinical export: the folder name as it is
    split: str
    path: Path


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


def sax_entries(study: Path) -> list[tuple[str, int, Path]]:
    """(series, slice index N, file) for every image file in the sax_N folders of a study."""
    return [(name, n, f) for name, n, folder in sax_folders(study) for f in image_files(folder)]


# --- one file -> its images' header fields ---------------------------------------------------------

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
        header = dicomheader.read_header(path) if fast else None
    except OSError as exc:
        raise FileDefect("unreadable", f"unreadable file {path}: {_os_problem(path, exc)}") from None
    ds: Any  # a pydicom Dataset, or the fast reader's {keyword: value}: both answer .get and `in`
    if header is None:
        ds, notes = _open(path)
        rows, cols, n, note = _check_pixel_data(path, ds, notes)
        with warnings.catch_warnings():
            # pydicom validates values as they are read (e.g. UIDs with a leading zero, common in GE exports)
            # and warns for every file; they are read as they are, the warning helps no one here.
            warnings.simplefilter("ignore")
            return _frames(path, ds, rows, cols, n, note)
    else:
        ds = header.fields
        rows, cols, n, bits = _image_shape(path, ds)
        note = _check_native_length(path, header.pixel_length, header.pixel_offset, header.file_size, rows, cols,
                                    n, bits)
    return _frames(path, ds, rows, cols, n, note)


def _frames(path: Path, ds: Any, rows: int, cols: int, n: int, note: str) -> list[dict]:
    """read_frames' rows from an opened, checked file."""
    common = {
        "rows": rows,
        "cols": cols,
        "series_number": _number(ds, "SeriesNumber", int, 0),
        "acquisition": _number(ds, "AcquisitionNumber", int, 0),
        "description": str(ds.get("SeriesDescription", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        "note": note,
    }
    if uses_functional_groups(ds, n):
        frames = [{**f, "instance_number": _number(ds, "InstanceNumber", int, 0)}
                  for f in _functional_group_frames(path, ds, n)]
    else:
        # Classic files: one geometry for all images; a classic multi-frame file is a cine at one place.
        geo = geometry(path, ds, ds, ds)
        instance = _required_int(path, ds, "InstanceNumber") if n == 1 else _number(ds, "InstanceNumber", int, 0)
        frame_time = _number(ds, "FrameTime", float, np.nan)
        frames = [{**geo, "frame": None if n == 1 else k + 1, "instance_number": instance,
                   "trigger_time": _number(ds, "TriggerTime", float, np.nan) if n == 1 else k * frame_time,
                   "slice_thickness": _number(ds, "SliceThickness", float, np.nan),
                   "slice_location": _number(ds, "SliceLocation", float, np.nan)} for k in range(n)]
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


def _open(path: Path) -> tuple[Dataset, list[str]]:
    """The dataset with its pixel data left unread (deferred), and pydicom's warnings while parsing."""
    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, defer_size=256)
        except Exception as exc:  # pydicom raises many types for damaged files
            raise FileDefect("unreadable", f"unreadable DICOM {path}: {exc.__class__.__name__}: {exc}") from None
    return ds, [str(w.message) for w in caught]


@functools.lru_cache(maxsize=64)
def decoder_problem(syntax: str) -> str | None:
    """Why pixel data in this transfer syntax cannot be decoded here, or None when it can."""
    import pydicom.pixels
    from pydicom.uid import UID

    uid = UID(syntax)
    try:
        decoder = pydicom.pixels.get_decoder(uid)
    except NotImplementedError:
        return f"transfer syntax {uid.name} ({uid}) has no pixel data decoder in pydicom"
    if not decoder.is_available:
        missing = "; ".join(getattr(decoder, "missing_dependencies", []))
        return (f"transfer syntax {uid.name} ({uid}) needs a decoder plugin that is not installed "
                f"({missing or 'see pydicom docs'}); `pip install -r requirements.txt` installs pylibjpeg's")
    return None


def _check_pixel_data(path: Path, ds: Dataset, notes: list[str]) -> tuple[int, int, int, str]:
    """Pixel data present, decodable, complete, and at least as large as Rows x Columns x frames says; returns
    (Rows, Columns, NumberOfFrames, a note on padding or "")."""
    if "TransferSyntaxUID" not in (getattr(ds, "file_meta", None) or ()):
        raise FileDefect("unreadable", f"{path}: no file meta information (TransferSyntaxUID missing)")
    syntax = ds.file_meta.TransferSyntaxUID
    elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if elem is None:
        eof = next((n for n in notes if "End of file" in n or "EOF" in n), None)
        raise FileDefect("unreadable", f"{path}: truncated ({eof})" if eof else f"{path}: no pixel data")
    problem = decoder_problem(str(syntax))
    if problem:
        raise FileDefect("undecodable", f"{path}: {problem}")
    rows, cols, n, bits = _image_shape(path, ds)
    length = getattr(elem, "length", None)
    value = getattr(elem, "value", None)
    if syntax.is_encapsulated:
        if not syntax.is_deflated:
            _check_fragments(path, elem, n)
        return rows, cols, n, ""
    if length is None or length == 0xFFFFFFFF:
        length = len(value or b"")
    if value is not None and len(value) < length:
        raise FileDefect("unreadable", f"{path}: truncated ({len(value)} of {length} pixel data bytes)")
    if syntax.is_deflated:
        note = _check_native_length(path, length, None, None, rows, cols, n, bits)
    else:
        note = _check_native_length(path, length, getattr(elem, "value_tell", 0), os.path.getsize(path), rows, cols,
                                    n, bits)
    return rows, cols, n, note


def _image_shape(path: Path, ds: Any) -> tuple[int, int, int, int]:
    """(Rows, Columns, NumberOfFrames, BitsAllocated) of a grayscale image (``ds``: a Dataset or
    dicomheader fields)."""
    if _number(ds, "SamplesPerPixel", int, 1) != 1:
        raise FileDefect("unreadable", f"{path}: SamplesPerPixel {ds.get('SamplesPerPixel')}: not a grayscale image")
    rows, cols = _positive_int(path, ds, "Rows"), _positive_int(path, ds, "Columns")
    return rows, cols, number_of_frames(path, ds), _positive_int(path, ds, "BitsAllocated")


def _check_native_length(path: Path, length: int, value_tell: int | None, file_size: int | None,
                         rows: int, cols: int, n: int, bits: int) -> str:
    """Uncompressed pixel data: all of it in the file (``value_tell`` None: inflated, no file offset) and at
    least Rows x Columns x frames x BitsAllocated. Longer data (trailing padding; pydicom reads the images from
    its start and warns) is kept with the returned note; shorter is the defect ``pixel_length``."""
    if value_tell is not None and file_size is not None and value_tell + length > file_size:
        raise FileDefect("unreadable", f"{path}: truncated ({file_size - value_tell} bytes left, "
                         f"pixel data needs {length})")
    expected = rows * cols * n * bits // 8
    shape = f"Rows x Columns x NumberOfFrames x BitsAllocated = {rows} x {cols} x {n} x {bits} bits = {expected} bytes"
    if length < expected:
        raise FileDefect("pixel_length", f"{path}: pixel data holds {length} bytes but {shape}")
    if length > expected + 1:  # +1: odd lengths are padded to even, as DICOM requires
        return f"{path}: pixel data holds {length} bytes, {length - expected} more than {shape}; read from its start"
    return ""


def _check_fragments(path: Path, elem: Any, frames: int) -> None:
    """Encapsulated pixel data: items up to the sequence delimiter, at least one fragment per frame."""
    buf = elem.value  # read already (short elements are not deferred): pydicom found the delimiter
    whole = buf is not None
    if buf is None:
        with open(path, "rb") as fp:
            fp.seek(elem.value_tell)
            buf = fp.read()
    off, items = 0, 0
    while True:
        if whole and off == len(buf):
            break
        if off + 8 > len(buf):
            raise FileDefect("unreadable", f"{path}: truncated (compressed pixel data ends before its delimiter)")
        group, element, length = struct.unpack_from("<HHI", buf, off)
        if (group, element) == SEQUENCE_END:
            break
        if (group, element) != ITEM or off + 8 + length > len(buf):
            raise FileDefect("unreadable", f"{path}: truncated or damaged compressed pixel data "
                             f"(item {items} at byte {off})")
        off, items = off + 8 + length, items + 1
    if items - 1 < frames:  # the first item is the Basic Offset Table
        raise FileDefect("unreadable", f"{path}: compressed pixel data has {max(items - 1, 0)} fragment(s) "
                         f"for {frames} frame(s)")


def number_of_frames(path: str | Path, ds: Dataset) -> int:
    """NumberOfFrames (1 when absent)."""
    value = ds.get("NumberOfFrames")
    if value in (None, ""):
        return 1
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise FileDefect("unreadable", f"{path}: NumberOfFrames {value!r} is not an integer") from None
    if n < 1:
        raise FileDefect("unreadable", f"{path}: NumberOfFrames {n} < 1")
    return n


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
        frames.append({**geo, "slice_thickness": _number(measures, "SliceThickness", float, np.nan),
                       "temporal": _number(content[0], "TemporalPositionIndex", int, 0) if content else 0,
                       "trigger_time": _number(cardiac[0], "NominalCardiacTriggerDelayTime", float, np.nan)
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


def _positive_int(path: Path, ds: Dataset, keyword: str) -> int:
    value = _required_int(path, ds, keyword)
    if value < 1:
        raise FileDefect("bad_geometry", f"{path}: {keyword} {value} must be positive")
    return value


def _required_int(path: Path, ds: Dataset, keyword: str) -> int:
    """A required integer tag, or FileDefect('unreadable') naming file and tag."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            raise FileDefect("unreadable", f"{path}: missing required tag {keyword}")
        return int(value)
    except FileDefect:
        raise
    except Exception:
        raise FileDefect("unreadable", f"{path}: {keyword} {ds.get(keyword, '?')!r} is not an integer") from None


def _number(ds: Dataset, tag: str, kind: type, default: float) -> Any:
    """An optional numeric tag (absent, empty or not a number -> default)."""
    try:
        value = ds.get(tag)
        return default if value is None or value == "" else kind(value)
    except Exception:
        return default


# --- one subject -> index rows and exclusion records --------------------------------------------------

def oriented_normal(normal: np.ndarray) -> np.ndarray:
    """The unit stack normal pointing from the apex toward the base (see BASE_DIRECTION)."""
    n = normal / np.linalg.norm(normal)
    return n if float(n @ BASE_DIRECTION) >= 0 else -n


def is_sax_description(desc: str) -> bool:
    """SeriesDescription cross-check: a sax_ folder must not hold a long-axis series."""
    d = desc.lower()
    return not any(k in d for k in ("2ch", "4ch", "3ch", "lax", "lvot"))


Problem = Callable[..., None]


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
    return apply_rules(sid, rows, problems, policy), problems, len(entries)


def recorder(sid: int | str, problems: list[dict]) -> Problem:
    """A function that appends one record (EXCLUDED_COLUMNS; ``extra`` keys stay internal to the subject's
    rules and are not written)."""
    def problem(rule: str, detail: str, action: str = "excluded", **extra: Any) -> None:
        problems.append({"subject": sid, "rule": rule, "detail": detail, "action": action, **extra})
    return problem


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
