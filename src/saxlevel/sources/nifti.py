"""NIfTI sources: cine SAX volumes with (optional) expert segmentations, as ACDC, M&Ms and UK Biobank ship them.

A subject is one folder; its naming says the layout (``LAYOUTS``):

- ``acdc``: ``<id>_frameNN.nii.gz`` 3-D volumes (NN = the cardiac frame, 1-based), ``<id>_frameNN_gt.nii.gz``
  segmentations, ``Info.cfg`` naming the ED and ES frames (``ED: 1``); ``<id>_4d.nii.gz`` is not needed.
- ``mnms``: ``<id>_sa.nii.gz`` (4-D cine) and ``<id>_sa_gt.nii.gz`` (4-D, labelled at ED and ES only): the two
  labelled frames are ED and ES, ED the one with the larger LV cavity.
- ``mnms2``: M&Ms-2 (2021) per phase: ``<id>_SA_ED.nii.gz`` / ``<id>_SA_ES.nii.gz`` with ``_gt`` segmentations,
  ``<id>_SA_CINE.nii.gz`` (4-D) and the same for ``LA`` (long axis). The per-phase SA volumes are the stack; the
  cine is read only where they are missing (ED/ES then come from its images), and LA is recorded and left out.
- ``ukbb``: ``sa.nii.gz`` (4-D cine; UK Biobank's cine is triggered on the R wave, so frame 1 is ED),
  ``label_sa_ED.nii.gz`` / ``label_sa_ES.nii.gz`` and, where the ukbb_cardiac pipeline wrote it, ``sa_ES.nii.gz``
  (the ES volume, found in the cine by equality); or only the per-phase ``sa_ED`` / ``sa_ES`` volumes.

Geometry comes from the affine (NIfTI world space is RAS+, turned into DICOM's LPS): the slice normal is the
in-plane row direction x column direction, oriented toward the base by the same rule as DICOM
(``dicom.oriented_normal``), and slices are ordered apex->base by their centre's position along it. Each 2-D
image becomes one row of the index contract (``dicom.INDEX_COLUMNS``): ``path`` the volume file and
``file_frame`` the image inside it (slice k of volume t at k + slices * t); ``lv_cavity_px`` counts its
LV-cavity pixels in the segmentation and ``phase`` is the phase the source names (ED/ES), both empty for
DICOM sources.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saxlevel import dicom

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# LPS = diag(-1, -1, 1) RAS: NIfTI's world x and y run to the patient's right and anterior, DICOM's to left and
# posterior.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class NiftiLayout:
    """A naming convention for one subject folder and the label values of its segmentations."""

    name: str
    lv_cavity: int  # label value of the LV blood pool
    myocardium: int  # label value of the LV myocardium


LAYOUTS: dict[str, NiftiLayout] = {
    "acdc": NiftiLayout("acdc", lv_cavity=3, myocardium=2),  # ACDC: 1 RV cavity, 2 myocardium, 3 LV cavity
    "mnms": NiftiLayout("mnms", lv_cavity=1, myocardium=2),  # M&Ms: 1 LV cavity, 2 myocardium, 3 RV
    "mnms2": NiftiLayout("mnms2", lv_cavity=1, myocardium=2),  # M&Ms-2: 1 LV, 2 myocardium, 3 RV
    "ukbb": NiftiLayout("ukbb", lv_cavity=1, myocardium=2),  # UK Biobank (Bai et al.): 1 LV, 2 myo, 3 RV
}
ACDC_FRAME = re.compile(r"^(?P<id>.+)_frame(?P<frame>\d+)\.nii(\.gz)?$")
# M&Ms-2 names each file <id>_<view>_<part>: view SA (short axis) or LA (long axis), part ED, ES, CINE, with _gt.
MNMS2_FILE = re.compile(r"^(?P<id>.+)_(?P<view>SA|LA)_(?P<part>ED|ES|CINE)(?P<gt>_gt)?\.nii(\.gz)?$")


def cavity_label_setting(value: Any, key: str = "filter.lv_cavity_label") -> int | None:
    """The LV-cavity label value a parameter names: None for 'auto' (each layout's own, LAYOUTS), else a
    positive whole number; anything else is a ValueError naming the key."""
    if str(value) == "auto":
        return None
    if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
        raise ValueError(f"params.yaml: '{key}' must be auto or a positive label value (ACDC 3, M&Ms and UK "
                         f"Biobank 1), got {value!r}")
    return int(value)


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load(path: str | Path) -> Any:
    """The nibabel image of a NIfTI file (header and affine; voxels are read on access)."""
    import nibabel as nib

    return nib.load(str(path))


def read_volume(path: str | Path) -> np.ndarray:
    """A NIfTI file's voxel array as stored (3-D or 4-D), read once per process for all its 2-D images;
    read-only, since the cache shares it."""
    return _cached_volume(str(path))


@functools.lru_cache(maxsize=4)
def _cached_volume(path: str) -> np.ndarray:
    data = np.asanyarray(load(path).dataobj)
    data.setflags(write=False)
    return data


def volume_at(data: np.ndarray, t: int) -> np.ndarray:
    """Volume ``t`` (rows, columns, slices) of a voxel array: a 3-D array is its only volume."""
    return data[..., t] if data.ndim == 4 else data


def read_image(path: str | Path, file_frame: int) -> np.ndarray:
    """Image ``file_frame`` (slice k of volume t at k + slices * t) of a NIfTI file as float32; a PixelError
    names the file when it cannot be read."""
    from saxlevel.images import PixelError  # pixels (and pydicom) are to_png's and predict's, not filter_dicom's

    try:
        vol = read_volume(str(path))
        nz = vol.shape[2]
        k, t = int(file_frame) % nz, int(file_frame) // nz
        return np.asarray(volume_at(vol, t)[:, :, k], dtype=np.float32)
    except Exception as exc:  # nibabel and gzip raise many types on damaged data
        raise PixelError(f"{path}: cannot read image {int(file_frame)}: {exc.__class__.__name__}: {exc}") from None


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p.name) and not p.name.startswith("."))


def subject_layout(folder: Path) -> str | None:
    """The NIfTI layout of one subject folder by its file names, or None (no NIfTI volumes in it)."""
    if not folder.is_dir():
        return None
    names = {p.name for p in _nifti_files(folder)}
    if any(ACDC_FRAME.match(n) for n in names):
        return "acdc"
    if any(re.match(r".+_sa\.nii(\.gz)?$", n) for n in names):
        return "mnms"
    if any(MNMS2_FILE.match(n) for n in names):
        return "mnms2"
    if names & {"sa.nii.gz", "sa.nii", "sa_ED.nii.gz", "sa_ED.nii"}:
        return "ukbb"
    return None


def find_subjects(raw: str | Path, depth: int = 3) -> list[dicom.Study]:
    """Subject folders (a NIfTI layout's files inside) under ``raw``, up to ``depth`` levels down (ACDC:
    ``training/patient001``, M&Ms: ``Training/Labeled/A0S9V9``), sorted by path; the id is the folder name."""
    raw = Path(raw)
    found: list[dicom.Study] = []

    def walk(folder: Path, level: int) -> None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if subject_layout(sub):
                found.append(dicom.Study(sub.name, "none", sub))
            elif level < depth:
                walk(sub, level + 1)

    if raw.is_dir():
        walk(raw, 1)
    return found


@dataclass(frozen=True)
class Frame:
    """One cardiac frame of a subject: its volume (``index`` inside a 4-D file) and segmentation, if any."""

    number: int  # 1-based
    image: Path
    index: int
    segmentation: Path | None = None
    seg_index: int = 0
    phase: str = ""  # "ED", "ES" or "" as the source names it


def read_info_cfg(path: Path) -> dict[str, str]:
    """ACDC's Info.cfg (``key: value`` lines)."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def _volume_count(path: Path) -> int:
    shape = load(path).shape
    return int(shape[3]) if len(shape) == 4 else 1


def _acdc_frames(folder: Path, problem: dicom.Problem) -> list[Frame]:
    frames: dict[int, Path] = {}
    for p in _nifti_files(folder):
        m = ACDC_FRAME.match(p.name)
        if m:
            frames[int(m.group("frame"))] = p
    phases: dict[int, str] = {}
    info = folder / "Info.cfg"
    if info.is_file():
        cfg = read_info_cfg(info)
        for phase in ("ED", "ES"):
            value = cfg.get(phase, "")
            if value.isdigit():
                phases[int(value)] = phase
    else:
        problem("frames", f"{info} not found: ED/ES are detected from the images", "warning")
    out = []
    for number, image in sorted(frames.items()):
        seg = image.with_name(_gt_name(image.name))
        out.append(Frame(number, image, 0, seg if seg.is_file() else None, 0, phases.get(number, "")))
    return out


def _labelled_volumes(seg: Path) -> list[int]:
    """Indices of the volumes of a 4-D segmentation that hold any label."""
    data = read_volume(seg)
    return [t for t in range(data.shape[3] if data.ndim == 4 else 1) if np.any(volume_at(data, t))]


def _cavity_volume(seg: Path, index: int, label: int) -> int:
    return int(np.sum(volume_at(read_volume(seg), index) == label))


def _mnms_frames(folder: Path, layout: NiftiLayout) -> list[Frame]:
    image = next(p for p in _nifti_files(folder) if re.match(r".+_sa\.nii(\.gz)?$", p.name))
    seg_path = image.with_name(re.sub(r"_sa\.nii(\.gz)?$", r"_sa_gt.nii\1", image.name))
    seg = seg_path if seg_path.is_file() else None
    labelled = _labelled_volumes(seg) if seg else []
    phases: dict[int, str] = {}
    if len(labelled) == 2:  # M&Ms labels ED and ES only: ED is the one with the larger LV cavity
        a, b = labelled
        ed = a if _cavity_volume(seg, a, layout.lv_cavity) >= _cavity_volume(seg, b, layout.lv_cavity) else b  # type: ignore[arg-type]
        phases = {ed: "ED", (b if ed == a else a): "ES"}
    return [Frame(t + 1, image, t, seg if t in labelled else None, t, phases.get(t, ""))
            for t in range(_volume_count(image))]


def _ukbb_frames(folder: Path) -> list[Frame]:
    def first(*names: str) -> Path | None:
        return next((folder / n for n in names if (folder / n).is_file()), None)

    cine, ed_vol, es_vol = first("sa.nii.gz", "sa.nii"), first("sa_ED.nii.gz", "sa_ED.nii"), first("sa_ES.nii.gz",
                                                                                                     "sa_ES.nii")
    labels = {p: first(f"label_sa_{p}.nii.gz", f"label_sa_{p}.nii") for p in ("ED", "ES")}
    if cine is None:  # per-phase volumes only
        return [Frame(i + 1, vol, 0, labels[p], 0, p) for i, (p, vol) in enumerate((("ED", ed_vol), ("ES", es_vol)))
                if vol is not None]
    n = _volume_count(cine)
    phase_of = {0: "ED"}  # the R-wave-triggered cine starts at end-diastole
    if es_vol is not None:
        data, es = read_volume(cine), read_volume(es_vol)
        match = [t for t in range(n) if data.ndim == 4 and data[..., t].shape == es.shape
                 and np.array_equal(data[..., t], es)]
        if match:
            phase_of[match[0]] = "ES"
    return [Frame(t + 1, cine, t, labels[phase_of[t]] if t in phase_of else None, 0, phase_of.get(t, ""))
            for t in range(n)]


def _mnms2_frames(folder: Path, problem: dicom.Problem) -> list[Frame]:
    """M&Ms-2: the per-phase SA volumes (ED frame 1, ES frame 2) with their segmentations; without them the 4-D
    SA cine's frames (ED/ES from its images). LA files, and the cine where the per-phase volumes make it
    unnecessary, are recorded as left out; a missing segmentation is recorded (no levels for that phase)."""
    files: dict[tuple[str, str, bool], Path] = {}
    for p in _nifti_files(folder):
        m = MNMS2_FILE.match(p.name)
        if m:
            files[(m.group("view"), m.group("part"), bool(m.group("gt")))] = p
    la = sorted(p.name for (view, _, _), p in files.items() if view == "LA")
    sa = {(part, gt): p for (view, part, gt), p in files.items() if view == "SA"}
    if not sa:
        raise dicom.FileDefect("no_sax", f"{folder}: long-axis files only ({', '.join(la)}): M&Ms-2 names the "
                               "short-axis stack <id>_SA_ED.nii.gz / <id>_SA_ES.nii.gz (or <id>_SA_CINE.nii.gz)")
    if la:
        problem("other_series", f"{', '.join(la)}: long-axis (LA) views, not the short-axis stack; left out",
                "ignored")
    phases = [p for p in ("ED", "ES") if (p, False) in sa]
    if not phases:
        cine = sa.get(("CINE", False))
        if cine is None:
            raise dicom.FileDefect("no_sax", f"{folder}: segmentations without their images "
                                   f"({', '.join(sorted(p.name for p in sa.values()))}): the SA volumes "
                                   "<id>_SA_ED.nii.gz / <id>_SA_ES.nii.gz are missing")
        problem("frames", f"{cine.name}: no per-phase <id>_SA_ED / <id>_SA_ES volumes; ED and ES are detected from "
                "the cine's images and have no segmentation", "warning")
        return [Frame(t + 1, cine, t) for t in range(_volume_count(cine))]
    if ("CINE", False) in sa:
        problem("other_series", f"{sa['CINE', False].name}: the 4-D cine is not needed (ED and ES come from the "
                "per-phase volumes); left out", "ignored")
    for phase in ("ED", "ES"):
        if phase not in phases:
            problem("frames", f"{folder}: no <id>_SA_{phase}.nii.gz: only {', '.join(phases)} indexed", "warning")
        elif (phase, True) not in sa:
            problem("segmentation", f"{sa[phase, False].name}: its segmentation "
                    f"{_gt_name(sa[phase, False].name)} is missing: no levels from segmentation at {phase}",
                    "warning")
    return [Frame(i + 1, sa[p, False], 0, sa.get((p, True)), 0, p) for i, p in enumerate(phases)]


def _gt_name(image_name: str) -> str:
    return re.sub(r"\.nii(\.gz)?$", r"_gt.nii\1", image_name)


def subject_frames(folder: Path, layout: NiftiLayout, problem: dicom.Problem) -> list[Frame]:
    """The cardiac frames a subject folder holds, by its layout."""
    if layout.name == "acdc":
        return _acdc_frames(folder, problem)
    if layout.name == "mnms":
        return _mnms_frames(folder, layout)
    if layout.name == "mnms2":
        return _mnms2_frames(folder, problem)
    return _ukbb_frames(folder)


def lps_geometry(affine: np.ndarray, shape: tuple[int, ...]) -> dict:
    """Per-slice geometry of a volume from its affine: in-plane directions (LPS), the apex->base normal, slice
    centre positions along it, pixel spacing and the slice step. Raises FileDefect on a degenerate affine."""
    a = RAS_TO_LPS @ np.asarray(affine, dtype=float)[:3, :4]
    if not np.isfinite(a).all():
        raise dicom.FileDefect("bad_geometry", "the affine is not finite")
    col_dir, row_dir = a[:, 0], a[:, 1]  # voxel axis i runs down the rows (DICOM's column direction), j along a row
    sp_i, sp_j = float(np.linalg.norm(col_dir)), float(np.linalg.norm(row_dir))
    normal = np.cross(row_dir, col_dir)
    if min(sp_i, sp_j) <= 0 or np.linalg.norm(normal) < 1e-9 * sp_i * sp_j or abs(np.linalg.det(a[:, :3])) < 1e-12:
        raise dicom.FileDefect("bad_geometry", "the affine is singular (no slice plane)")
    n0 = dicom.oriented_normal(normal)
    nz = int(shape[2]) if len(shape) >= 3 else 1
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    positions = np.array([float((a[:, 0] * centre[0] + a[:, 1] * centre[1] + a[:, 2] * k + a[:, 3]) @ n0)
                          for k in range(nz)])
    steps = np.diff(np.sort(positions))
    return {"positions": positions, "pixel_spacing": (sp_i + sp_j) / 2,
            "step": float(np.median(steps)) if len(steps) else float(np.linalg.norm(a[:, 2]))}


def index_subject(study: dicom.Study, policy: str = "paper", lv_cavity: int | None = None,
                  layout_name: str | None = None) -> tuple[list[dict], list[dict], int]:
    """(index rows, records, files read) for one NIfTI subject folder; a defect excludes the subject with a
    record naming the file (``policy`` is accepted for the one source interface: a volume cannot break rules
    1-3, so nothing is repaired)."""
    problems: list[dict] = []
    problem = dicom.recorder(study.subject, problems)
    name = layout_name or subject_layout(study.path)
    if name is None:
        problem("no_sax", f"no NIfTI volumes in {study.path}")
        return [], problems, 0
    layout = LAYOUTS[name]
    try:
        frames = subject_frames(study.path, layout, problem)
    except dicom.FileDefect as exc:
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
    problem = dicom.recorder(subject, problems)
    study = dicom.Study(subject, "predict", path.parent)
    try:
        if ACDC_FRAME.match(path.name):
            frames = [f for f in _acdc_frames(path.parent, lambda *a, **k: None) if f.image == path]
        else:
            frames = [Frame(t + 1, path, t) for t in range(_volume_count(path))]
    except Exception as exc:  # nibabel raises many types on damaged files
        problem("unreadable", f"{path}: {exc.__class__.__name__}: {exc}")
        return [], problems, 0
    label = LAYOUTS["acdc" if ACDC_FRAME.match(path.name) else "mnms"].lv_cavity
    rows, files = index_frames(study, frames, label, problem)
    return rows, problems, files


def index_frames(study: dicom.Study, frames: list[Frame], label: int,
                 problem: dicom.Problem) -> tuple[list[dict], int]:
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
                raise dicom.FileDefect("bad_geometry", f"shape {shape}: expected (rows, columns, slices[, frames])")
            geo = lps_geometry(img.affine, shape)
            key = (shape[:3], tuple(np.round(img.affine, 3).ravel()))
            if ref is None:
                ref, order = key, np.argsort(np.argsort(geo["positions"], kind="stable"))
            elif key != ref:
                problem("inconsistent", f"{f.image}: shape or geometry differs from the subject's first volume "
                        f"({shape[:3]} vs {ref[0]}): the frames are not one stack")
                return [], files
        except dicom.FileDefect as exc:
            problem(exc.rule, f"{f.image}: {exc}")
            return [], files
        except Exception as exc:  # nibabel raises many types on damaged files
            problem("unreadable", f"{f.image}: {exc.__class__.__name__}: {exc}")
            return [], files
        try:
            cavity = _cavity_counts(f, shape, label) if f.segmentation else None
        except dicom.FileDefect as exc:
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
        raise dicom.FileDefect("segmentation", f"{f.segmentation}: segmentation shape {vol.shape}, the image's "
                               f"{shape[:3]}: they do not belong together")
    return np.sum(vol == label, axis=(0, 1))
