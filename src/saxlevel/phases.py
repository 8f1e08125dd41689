"""End-diastolic (ED) and end-systolic (ES) frame detection from the cine images themselves.

No frame number is trusted (Kaggle solutions never assume frame 1 is ED): ED is the frame with the
largest, ES the frame with the smallest blood-pool signal near the heart, summed over the slices that move
with the mid slices (see detect_ed_es). "Near the heart" is where the cine changes most over the cycle
(temporal standard deviation), which on SSFP cine is the moving blood/myocardium boundary of the ventricles.
"""

from __future__ import annotations

import numpy as np

# A disc this size around the moving centre holds the blood pools nearest it (an adult LV cavity is ~50 mm
# across at ED) and little of the chest wall and lungs. With 45 mm and a thresholded area, ES on the real GE
# study (../shared/data/sunnybrook) came out two frames late on 8 of 20 sub-stacks; with 30 mm and the mean, on 2.
ROI_RADIUS_MM = 30.0


def motion_centre(motion: np.ndarray) -> tuple[float, float] | None:
    """(row, column) of the weighted centroid of the top 1 % of a motion map, or None if nothing moves.
    On cine SSFP the blood/myocardium boundary moves most, so this is the heart."""
    top = motion >= np.percentile(motion, 99.0)
    yy, xx = np.nonzero(top)
    w = motion[top]
    if not w.sum() > 0:
        return None
    return float((yy * w).sum() / w.sum()), float((xx * w).sum() / w.sum())


def blood_pool_signal(cine: np.ndarray, pixel_spacing: float) -> np.ndarray:
    """Blood-pool signal per frame of one slice (cine is (frames, H, W)): the mean intensity in a disc of
    ROI_RADIUS_MM around the moving centre. On SSFP cine blood is the brightest tissue (3-5x myocardium), so
    the mean falls as blood leaves and the wall thickens; unlike a thresholded area it needs no blood/tissue
    threshold, which real images (slow flow, coil fall-off) made brittle."""
    cine = cine.astype(np.float32)
    scale = np.percentile(cine, 99.5)
    if scale <= 0:
        return np.zeros(len(cine))
    cine = cine / scale
    centre = motion_centre(cine.std(axis=0))
    if centre is None:  # a still cine: no moving heart to find
        return np.zeros(len(cine))
    cy, cx = centre
    H, W = cine.shape[1:]
    y, x = np.ogrid[:H, :W]
    roi = (y - cy) ** 2 + (x - cx) ** 2 < (ROI_RADIUS_MM / pixel_spacing) ** 2
    return cine[:, roi].mean(axis=1).astype(float)


def detect_ed_es(cines: list[np.ndarray], spacings: list[float]) -> tuple[int, int, np.ndarray]:
    """(ED index, ES index, summed signal curve) from every slice's cine, apex -> base (0-based frame indices).

    The reference is the summed blood-pool signal of the mid slices (phases.mid_slices). Slices above the base
    (atria, aortic root, pulmonary trunk) fill while the ventricles empty, so their curve runs against the
    reference, and near the ends of a stack a slice may hold no ventricle at all: only slices whose curve
    correlates positively with the reference add to the total, as the slices through the ventricles add to
    the ventricular volume. Apical slices empty later than the basal ones, whose large pools swing most: on
    the real GE study of ../shared/data/sunnybrook the mid slices alone put ES two frames late."""
    signals = [blood_pool_signal(cine, sp) for cine, sp in zip(cines, spacings)]
    reference = np.sum([signals[i] for i in mid_slices(len(signals))], axis=0)
    if np.ptp(reference) == 0:
        raise ValueError("no cardiac motion in the mid slices (blood-pool signal constant over the cycle): "
                         "cannot detect ED/ES; set to_png.ed_frame and to_png.es_frame")
    total = np.zeros(len(reference))
    for a in signals:
        if np.ptp(a) > 0 and np.corrcoef(a, reference)[0, 1] > 0:
            total += a
    return int(np.argmax(total)), int(np.argmin(total)), total


def mid_slices(n: int) -> list[int]:
    """Indices (apex->base order) of the middle third of a stack, at least one."""
    lo, hi = n // 3, max(n // 3 + 1, (2 * n) // 3)
    return list(range(lo, hi))
