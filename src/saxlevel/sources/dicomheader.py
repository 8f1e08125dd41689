"""Header fields of the common export, read without building a pydicom Dataset.

filter_dicom reads ~16 tags from each of ~376,000 Kaggle files. ``pydicom.dcmread`` turns every element of
every file into Python objects (~0.35 ms a file, the pace of the whole stage's floor); this scans the raw
bytes of the header once and converts only the wanted tags (~0.05 ms). It covers the plain case only: one
uncompressed little-endian (explicit or implicit VR) classic image with a DICM preamble, every element of
defined length and the pixel data in the first ``HEAD_BYTES``. Anything else (compressed, deflated or
big-endian data, Enhanced MR functional groups, undefined lengths, a value of an unexpected VR, a header
cut short) gives None, and the caller reads the file with pydicom, which also names any defect. Values
keep pydicom's meaning: IS through ``pydicom.valuerep.IS``, DS as stripped strings (one, or a list when
multi-valued), US as int, LO as a stripped string.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HEAD_BYTES = 16384
PIXEL_DATA = 0x7FE00010
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
TRANSFER_SYNTAX = 0x00020010
UNDEFINED = 0xFFFFFFFF
# Explicit VRs whose length is a 4-byte field after 2 reserved bytes (PS3.5 7.1.2).
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
# Enhanced MR: frame geometry lives in functional group sequences, which pydicom reads. A classic file may carry a
# vestigial one (GE exports through OsiriX): the reader notes its presence and skips it, and read_frames hands
# the file to pydicom only where its geometry really lives there (dicomfile.uses_functional_groups).
FUNCTIONAL_GROUPS = {0x52009229: "SharedFunctionalGroupsSequence", 0x52009230: "PerFrameFunctionalGroupsSequence"}

# tag: (keyword, VR) of every field read_frames uses from a classic image.
WANTED: dict[int, tuple[str, bytes]] = {
    0x00080016: ("SOPClassUID", b"UI"),
    0x0008103E: ("SeriesDescription", b"LO"),
    0x00100020: ("PatientID", b"LO"),
    0x00180050: ("SliceThickness", b"DS"),
    0x00181060: ("TriggerTime", b"DS"),
    0x00181063: ("FrameTime", b"DS"),
    0x00200011: ("SeriesNumber", b"IS"),
    0x00200012: ("AcquisitionNumber", b"IS"),
    0x0020000D: ("StudyInstanceUID", b"UI"),
    0x0020000E: ("SeriesInstanceUID", b"UI"),
    0x00200013: ("InstanceNumber", b"IS"),
    0x00200032: ("ImagePositionPatient", b"DS"),
    0x00200037: ("ImageOrientationPatient", b"DS"),
    0x00201041: ("SliceLocation", b"DS"),
    0x00280002: ("SamplesPerPixel", b"US"),
    0x00280008: ("NumberOfFrames", b"IS"),
    0x00280010: ("Rows", b"US"),
    0x00280011: ("Columns", b"US"),
    0x00280030: ("PixelSpacing", b"DS"),
    0x00280100: ("BitsAllocated", b"US"),
    0x00280101: ("BitsStored", b"US"),
    0x00280103: ("PixelRepresentation", b"US"),
}

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")


@dataclass(frozen=True)
class Header:
    """The wanted fields (by keyword) of one plain image file and where its pixel data lies."""

    fields: dict[str, Any]
    syntax: str
    pixel_length: int
    pixel_offset: int  # byte offset of the pixel data value in the file
    file_size: int


def read_header(path: str | Path) -> Header | None:
    """The header of a plain uncompressed little-endian image file, or None for anything else (see module)."""
    with open(path, "rb") as fp:
        buf = fp.read(HEAD_BYTES)
        size = os.fstat(fp.fileno()).st_size
    if buf[128:132] != b"DICM":
        return None
    meta = _scan(buf, 132, implicit=False, meta=True)
    if meta is None or TRANSFER_SYNTAX not in meta[0]:
        return None
    syntax = meta[0][TRANSFER_SYNTAX][1].rstrip(b"\0 ").decode("ascii", "replace")
    if syntax not in (EXPLICIT_LE, IMPLICIT_LE):
        return None
    body = _scan(buf, meta[1], implicit=syntax == IMPLICIT_LE, meta=False)
    if body is None or body[2] is None:
        return None
    fields = {}
    for tag, (vr, raw) in body[0].items():
        if tag in FUNCTIONAL_GROUPS:
            fields[FUNCTIONAL_GROUPS[tag]] = True  # present; its content is pydicom's to read
            continue
        keyword, want = WANTED[tag]
        if vr is not None and vr != want:
            return None
        value = _value(raw, want)
        if value is None:
            return None
        fields[keyword] = value
    length, offset = body[2]
    return Header(fields, syntax, length, offset, size)


def _scan(buf: bytes, off: int, implicit: bool, meta: bool
          ) -> tuple[dict[int, tuple[bytes | None, bytes]], int, tuple[int, int] | None] | None:
    """Walk the data elements from ``off``: ({wanted tag: (VR or None, value bytes)}, end offset, (pixel data
    length, value offset) or None). ``meta``: the file meta group (0002), always explicit VR, up to its end.
    None where the plain case does not hold."""
    found: dict[int, tuple[bytes | None, bytes]] = {}
    n = len(buf)
    while off + 8 <= n:
        group, element = _TAG.unpack_from(buf, off)
        if meta and group != 2:
            return found, off, None
        tag = group << 16 | element
        if implicit:
            vr = None
            length = _U32.unpack_from(buf, off + 4)[0]
            start = off + 8
        else:
            vr = buf[off + 4:off + 6]
            if vr in LONG_VRS:
                if off + 12 > n:
                    return None
                length = _U32.unpack_from(buf, off + 8)[0]
                start = off + 12
            elif vr.isalpha() and vr.isupper():
                length = _U16.unpack_from(buf, off + 6)[0]
                start = off + 8
            else:
                return None
        if length == UNDEFINED:
            return None
        if tag in FUNCTIONAL_GROUPS:
            found[tag] = (None, b"")
            off = start + length
            continue
        if tag == PIXEL_DATA:
            return found, off, (length, start)
        if tag in WANTED or (meta and tag == TRANSFER_SYNTAX):
            if start + length > n:
                return None
            found[tag] = (vr, buf[start:start + length])
        off = start + length
    return (found, off, None) if meta else None


def _value(raw: bytes, vr: bytes) -> Any:
    """A wanted value as pydicom gives it, or None where this reader does not decide (odd US lengths)."""
    if vr == b"US":
        return _U16.unpack(raw)[0] if len(raw) == 2 else None
    text = raw.decode("latin-1").strip(" \0")
    if vr in (b"LO", b"UI"):
        return text
    parts = [p.strip() for p in text.split("\\")] if text else []
    if vr == b"IS":
        if len(parts) != 1:
            return text  # empty or multi-valued: read_frames treats it as missing / not an integer
        if parts[0].isdigit():
            return int(parts[0])  # the common case; pydicom.valuerep.IS gives the same value
        import pydicom.valuerep  # rare (e.g. "3.0"): the common case above needs no pydicom import

        try:
            return pydicom.valuerep.IS(parts[0])
        except (TypeError, ValueError, OverflowError):
            return text  # not an integer: read_frames names the tag
    return parts[0] if len(parts) == 1 else (parts or "")


def plain_pixels(path: str | Path) -> np.ndarray | None:
    """The pixel values of a plain single-frame image, read straight from the file as pydicom's pixel_array gives
    them: unsigned 8- or 16-bit samples, one per pixel, no bits set above BitsStored (where pydicom's result could
    depend on masking). None for anything else, which pydicom then decodes."""
    header = read_header(path)
    if header is None:
        return None
    f = header.fields
    bits, stored = f.get("BitsAllocated"), f.get("BitsStored", f.get("BitsAllocated"))
    frames = f.get("NumberOfFrames", 1)
    if (bits not in (8, 16) or f.get("PixelRepresentation", 0) != 0 or f.get("SamplesPerPixel", 1) != 1
            or frames not in (1, "1", None) or not isinstance(stored, int)):
        return None
    rows, cols = f.get("Rows"), f.get("Columns")
    if not isinstance(rows, int) or not isinstance(cols, int):
        return None
    count = rows * cols
    if header.pixel_length < count * bits // 8:
        return None
    with open(path, "rb") as fp:
        fp.seek(header.pixel_offset)
        data = np.frombuffer(fp.read(count * bits // 8), dtype="<u2" if bits == 16 else "u1")
    if len(data) != count or (stored < bits and int(data.max(initial=0)) >> stored):
        return None
    return data.reshape(rows, cols)
