"""Slice levels from an LV segmentation (NIfTI sources with expert contours: ACDC, M&Ms, UK Biobank).

The consensus definition (the paper's reference 16, Cerqueira et al. 2002, the AHA 17-segment model): the LV
from its most apical to its most basal slice with blood pool is divided into basal, mid and apical thirds of
equal thickness. The paper's own definition (section 2.2) ties ap/mid/bs to the papillary muscles, which a
segmentation does not outline, so a dataset's contours give the consensus thirds, not the paper's levels.

Along apex->base, slices apical of the most apical slice with LV cavity are ``oap``, slices basal of the most
basal one ``obs``; a slice between them lies in the third of the LV's extent that holds its centre, the extent
being [first centre - step/2, last centre + step/2] (steps to the inner neighbours). With even steps this is
class floor(3 (r + 0.5) / n) for rank r from the apex among the n slices from the first to the last cavity
slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saxlevel import CLASSES


def levels_from_cavity(positions: Sequence[float], has_cavity: Sequence[bool]) -> list[str] | None:
    """The level of each slice (in the given order) from its position along the apex->base normal and whether
    the segmentation has LV cavity in it; None when no slice has any (nothing to derive from)."""
    pos = np.asarray(positions, dtype=float)
    cavity = np.asarray(has_cavity, dtype=bool)
    if not cavity.any():
        return None
    rank = np.argsort(pos, kind="stable")
    p, c = pos[rank], cavity[rank]
    first, last = int(np.flatnonzero(c)[0]), int(np.flatnonzero(c)[-1])
    out = np.empty(len(p), dtype=object)
    out[:first], out[last + 1:] = CLASSES[0], CLASSES[-1]
    if first == last:
        out[first] = CLASSES[2]  # one slice with LV: its centre is the middle of the extent
    else:
        lo = p[first] - (p[first + 1] - p[first]) / 2
        hi = p[last] + (p[last] - p[last - 1]) / 2
        third = np.floor(3 * (p[first:last + 1] - lo) / (hi - lo)).astype(int).clip(0, 2)
        out[first:last + 1] = [CLASSES[1 + t] for t in third]
    levels = np.empty(len(p), dtype=object)
    levels[rank] = out
    return [str(v) for v in levels]
