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

Reading volumes and finding each layout's frames is here; ``niftiindex`` turns them into index rows.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saxlevel.sources import contract

NIFTI_SUFFIXES = (".nii.gz", ".nii")


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
    from saxlevel.ingest.images import PixelError  # pixels (and pydicom) are to_png's and predict's, not filter_dicom's

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


def find_subjects(raw: str | Path, depth: int = 3) -> list[contract.Study]:
    """Subject folders (a NIfTI layout's files inside) under ``raw``, up to ``depth`` levels down (ACDC:
    ``training/patient001``, M&Ms: ``Training/Labeled/A0S9V9``), sorted by path; the id is the folder name."""
    raw = Path(raw)
    found: list[contract.Study] = []

    def walk(folder: Path, level: int) -> None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if subject_layout(sub):
                found.append(contract.Study(sub.name, "none", sub))
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


def volume_count(path: Path) -> int:
    shape = load(path).shape
    return int(shape[3]) if len(shape) == 4 else 1


def acdc_frames(folder: Path, problem: contract.Problem) -> list[Frame]:
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
            for t in range(volume_count(image))]


def _ukbb_frames(folder: Path) -> list[Frame]:
    def first(*names: str) -> Path | None:
        return next((folder / n for n in names if (folder / n).is_file()), None)

    cine, ed_vol, es_vol = first("sa.nii.gz", "sa.nii"), first("sa_ED.nii.gz", "sa_ED.nii"), first("sa_ES.nii.gz",
                                                                                                     "sa_ES.nii")
    labels = {p: first(f"label_sa_{p}.nii.gz", f"label_sa_{p}.nii") for p in ("ED", "ES")}
    if cine is None:  # per-phase volumes only
        return [Frame(i + 1, vol, 0, labels[p], 0, p) for i, (p, vol) in enumerate((("ED", ed_vol), ("ES", es_vol)))
                if vol is not None]
    n = volume_count(cine)
    phase_of = {0: "ED"}  # the R-wave-triggered cine starts at end-diastole
    if es_vol is not None:
        data, es = read_volume(cine), read_volume(es_vol)
        match = [t for t in range(n) if data.ndim == 4 and data[..., t].shape == es.shape
                 and np.array_equal(data[..., t], es)]
        if match:
            phase_of[match[0]] = "ES"
    return [Frame(t + 1, cine, t, labels[phase_of[t]] if t in phase_of else None, 0, phase_of.get(t, ""))
            for t in range(n)]


def _mnms2_frames(folder: Path, problem: contract.Problem) -> list[Frame]:
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
        raise contract.FileDefect("no_sax", f"{folder}: long-axis files only ({', '.join(la)}): M&Ms-2 names the "
                               "short-axis stack <id>_SA_ED.nii.gz / <id>_SA_ES.nii.gz (or <id>_SA_CINE.nii.gz)")
    if la:
        problem("other_series", f"{', '.join(la)}: long-axis (LA) views, not the short-axis stack; left out",
                "ignored")
    phases = [p for p in ("ED", "ES") if (p, False) in sa]
    if not phases:
        cine = sa.get(("CINE", False))
        if cine is None:
            raise contract.FileDefect("no_sax", f"{folder}: segmentations without their images "
                                   f"({', '.join(sorted(p.name for p in sa.values()))}): the SA volumes "
                                   "<id>_SA_ED.nii.gz / <id>_SA_ES.nii.gz are missing")
        problem("frames", f"{cine.name}: no per-phase <id>_SA_ED / <id>_SA_ES volumes; ED and ES are detected from "
                "the cine's images and have no segmentation", "warning")
        return [Frame(t + 1, cine, t) for t in range(volume_count(cine))]
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


def subject_frames(folder: Path, layout: NiftiLayout, problem: contract.Problem) -> list[Frame]:
    """The cardiac frames a subject folder holds, by its layout."""
    if layout.name == "acdc":
        return acdc_frames(folder, problem)
    if layout.name == "mnms":
        return _mnms_frames(folder, layout)
    if layout.name == "mnms2":
        return _mnms2_frames(folder, problem)
    return _ukbb_frames(folder)
