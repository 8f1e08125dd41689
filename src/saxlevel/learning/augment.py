"""Stack-consistent augmentation (the data generator of the paper's future work, section 5).

One random geometric transform (rotation, translation, flip, zoom) and one intensity transform (gamma,
contrast, brightness) is drawn per *stack* and applied identically to every real slice of it, so the
apex->base sequence the RNN reads stays anatomically coherent: a slice and its neighbours move together,
as they would if the patient lay a little differently. The dense head draws one per image. Images are
grayscale 0-255 (the PNGs after the square resize); padded slices are marked with PAD and never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PAD = float("nan")  # every value of a padded (absent) slice; real images and features are finite


@dataclass(frozen=True)
class Ranges:
    """How strong the random transforms are (drawn uniformly within +-range, or in [lo, hi])."""

    rotation_deg: float = 15.0
    translation: float = 0.08  # share of the image side
    zoom: tuple[float, float] = (0.9, 1.1)
    flip: float = 0.5  # probability of a left-right flip (level is invariant to handedness)
    gamma: tuple[float, float] = (0.8, 1.25)
    contrast: tuple[float, float] = (0.85, 1.15)
    brightness: float = 15.0  # grey levels


@dataclass(frozen=True)
class Transform:
    """One drawn transform: output pixel (r, c) samples input at matrix @ (r, c) + offset."""

    matrix: np.ndarray
    offset: np.ndarray
    gamma: float
    contrast: float
    brightness: float


def draw(rng: np.random.Generator, size: int, ranges: Ranges = Ranges()) -> Transform:
    """A random transform about the image centre for size x size images."""
    angle = np.deg2rad(rng.uniform(-ranges.rotation_deg, ranges.rotation_deg))
    zoom = rng.uniform(*ranges.zoom)
    flip = rng.random() < ranges.flip
    shift = rng.uniform(-ranges.translation, ranges.translation, 2) * size
    cos, sin = np.cos(angle), np.sin(angle)
    # Inverse map (output -> input): rotate, scale by 1/zoom, optionally mirror the columns.
    matrix = np.array([[cos, -sin], [sin, cos]]) / zoom
    if flip:
        matrix = matrix @ np.diag([1.0, -1.0])
    centre = np.full(2, (size - 1) / 2.0)
    offset = centre - matrix @ (centre + shift)
    return Transform(matrix, offset, float(rng.uniform(*ranges.gamma)), float(rng.uniform(*ranges.contrast)),
                     float(rng.uniform(-ranges.brightness, ranges.brightness)))


def apply(images: np.ndarray, t: Transform) -> np.ndarray:
    """The same transform on every image of (N, H, W) (0-255); slices equal to PAD stay PAD."""
    out = np.array(images, dtype=np.float32, copy=True)
    for i, img in enumerate(out):
        if is_pad(img):
            continue
        warped = ndimage.affine_transform(img, t.matrix, t.offset, order=1, mode="constant", cval=0.0)
        shaded = 255.0 * (np.clip(warped, 0, 255) / 255.0) ** t.gamma
        out[i] = np.clip((shaded - 127.5) * t.contrast + 127.5 + t.brightness, 0, 255)
    return out


def is_pad(image: np.ndarray) -> bool:
    """A padded slice (every value PAD, i.e. NaN)."""
    return bool(np.all(np.isnan(image)))


def augment_stacks(stacks: np.ndarray, rng: np.random.Generator, ranges: Ranges = Ranges()) -> np.ndarray:
    """(S, T, H, W): one transform per stack, shared by all its real slices."""
    return np.stack([apply(s, draw(rng, s.shape[-1], ranges)) for s in stacks]) if len(stacks) else stacks


def augment_images(images: np.ndarray, rng: np.random.Generator, ranges: Ranges = Ranges()) -> np.ndarray:
    """(N, H, W): one transform per image (the dense head sees single slices)."""
    return augment_stacks(images[:, None], rng, ranges)[:, 0] if len(images) else images
