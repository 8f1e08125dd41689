"""Labelled real stacks for the real-heart model: images, LV-cavity masks and positions, from every source read.

A stack is one subject at one phase, apex -> base, with the pixel mask of the LV cavity on each slice:
- NIfTI datasets with segmentations (ACDC, M&Ms, M&Ms-2, UK Biobank; sources.nifti): the segmentation's
  LV-cavity label;
- a DICOM study with expert contour files (the Sunnybrook layout, ``contourfiles/<case>/i-contours``; crossdomain
  maps contour IM-0001-NNNN to the file NNNN.dcm): the endocardial contour filled; at the contoured frames, a
  slice without a contour has no cavity.

Every image becomes model input the same way here, in training and in predict (``model_input``): a percentile
window to 0..1, resampled to ``PIXEL_MM`` and centre-cropped or zero-padded to ``SIZE`` pixels, with its two
neighbours in the stack as channels (an end slice repeats itself), so the network sees where the cavity starts
and stops along the stack. No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from saxlevel.ingest import contours, pngs, seglevels
from saxlevel.sources import contract, nifti

PIXEL_MM = 2.5  # model pixel: an apical cavity ~10 mm across is 4 pixels, enough to tell it is there
SIZE = 128  # 320 mm field of view: every source's heart lies inside it, centred or not
WINDOW = (1.0, 99.0)  # percentiles of each slice mapped to 0..1 (bright blood and fat kept apart)


@dataclass
class Stack:
    """One labelled stack (apex -> base) of one subject at one phase."""

    source: str
    subject: str
    phase: str
    images: list[np.ndarray]  # raw float32 images, each (rows, cols)
    masks: list[np.ndarray]  # LV cavity, bool, same shapes
    positions: np.ndarray  # mm along the apex -> base normal
    spacing: float  # mm per pixel
    group: str = ""  # ACDC group, for stratified folds
    meta: dict = field(default_factory=dict)
    myocardium: list[np.ndarray] | None = None  # LV myocardium, bool, where the source segments it

    @property
    def has_cavity(self) -> np.ndarray:
        return np.array([m.any() for m in self.masks])

    @property
    def levels(self) -> list[str]:
        return levels_of(self.positions, self.has_cavity)


def levels_of(positions: np.ndarray, has_cavity: np.ndarray) -> list[str]:
    """The consensus-thirds levels of a labelled stack (seglevels); a stack must hold LV cavity somewhere."""
    levels = seglevels.levels_from_cavity(np.asarray(positions).tolist(), np.asarray(has_cavity).tolist())
    if levels is None:
        raise ValueError("a labelled stack without LV cavity on any slice: its levels are undefined")
    return levels


def slice_input(image: np.ndarray, spacing: float) -> np.ndarray:
    """One image as the model sees it: windowed to 0..1, at PIXEL_MM, SIZE x SIZE around the image centre."""
    lo, hi = np.percentile(image, WINDOW)
    x = np.clip((image.astype(np.float32) - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    return _fit(ndimage.zoom(x, spacing / PIXEL_MM, order=1), 0.0)


def slice_mask(mask: np.ndarray, spacing: float) -> np.ndarray:
    """A cavity mask resampled like slice_input (nearest neighbour on its 0/1 values)."""
    return _fit(ndimage.zoom(mask.astype(np.float32), spacing / PIXEL_MM, order=0), 0.0) > 0.5


def _fit(x: np.ndarray, fill: float) -> np.ndarray:
    """Centre-crop or pad a 2-D array to SIZE x SIZE."""
    out = np.full((SIZE, SIZE), fill, dtype=np.float32)
    h, w = x.shape
    sy, sx = max((h - SIZE) // 2, 0), max((w - SIZE) // 2, 0)
    dy, dx = max((SIZE - h) // 2, 0), max((SIZE - w) // 2, 0)
    ch, cw = min(h, SIZE), min(w, SIZE)
    out[dy:dy + ch, dx:dx + cw] = x[sy:sy + ch, sx:sx + cw]
    return out


# The mask arrays prepare writes (y.npy, uint8) hold three bits per pixel: the LV cavity, the LV myocardium, and
# whether the slice's source segments the myocardium at all (the Sunnybrook contour files outline the endocardium
# on every contoured slice but the epicardium on few, so their myocardium is unknown, not absent).
CAVITY, MYOCARDIUM, MYOCARDIUM_KNOWN = 1, 2, 4


def slice_labels(cavity: np.ndarray, myocardium: np.ndarray | None, spacing: float) -> np.ndarray:
    """A slice's masks resampled like slice_input, as the bits above (uint8)."""
    out = slice_mask(cavity, spacing).astype(np.uint8) * CAVITY
    if myocardium is not None:
        out |= slice_mask(myocardium, spacing).astype(np.uint8) * MYOCARDIUM | MYOCARDIUM_KNOWN
    return out


def with_neighbours(slices: np.ndarray) -> np.ndarray:
    """(n, S, S) slices apex -> base -> (n, S, S, 3): the apical neighbour, the slice, the basal neighbour."""
    prev = np.concatenate([slices[:1], slices[:-1]])
    nxt = np.concatenate([slices[1:], slices[-1:]])
    return np.stack([prev, slices, nxt], axis=-1)


def model_input(stack_images: list[np.ndarray], spacing: float) -> np.ndarray:
    """(n, SIZE, SIZE, 3) float32 model input of one stack's raw images (apex -> base)."""
    return with_neighbours(np.stack([slice_input(im, spacing) for im in stack_images]))


# --- reading the sources -----------------------------------------------------------------------------------------

def nifti_stacks(root: str | Path, source: str) -> list[Stack]:
    """Every segmented stack (ED and ES) of a NIfTI dataset root (sources.index_root reads its layout)."""
    from saxlevel import sources

    index, _, _ = sources.index_root(root, progress=False)
    index = index[index["segmentation"].fillna("").astype(str) != ""]
    out = []
    for (subject, frame), g in index.groupby(["subject", "frame"], sort=True):
        g = g.sort_values("order")
        layout = nifti.subject_layout(Path(g.path.iloc[0]).parent) or "acdc"
        label = nifti.LAYOUTS[layout].lv_cavity
        imgs = [nifti.read_image(p, k) for p, k in zip(g.path, g.file_frame)]
        segs = [nifti.read_image(s, k) for s, k in zip(g.segmentation, g.file_frame)]
        phase = str(g.phase.iloc[0]) if str(g.phase.iloc[0]) in ("ED", "ES") else f"F{frame}"
        out.append(Stack(source, str(subject), phase, imgs, [seg == label for seg in segs],
                         g.position_mm.to_numpy(float), float(g.pixel_spacing.iloc[0]), acdc_group(str(subject)),
                         myocardium=[seg == nifti.LAYOUTS[layout].myocardium for seg in segs]))
    return out


def acdc_group(subject: str) -> str:
    """ACDC's group of a patient id (001-020 DCM, 021-040 HCM, 041-060 MINF, 061-080 NOR, 081-100 RV), else ''."""
    digits = "".join(ch for ch in subject if ch.isdigit())
    if not subject.startswith("patient") or not digits:
        return ""
    return ("DCM", "HCM", "MINF", "NOR", "RV")[min((int(digits) - 1) // 20, 4)]


def contour_stacks(dicom_dir: str | Path, contour_dir: str | Path, source: str) -> list[Stack]:
    """The two contoured stacks (ED, ES) of a DICOM study with endocardial contour files (contours)."""
    from saxlevel.sources import dicom_folder

    study = contract.Study(Path(dicom_dir).name, "none", Path(dicom_dir))
    rows, problems, _ = dicom_folder.index_subject(study, policy="predict")
    fatal = [p["detail"] for p in problems if p["action"] == "excluded"]
    if fatal or not rows:
        raise ValueError(f"{dicom_dir}: no usable SAX stack ({'; '.join(fatal[:2]) or 'no images'})")
    index = pd.DataFrame(rows)
    labels = contours.contour_levels(index, contour_dir)
    files = contours.contour_files(contour_dir)
    out = []
    for frame, lab in labels.groupby("frame"):
        g = index[index.frame == frame].sort_values("order")
        imgs = [pngs.read_image(path, k) for path, k in zip(g.path, g.file_frame)]
        numbers = [int(Path(p).stem) if Path(p).stem.isdigit() else -1 for p in g.path]
        masks = [contours.contour_mask(files[n], im.shape) if n in files else np.zeros(im.shape, dtype=bool)
                 for n, im in zip(numbers, imgs)]
        out.append(Stack(source, str(g.subject.iloc[0]), str(lab.phase.iloc[0]), imgs, masks,
                         g.position_mm.to_numpy(float), float(g.pixel_spacing.iloc[0])))
    return out


def read_sources(roots: dict[str, str], contours: dict[str, tuple[str, str]] | None = None,
                 missing_ok: bool = False) -> list[Stack]:
    """Stacks of every named NIfTI root and DICOM-with-contours study; a missing root is an error naming its
    parameter (or skipped with ``missing_ok``)."""
    out: list[Stack] = []
    for name, root in roots.items():
        if not Path(root).is_dir():
            if missing_ok:
                continue
            raise FileNotFoundError(f"real-heart source {name!r}: {root} not found (set it in realheart/params.yaml)")
        out += nifti_stacks(root, name)
    for name, (dicom_dir, contour_dir) in (contours or {}).items():
        if not Path(dicom_dir).is_dir() or not Path(contour_dir).is_dir():
            if missing_ok:
                continue
            raise FileNotFoundError(f"real-heart source {name!r}: {dicom_dir} or {contour_dir} not found")
        out += contour_stacks(dicom_dir, contour_dir, name)
    return out


def stack_table(stacks: list[Stack]) -> pd.DataFrame:
    """One row per stack: source, subject, phase, slices, the true levels and ends (for reports)."""
    return pd.DataFrame([{"source": s.source, "subject": s.subject, "phase": s.phase, "slices": len(s.images),
                          "levels": " ".join(s.levels), "apex_covered": not s.has_cavity[0],
                          "base_covered": not s.has_cavity[-1]} for s in stacks])

