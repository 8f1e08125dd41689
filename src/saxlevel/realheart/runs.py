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

import numpy as np

from saxlevel import CLASS_INDEX, CLASSES
from saxlevel.ingest import seglevels
from saxlevel.realheart import realdata

LEVEL_DEFINITION = "consensus-thirds"  # the AHA thirds of the slices with LV cavity (seglevels)
PAPER_DEFINITION = "papillary-muscle"  # the paper's section 2.2 rule; every model trained before this records it
DECODING = "anatomical"  # the most likely single run of LV slices; levels never go backwards


# The presence features of a slice's cavity map, by name; a calibration records the names it was fitted on (one
# without them predates the last three and used the first four).
FEATURES = ("log_area", "peak", "relative_area", "log_offset", "mean_probability", "largest_part", "roundness")
LEGACY_FEATURES = FEATURES[:4]
RING = "ring"  # with a myocardium channel: the share of the cavity's surroundings that the myocardium covers
KNOWN_FEATURES = (*FEATURES, RING)
RING_SECTORS = 16


def presence_features(maps: np.ndarray, names: tuple[str, ...] | list[str] = FEATURES) -> np.ndarray:
    """(n, len(names)) per slice of one stack (apex -> base) from its cavity maps:
    - log_area: log(1 + cavity area in mm^2), the pixels over 0.5 (a sum of all the probabilities would add up the
      faint haze of a whole field of view);
    - peak: the peak probability; relative_area: the area over the stack's largest;
    - log_offset: log(1 + the distance in mm of the slice's cavity centroid from the stack's LV axis, the
      area-weighted median centroid);
    - mean_probability: the mean probability over the cavity's pixels; largest_part: the share of the cavity in its
      largest connected part; roundness: that part's area over the disc its farthest pixel spans.
    Above the base the network can take the outflow tract or the left atrium for LV cavity: they lie off the axis
    along which the LV's slices line up, come in several parts (the outflow tract beside the atrium), are less
    round and less sure than a cavity ringed by myocardium.
    - ring (maps (n, S, S, 2) with the myocardium as the second channel): the share of RING_SECTORS sectors around
      the cavity's largest part in which the myocardium borders it. The segmentations end the LV at the base where
      the myocardium no longer rings the cavity, so this is the datasets' own criterion."""
    n = len(maps)
    if n == 0:
        return np.zeros((0, len(names)))
    myocardium = None
    if maps.ndim == 4:
        maps, myocardium = maps[..., 0], maps[..., 1]
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
    columns = {"log_area": np.log1p(area), "peak": flat.max(axis=1),
               "relative_area": area / max(float(area.max()), 1.0), "log_offset": np.log1p(offset)}
    if set(names) & set(FEATURES[4:]):
        columns |= dict(zip(FEATURES[4:], _shape_features(maps, on.reshape(maps.shape)).T))
    if RING in names:
        if myocardium is None:
            raise ValueError("presence feature 'ring' needs the myocardium channel (a model trained with "
                             "net.myocardium: true)")
        columns[RING] = _ring(on.reshape(maps.shape), myocardium > 0.5)
    unknown = [name for name in names if name not in columns]
    if unknown:
        raise ValueError(f"unknown presence feature(s) {unknown}: known are {list(KNOWN_FEATURES)}")
    return np.stack([columns[name] for name in names], axis=1)


def _largest_part(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the largest connected part of a non-empty mask, the pixel count of every part)."""
    from scipy import ndimage

    parts, _ = ndimage.label(mask)
    sizes = np.bincount(parts.ravel())[1:]
    return parts == int(np.argmax(sizes)) + 1, sizes


def _shape_features(maps: np.ndarray, on: np.ndarray) -> np.ndarray:
    """(n, 3): mean_probability, largest_part, roundness of each slice's cavity (zeros where there is none)."""
    out = np.zeros((len(maps), 3))
    for i, (m, mask) in enumerate(zip(maps, on)):
        if not mask.any():
            continue
        part, sizes = _largest_part(mask)
        yy, xx = np.nonzero(part)
        radius = float(np.hypot(yy - yy.mean(), xx - xx.mean()).max()) + 0.5
        out[i] = float(m[mask].mean()), sizes.max() / sizes.sum(), sizes.max() / (np.pi * radius ** 2)
    return out


def _ring(cavity: np.ndarray, myocardium: np.ndarray) -> np.ndarray:
    """(n,) per slice: the share of sectors around the cavity's largest part whose 2-pixel (5 mm) border holds
    myocardium (0 where there is no cavity)."""
    from scipy import ndimage

    out = np.zeros(len(cavity))
    for i, (mask, myo) in enumerate(zip(cavity, myocardium)):
        if not mask.any():
            continue
        part, _ = _largest_part(mask)
        border = ndimage.binary_dilation(part, iterations=2) & ~part
        yy, xx = np.nonzero(border)
        cy, cx = np.argwhere(part).mean(axis=0)
        sector = ((np.arctan2(yy - cy, xx - cx) + np.pi) / (2 * np.pi) * RING_SECTORS).astype(int) % RING_SECTORS
        covered = np.zeros(RING_SECTORS, dtype=bool)
        covered[sector[myo[yy, xx]]] = True
        out[i] = covered.mean()
    return out


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


def fit_presence(features: np.ndarray, truth: np.ndarray, names: tuple[str, ...] | list[str] = FEATURES) -> dict:
    """Logistic calibration of presence_features (columns ``names``) against the truth (slice holds LV cavity):
    {features, coef, intercept}."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=10.0, max_iter=1000).fit(features, truth.astype(int))
    return {"features": list(names), "coef": [float(c) for c in lr.coef_[0]], "intercept": float(lr.intercept_[0])}


def feature_names(calibration: dict) -> list[str]:
    """The presence features a calibration was fitted on."""
    return list(calibration.get("features", LEGACY_FEATURES))


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


def levels_from_maps(maps: np.ndarray, calibration: dict,
                     positions: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(levels, level probabilities, presence probabilities) of one stack from its cavity maps (apex -> base)."""
    q = presence(presence_features(maps, feature_names(calibration)), calibration)
    levels, probs = stack_levels(q, np.asarray(positions, dtype=float))
    return levels, probs, q


def end_verdicts(levels: list[str]) -> tuple[bool, bool]:
    """(apex covered, base covered): the stack reaches an out-of-apical / out-of-basal slice."""
    return levels[0] == "oap", levels[-1] == "obs"
