"""Whether a DICOM file's pixel data can be decoded here and is complete, checked without decoding it.
"""

from __future__ import annotations

import functools
import os
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
# pydicom itself is imported where a file needs it (compressed, enhanced or unusual files; decoder checks): a
# Kaggle tree of plain files is read by dicomheader alone, and pydicom's import (~0.25 s) was a sixth of
# filter_dicom's whole run on the 80-subject phantom.
from saxlevel.sources.contract import FileDefect

PIXEL_DATA = 0x7FE00010
ITEM, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)


def open_dataset(path: Path) -> tuple[Dataset, list[str]]:
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


def check_pixel_data(path: Path, ds: Dataset, notes: list[str]) -> tuple[int, int, int, str]:
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
    rows, cols, n, bits = image_shape(path, ds)
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
        note = check_native_length(path, length, None, None, rows, cols, n, bits)
    else:
        note = check_native_length(path, length, getattr(elem, "value_tell", 0), os.path.getsize(path), rows, cols,
                                    n, bits)
    return rows, cols, n, note


def image_shape(path: Path, ds: Any) -> tuple[int, int, int, int]:
    """(Rows, Columns, NumberOfFrames, BitsAllocated) of a grayscale image (``ds``: a Dataset or
    dicomheader fields)."""
    if tag_number(ds, "SamplesPerPixel", int, 1) != 1:
        raise FileDefect("unreadable", f"{path}: SamplesPerPixel {ds.get('SamplesPerPixel')}: not a grayscale image")
    rows, cols = positive_int(path, ds, "Rows"), positive_int(path, ds, "Columns")
    return rows, cols, number_of_frames(path, ds), positive_int(path, ds, "BitsAllocated")


def check_native_length(path: Path, length: int, value_tell: int | None, file_size: int | None,
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


def positive_int(path: Path, ds: Dataset, keyword: str) -> int:
    value = required_int(path, ds, keyword)
    if value < 1:
        raise FileDefect("bad_geometry", f"{path}: {keyword} {value} must be positive")
    return value


def required_int(path: Path, ds: Dataset, keyword: str) -> int:
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


def tag_number(ds: Dataset, tag: str, kind: type, default: float) -> Any:
    """An optional numeric tag (absent, empty or not a number -> default)."""
    try:
        value = ds.get(tag)
        return default if value is None or value == "" else kind(value)
    except Exception:
        return default
