"""NIfTI subjects -> rows of the index contract.

Geometry comes from the affine (NIfTI world space is RAS+, turned into DICOM's LPS): the slice normal is the
in-plane row direction x column direction, oriented toward the base by the same rule as DICOM
(``rules.oriented_normal``), and slices are ordered apex->base by their centre's position along it. Each 2-D
image becomes one row of the index contract (``contract.INDEX_COLUMNS``): ``path`` the volume file and
``file_frame`` the image inside it (slice k of volume t at k + slices * t); ``lv_cavity_px`` counts its
LV-cavity pixels in the segmentation and ``phase`` is the phase the source names (ED/ES), both empty for
DICOM sources.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saxlevel.sources import contract, rules
from saxlevel.sources.nifti import (
    ACDC_FRAME,
    LAYOUTS,
    Frame,
    acdc_frames,
    load,
    read_volume,
    subject_frames,
    subject_layout,
    volume_at,
    volume_count,
)

# LPS = diag(-1, -1, 1) RAS: NIfTI's world x and y run to the patient's right and anterior, DICOM's to left and
# posterior.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def lps_geometry(affine: np.ndarray, shape: tuple[int, ...]) -> dict:
    """Per-slice geometry of a volume from its affine: in-plane directions (LPS), the apex->base normal, slice
    centre positions along it, pixel spacing and the slice step. Raises FileDefect on a degenerate affine."""
    a = RAS_TO_LPS @ np.asarray(affine, dtype=float)[:3, :4]
    if not np.isfinite(a).all():
        raise contract.FileDefect("bad_geometry", "the affine is not finite")
    col_dir, row_dir = a[:, 0], a[:, 1]  # voxel axis i runs down the rows (DICOM's column direction), j along a row
    sp_i, sp_j = float(np.linalg.norm(col_dir)), float(np.linalg.norm(row_dir))
    normal = np.cross(row_dir, col_dir)
    if min(sp_i, sp_j) <= 0 or np.linalg.norm(normal) < 1e-9 * sp_i * sp_j or abs(np.linalg.det(a[:, :3])) < 1e-12:
        raise contract.FileDefect("bad_geometry", "the affine is singular (no slice plane)")
    n0 = rules.oriented_normal(normal)
    nz = int(shape[2]) if len(shape) >= 3 else 1
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    positions = np.array([float((a[:, 0] * centre[0] + a[:, 1] * centre[1] + a[:, 2] * k + a[:, 3]) @ n0)
                          for k in range(nz)])
    steps = np.diff(np.sort(positions))
    return {"positions": positions, "pixel_spacing": (sp_i + sp_j) / 2,
            "step": float(np.median(steps)) if len(steps) else float(np.linalg.norm(a[:, 2]))}


def index_subject(study: contract.Study, policy: str = "paper", lv_cavity: int | None = None,
                  layout_name: str | None = None) -> tuple[list[dict], list[dict], int]:
    """(index rows, records, files read) for one NIfTI subject folder; a defect excludes the subject with a
    record naming the file (``policy`` is accepted for the one source interface: a volume cannot break rules
    1-3, so nothing is repaired)."""
    problems: list[dict] = []
    problem = contract.recorder(study.subject, problems)
    name = layout_name or subject_layout(study.path)
    if name is None:
        problem("no_sax", f"no NIfTI volumes in {study.path}")
        return [], problems, 0
    layout = LAYOUTS[name]
    try:
        frames = subject_frames(study.path, layout, problem)
    except contract.FileDefect as exc:
        problem(exc.rule, str(exc))
        return [], problems, 0
    except Exception as exc:  # nibabel raises many types on damaged files
        problem("unreadable", f"{study.path}: {exc.__class__.__name__}: {exc}")
        return [], problems, 0
    rows, files = index_frames(study, frames, layout.lv_cavity if lv_cavity is None else lv_cavity, problem)
    return rows, problems, files


def index_file(path: Path, subject: str) -> tuple[list[dict], list[dict], int]:
    """(index rows, records, files read) for one NIfTI volume on its own (``saxlevel predict FILE.nii.gz``): a 3-D
    volume is one frame, a 4-D one all its frames. An ACDC frame file keeps its frame number, its phase from
    Info.cfg beside it and its segmentation; a 4-D cine's frames are numbered 1..T."""
    problems: list[dict] = []
    problem = contract.recorder(subject, problems)
    study = contract.Study(subject, "predict", path.parent)
    try:
        if ACDC_FRAME.match(path.name):
            frames = [f for f in acdc_frames(path.parent, lambda *a, **k: None) if f.image == path]
        else:
            frames = [Frame(t + 1, path, t) for t in range(volume_count(path))]
    except Exception as exc:  # nibabel raises many types on damaged files
        problem("unreadable", f"{path}: {exc.__class__.__name__}: {exc}")
        return [], problems, 0
    label = LAYOUTS["acdc" if ACDC_FRAME.match(path.name) else "mnms"].lv_cavity
    rows, files = index_frames(study, frames, label, problem)
    return rows, problems, files


def index_frames(study: contract.Study, frames: list[Frame], label: int,
                 problem: contract.Problem) -> tuple[list[dict], int]:
    """(index rows, files read) of a subject's frames (one stack: every volume must share shape and geometry,
    else the subject is excluded as ``inconsistent``); the LV-cavity pixels of each segmented image."""
    files = len({f.image for f in frames} | {f.segmentation for f in frames if f.segmentation})
    rows: list[dict] = []
    ref: tuple | None = None
    order: np.ndarray | None = None
    for f in frames:
        try:
            img = load(f.image)
            shape = tuple(int(s) for s in img.shape)
            if len(shape) not in (3, 4) or min(shape[:3]) < 1:
                raise contract.FileDefect("bad_geometry", f"shape {shape}: expected (rows, columns, slices[, frames])")
            geo = lps_geometry(img.affine, shape)
            key = (shape[:3], tuple(np.round(img.affine, 3).ravel()))
            if ref is None:
                ref, order = key, np.argsort(np.argsort(geo["positions"], kind="stable"))
            elif key != ref:
                problem("inconsistent", f"{f.image}: shape or geometry differs from the subject's first volume "
                        f"({shape[:3]} vs {ref[0]}): the frames are not one stack")
                return [], files
        except contract.FileDefect as exc:
            problem(exc.rule, f"{f.image}: {exc}")
            return [], files
        except Exception as exc:  # nibabel raises many types on damaged files
            problem("unreadable", f"{f.image}: {exc.__class__.__name__}: {exc}")
            return [], files
        try:
            cavity = _cavity_counts(f, shape, label) if f.segmentation else None
        except contract.FileDefect as exc:
            problem(exc.rule, str(exc))
            return [], files
        except Exception as exc:
            problem("unreadable", f"{f.segmentation}: {exc.__class__.__name__}: {exc}")
            return [], files
        assert order is not None
        nz = shape[2]
        for k in range(nz):
            rank = int(order[k])
            rows.append({
                "subject": study.subject, "split": study.split, "series": f"slice_{rank}", "slice": rank,
                "frame": f.number, "path": str(f.image), "file_frame": k + nz * f.index,
                "position_mm": float(geo["positions"][k]), "order": rank, "rows": shape[0], "cols": shape[1],
                "pixel_spacing": round(geo["pixel_spacing"], 5), "slice_thickness": round(geo["step"], 4),
                "series_number": 0, "acquisition": 1, "trigger_time": np.nan,
                "slice_location": float(geo["positions"][k]), "instance_number": f.number,
                "segmentation": str(f.segmentation) if f.segmentation else "",
                "lv_cavity_px": int(cavity[k]) if cavity is not None else np.nan, "phase": f.phase})
    if not rows:
        problem("no_sax", f"no cardiac frames in {study.path}")
    rows.sort(key=lambda r: (r["order"], r["frame"]))
    return rows, files


def _cavity_counts(f: Frame, shape: tuple[int, ...], label: int) -> np.ndarray:
    """LV-cavity pixels per slice of frame ``f``'s segmentation; a segmentation that does not match the image
    is a FileDefect naming it."""
    assert f.segmentation is not None
    vol = volume_at(read_volume(f.segmentation), f.seg_index)
    if vol.shape != shape[:3]:
        raise contract.FileDefect("segmentation", f"{f.segmentation}: segmentation shape {vol.shape}, the image's "
                               f"{shape[:3]}: they do not belong together")
    return np.sum(vol == label, axis=(0, 1))
