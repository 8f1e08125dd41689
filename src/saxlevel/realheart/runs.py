"""The real-heart model: levels and LV coverage from where the LV cavity starts and ends along the stack.

The levels are defined by the consensus thirds (seglevels: Cerqueira et al. 2002, the rule ukbb_cardiac uses):
the slices holding LV cavity, from the most apical to the most basal, are split into apical, mid and basal thirds
of equal thickness; slices beyond them are out-of-apical (oap) and out-of-basal (obs). So the model answers one
question per slice, "is there LV cavity here?", and the rule does the rest:

1. cavitynet marks the cavity pixel by pixel on each slice (seeing its two neighbours);
2. each slice's cavity map becomes a calibrated probability that the slice holds LV cavity (``presence``: a
   logistic model of the map's area and peak, fitted on held-out real stacks, intact and cut);
3. anatomical decoding: the LV is one run of consecutive slices. Every run [a, b] gets the likelihood of the
   slices' presence probabilities, the most likely run gives the levels (so they never go backwards from apex to
   base, and a stray slice cannot split the LV), and summing over all runs gives each slice's probability of
   each level (``p_oap`` ... ``p_obs``), hence the end slices' probability of lying beyond the LV: the coverage
   confidence.

No TensorFlow at import.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saxlevel import CLASS_INDEX, CLASSES
from saxlevel.ingest import seglevels
from saxlevel.realheart import realdata

LEVEL_DEFINITION = "consensus-thirds"  # the AHA thirds of the slices with LV cavity (seglevels)
PAPER_DEFINITION = "papillary-muscle"  # the paper's section 2.2 rule; every model trained before this records it
DECODING = "anatomical"  # the most likely single run of LV slices; levels never go backwards


def presence_features(maps: np.ndarray) -> np.ndarray:
    """(n, 4) per slice of one stack (apex -> base) from its cavity maps: log(1 + cavity area in mm^2), the pixels
    over 0.5 (a sum of all the probabilities would add up the faint haze of a whole field of view); the peak
    probability; the area over the stack's largest; and log(1 + the distance in mm of the slice's cavity centroid
    from the stack's LV axis, the area-weighted median centroid). Above the base the network can take the outflow
    tract or the left atrium for LV cavity: they lie off the axis along which the LV's slices line up."""
    n = len(maps)
    if n == 0:
        return np.zeros((0, 4))
    flat = maps.reshape(n, -1)
    on = flat > 0.5
    count = on.sum(axis=1)
    area = count * realdata.PIXEL_MM ** 2
    yy, xx = np.divmod(np.arange(flat.shape[1]), maps.shape[2])
    cy = (on * yy).sum(axis=1) / np.maximum(count, 1)
    cx = (on * xx).sum(axis=1) / np.maximum(count, 1)
    offset = np.zeros(n)
    if count.any():
        ref_y, ref_x = _weighted_median(cy, count), _weighted_median(cx, count)
        offset = np.where(count > 0, np.hypot(cy - ref_y, cx - ref_x) * realdata.PIXEL_MM, 0.0)
    return np.c_[np.log1p(area), flat.max(axis=1), area / max(float(area.max()), 1.0), np.log1p(offset)]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


def fit_presence(features: np.ndarray, truth: np.ndarray) -> dict:
    """Logistic calibration of presence_features against the truth (slice holds LV cavity): {coef, intercept}."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=10.0).fit(features, truth.astype(int))
    return {"coef": [float(c) for c in lr.coef_[0]], "intercept": float(lr.intercept_[0])}


def presence(features: np.ndarray, calibration: dict) -> np.ndarray:
    """Calibrated probability that each slice holds LV cavity."""
    z = features @ np.asarray(calibration["coef"]) + float(calibration["intercept"])
    return 1.0 / (1.0 + np.exp(-z))


def run_log_likelihood(q: np.ndarray) -> np.ndarray:
    """(n, n) log-likelihood of every run [a, b] (a <= b; -inf below the diagonal) being the LV's slices, the others
    outside it, from the slices' presence probabilities q."""
    q = np.clip(np.asarray(q, dtype=float), 1e-6, 1 - 1e-6)
    inside, outside = np.log(q), np.log1p(-q)
    n = len(q)
    ci = np.r_[0.0, np.cumsum(inside)]
    co = np.r_[0.0, np.cumsum(outside)]
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ll = (ci[b + 1] - ci[a]) + co[a] + (co[n] - co[b + 1])
    return np.where(b >= a, ll, -np.inf)


def stack_levels(q: np.ndarray, positions: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(levels of the most likely run, (n, 5) level probabilities summed over all runs) of one stack apex -> base."""
    n = len(q)
    pos = np.asarray(positions, dtype=float).tolist()
    ll = run_log_likelihood(q)
    post = np.exp(ll - ll.max())
    post /= post.sum()
    probs = np.zeros((n, len(CLASSES)))
    for a, b in zip(*np.nonzero(post > 1e-9)):
        mask = np.zeros(n, dtype=bool)
        mask[a:b + 1] = True
        levels = seglevels.levels_from_cavity(pos, mask.tolist())
        assert levels is not None
        probs[np.arange(n), [CLASS_INDEX[lv] for lv in levels]] += post[a, b]
    probs /= probs.sum(axis=1, keepdims=True)
    a, b = np.unravel_index(int(np.argmax(ll)), ll.shape)
    best = np.zeros(n, dtype=bool)
    best[a:b + 1] = True
    out = seglevels.levels_from_cavity(pos, best.tolist())
    assert out is not None
    return out, probs


def predict_stack(model: Any, calibration: dict, images: list[np.ndarray], spacing: float,
                  positions: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(levels, level probabilities, presence probabilities) of one stack's raw images (apex -> base)."""
    from saxlevel.realheart import cavitynet

    return levels_from_maps(cavitynet.cavity_maps(model, realdata.model_input(images, spacing)), calibration,
                            positions)


def levels_from_maps(maps: np.ndarray, calibration: dict,
                     positions: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(levels, level probabilities, presence probabilities) of one stack from its cavity maps (apex -> base)."""
    q = presence(presence_features(maps), calibration)
    levels, probs = stack_levels(q, np.asarray(positions, dtype=float))
    return levels, probs, q


def end_verdicts(levels: list[str]) -> tuple[bool, bool]:
    """(apex covered, base covered): the stack reaches an out-of-apical / out-of-basal slice."""
    return levels[0] == "oap", levels[-1] == "obs"
