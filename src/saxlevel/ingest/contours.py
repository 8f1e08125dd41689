"""Expert contour files of a DICOM study (the Sunnybrook layout): which slices hold LV cavity, and its pixels.

A contour file ``IM-0001-NNNN-icontour-manual.txt`` (x y pixel pairs, one per line) belongs to the DICOM file named
NNNN; at the two contoured frames (the expert's ED and ES), a slice without an endocardial contour has no cavity.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel.ingest import seglevels

CONTOUR = re.compile(r"IM-\d+-(\d+)-icontour-manual\.txt$")


def polygon_area(points: np.ndarray) -> float:
    """Area (pixels) of a closed contour given as (x, y) points (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def contour_levels(index: pd.DataFrame, contour_dir: str | Path) -> pd.DataFrame:
    """The labels (subject, series, frame, label, phase) of a DICOM study's contoured frames.

    ``index`` is the study's image index (predict.index_folder); a contour file IM-0001-NNNN belongs to the DICOM
    file named NNNN. The contoured frames are the expert's ED and ES (ED: the larger total cavity area); on each,
    slices with an endocardial contour have LV cavity and seglevels gives every slice its level."""
    files = contour_files(contour_dir)
    if not files:
        raise FileNotFoundError(f"no endocardial contour files (IM-*-NNNN-icontour-manual.txt) under {contour_dir}")
    numbers = index.path.map(lambda p: int(Path(p).stem) if Path(p).stem.isdigit() else -1)
    area = {n: polygon_area(np.loadtxt(p, ndmin=2)) for n, p in files.items()}
    index = index.assign(cavity=numbers.map(lambda n: area.get(n, 0.0)))
    frames = index.groupby("frame").cavity.agg(lambda a: (a > 0).sum())
    contoured = frames[frames > 0].index.tolist()
    if len(contoured) != 2:
        raise ValueError(f"expected contours on two frames (ED and ES), found them on frames {contoured}")
    total = index.groupby("frame").cavity.sum()
    ed = max(contoured, key=lambda f: total[f])
    out = []
    for frame in contoured:
        stack = index[index.frame == frame].sort_values("order")
        levels = seglevels.levels_from_cavity(stack.position_mm.to_numpy(), (stack.cavity > 0).to_numpy())
        assert levels is not None
        out += [{"subject": r.subject, "series": r.series, "frame": frame, "label": lv,
                 "phase": "ED" if frame == ed else "ES"} for r, lv in zip(stack.itertuples(), levels)]
    return pd.DataFrame(out)


def contour_files(contour_dir: str | Path) -> dict[int, Path]:
    """{DICOM file number NNNN: its endocardial contour file} under a folder."""
    return {int(m.group(1)): p for p in Path(contour_dir).rglob("*.txt") if (m := CONTOUR.search(p.name))}


def contour_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """The pixels (rows, columns) inside one contour (x = column, y = row, as the files give them)."""
    from matplotlib.path import Path as Polygon

    yy, xx = np.mgrid[:shape[0], :shape[1]]
    inside = Polygon(np.loadtxt(path, ndmin=2)).contains_points(np.c_[xx.ravel(), yy.ravel()])
    return inside.reshape(shape)
