"""The index contract every source writes: its columns, the exclusion rules by name, one study, one record.

One index row is one image. Classic DICOM files hold one image; enhanced (and classic multi-frame) MR files
hold many, each indexed as its own row with ``file_frame`` (0-based frame inside the file), so every later stage
treats them like one file per image. A record (EXCLUDED_COLUMNS) says what happened to a subject: ``excluded``,
``repaired``, ``ignored`` or ``warning``, by rule, with a detail naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
# pydicom itself is imported where a file needs it (compressed, enhanced or unusual files; decoder checks): a
# Kaggle tree of plain files is read by dicomheader alone, and pydicom's import (~0.25 s) was a sixth of
# filter_dicom's whole run on the 80-subject phantom.


SPLITS = ("train", "validate", "test")
RULES = ("duplicate", "inconsistent", "noncontiguous", "unreadable", "undecodable", "bad_geometry", "pixel_length",
         "no_sax", "not_sax", "orientation", "empty_series", "not_dicom", "other_series", "segmentation", "frames",
         "mixed_patients", "error")
# Rules that judge a single file (the others judge a subject's stack).
FILE_RULES = ("unreadable", "undecodable", "bad_geometry", "pixel_length", "not_sax", "error")
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


Problem = Callable[..., None]


def recorder(sid: int | str, problems: list[dict]) -> Problem:
    """A function that appends one record (EXCLUDED_COLUMNS; ``extra`` keys stay internal to the subject's
    rules and are not written)."""
    def problem(rule: str, detail: str, action: str = "excluded", **extra: Any) -> None:
        problems.append({"subject": sid, "rule": rule, "detail": detail, "action": action, **extra})
    return problem
