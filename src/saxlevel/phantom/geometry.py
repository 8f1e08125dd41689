"""Patient-space geometry of a phantom study: slice planes, DICOM orientation and positions.

DICOM patient coordinates are LPS (x -> patient Left, y -> Posterior, z -> Superior). The LV long
axis points from the apex (anterior, inferior, left) to the base (right, posterior, superior);
the mean Kaggle SAX orientation has row x column = (-0.68, 0.61, 0.41), i.e. toward the base.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Mean SAX ImageOrientationPatient of the Kaggle data (../shared/notes/kaggle-dsb2-facts.md).
MEAN_ROW = np.array([0.617, 0.777, -0.128])
MEAN_COL = np.array([-0.397, 0.167, -0.902])
# Patient right-anterior: where the right ventricle lies relative to the LV.
RIGHT_ANTERIOR = np.array([-1.0, -1.0, 0.0]) / np.sqrt(2.0)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def _rotate(x: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of x about a unit axis."""
    return (
        x * np.cos(angle)
        + np.cross(axis, x) * np.sin(angle)
        + axis * np.dot(axis, x) * (1 - np.cos(angle))
    )


@dataclass(frozen=True)
class Frame:
    """The LV frame in patient space: origin at the ED base centre, d apex->base, e1 septal, e2 anterior."""

    origin: np.ndarray
    d: np.ndarray
    e1: np.ndarray
    e2: np.ndarray


@dataclass(frozen=True)
class Plane:
    """One image plane: DICOM ImagePositionPatient, row/column directions, spacing and size."""

    ipp: np.ndarray
    row: np.ndarray
    col: np.ndarray
    spacing: float
    rows: int
    cols: int

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row, self.col)

    def lv_coords(self, frame: Frame, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, z) of every pixel centre, shifted by ``offset`` mm along the plane normal."""
        i = np.arange(self.rows, dtype=np.float32)[:, None]
        j = np.arange(self.cols, dtype=np.float32)[None, :]
        base = self.ipp + offset * self.normal - frame.origin
        out = []
        for axis in (frame.e1, frame.e2, frame.d):
            out.append(
                np.float32(base @ axis)
                + j * np.float32(self.spacing * (self.row @ axis))
                + i * np.float32(self.spacing * (self.col @ axis))
            )
        return out[0], out[1], out[2]


def sample_frame(rng: np.random.Generator) -> tuple[Frame, np.ndarray]:
    """Draw the LV frame and the SAX stack normal (the stack is tilted up to ~7 deg from the axis)."""
    normal = _unit(np.cross(MEAN_ROW, MEAN_COL) + rng.normal(0, 0.08, 3))
    perp = _unit(np.cross(normal, rng.normal(0, 1, 3)))
    d = _unit(normal + np.tan(np.deg2rad(rng.uniform(0, 7))) * perp)
    e1 = _unit(RIGHT_ANTERIOR - d * np.dot(RIGHT_ANTERIOR, d))
    e1 = _rotate(e1, d, np.deg2rad(rng.normal(0, 10)))
    e2 = np.cross(d, e1)
    if e2[1] > 0:  # keep e2 anterior (-y) so anatomy is never mirrored
        e2 = -e2
    origin = np.array([rng.uniform(-20, 40), rng.uniform(-60, 0), rng.uniform(-40, 40)])
    return Frame(origin=origin, d=d, e1=e1, e2=e2), normal


def sax_orientation(rng: np.random.Generator, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row/column directions for SAX images: near the Kaggle mean, in-plane angle in two clusters,
    and in some studies transposed (phase encoding swapped), which flips row x column."""
    row = _unit(MEAN_ROW - normal * np.dot(MEAN_ROW, normal))
    cluster = 0.0 if rng.random() < 0.7 else 35.0
    row = _rotate(row, normal, np.deg2rad(cluster + rng.normal(0, 8)))
    col = np.cross(normal, row)
    if rng.random() < 0.15:
        row, col = col, row
    return row, col


def plane_through(
    center: np.ndarray, row: np.ndarray, col: np.ndarray, spacing: float, rows: int, cols: int,
    shift: tuple[float, float] = (0.0, 0.0),
) -> Plane:
    """The plane whose pixel grid is centred on ``center`` (+ an in-plane shift in mm)."""
    ipp = center - (cols / 2 * spacing + shift[0]) * row - (rows / 2 * spacing + shift[1]) * col
    return Plane(ipp=ipp, row=row, col=col, spacing=spacing, rows=rows, cols=cols)
