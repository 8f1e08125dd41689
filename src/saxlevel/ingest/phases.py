"""End-diastolic (ED) and end-systolic (ES) frame detection from the cine images and their trigger times.

ED is the frame with the largest, ES the frame with the smallest blood-pool signal near the heart, summed over
the slices that move with the mid slices (see detect_ed_es). "Near the heart" is where the cine changes most
over the cycle (temporal standard deviation), which on SSFP cine is the moving blood/myocardium boundary of the
ventricles.

ECG-gated cines are triggered on the R wave, and the R wave is end-diastole: that is why UK Biobank pipelines
take the first frame as ED and why DSB2's first frame has TriggerTime 0. Around ED the LV volume curve is flat
(diastasis, then the atrial kick), so over the whole cycle its maximum can land a few frames before the R wave
(the real GE exports of ../shared/data/sunnybrook: phases 17-18 where the expert contoured 20). Where the frames
carry TriggerTime, ED is the curve's maximum within ED_WINDOW of the R wave (ed_near_r_wave); no frame number
alone is trusted (Kaggle solutions never assume frame 1 is ED).
"""

from __future__ import annotations

import numpy as np

# A disc this size around the moving centre holds the blood pools nearest it (an adult LV cavity is ~50 mm
# across at ED) and little of the chest wall and lungs. With 45 mm and a thresholded area, ES on the real GE
# study (../shared/data/sunnybrook) came out two frames late on 8 of 20 sub-stacks; with 30 mm and the mean, on 2.
ROI_RADIUS_MM = 30.0
# ED is sought within this share of the cycle of the R wave, and never closer than ED_WINDOW_MIN_FRAMES: the
# sampled curve peaks a frame either side of the R wave, trigger latency adds one (the phantom draws ED at frame
# 1 +/- 2 on purpose, 10 frames a cycle), while a 20-frame GE cine's diastasis lies 2.5-3.5 frames before it.
ED_WINDOW_FRACTION = 0.1
ED_WINDOW_MIN_FRAMES = 2


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


def detect_ed_es(cines: list[np.ndarray], spacings: list[float],
                 trigger_ms: np.ndarray | None = None) -> tuple[int, int, np.ndarray, str]:
    """(ED index, ES index, summed signal curve, a note where the R-wave prior moved ED) from every slice's
    cine, apex -> base (0-based frame indices); ``trigger_ms``: each frame's TriggerTime (see ed_near_r_wave).

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
    ed, note = ed_near_r_wave(total, trigger_ms)
    return ed, int(np.argmin(total)), total, note


def r_wave_frame(trigger_ms: np.ndarray | None) -> float | None:
    """Where the R wave falls in 0-based frame units (cyclic: -0.5 is between the last frame and the first), from
    the frames' trigger delays (TriggerTime: ms after the R wave); None without increasing, finite ones."""
    if trigger_ms is None or len(trigger_ms) < 3:
        return None
    t = np.asarray(trigger_ms, dtype=float)
    steps = np.diff(t)
    if not np.isfinite(t).all() or not (steps > 0).all():
        return None
    return float(-t[0] / np.median(steps))


def ed_window(n_frames: int) -> int:
    """How many frames either side of the R wave ED may lie (ED_WINDOW_FRACTION, at least ED_WINDOW_MIN_FRAMES)."""
    return max(ED_WINDOW_MIN_FRAMES, int(round(ED_WINDOW_FRACTION * n_frames)))


def ed_near_r_wave(total: np.ndarray, trigger_ms: np.ndarray | None) -> tuple[int, str]:
    """ED (0-based): the summed curve's maximum within ed_window frames of the R wave (cyclic distance), or over
    the whole cycle where the trigger times do not place the R wave; with a note when the whole-cycle maximum
    lies outside that window (prior and curve disagree)."""
    n = len(total)
    peak = int(np.argmax(total))
    r = r_wave_frame(trigger_ms)
    if r is None:
        return peak, ""
    d = np.abs(np.arange(n) - r) % n
    distance = np.minimum(d, n - d)
    width = ed_window(n)
    near = distance <= width
    ed = int(np.flatnonzero(near)[np.argmax(total[near])])
    if ed == peak:
        return ed, ""
    return ed, (f"ED: the image curve peaks at frame {peak + 1}, {distance[peak]:.1f} frames from the R wave "
                f"(TriggerTime); frame {ed + 1} is its peak within {width} frames of the R wave")


def mid_slices(n: int) -> list[int]:
    """Indices (apex->base order) of the middle third of a stack, at least one."""
    lo, hi = n // 3, max(n // 3 + 1, (2 * n) // 3)
    return list(range(lo, hi))
