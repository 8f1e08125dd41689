"""Image loading and intensity windowing (DICOM pixels -> 8-bit PNG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.pixels
from PIL import Image


class PixelError(ValueError):
    """An image's pixel data cannot be decoded or has the wrong shape; the message names the file."""


def read_pixels(path: str | Path, file_frame: int = 0) -> np.ndarray:
    """The stored pixel values of one image (frame ``file_frame`` of a multi-frame file) as float32.

    Any transfer syntax with an installed pydicom decoder works (uncompressed, deflated, RLE, JPEG
    Lossless, JPEG-LS, JPEG 2000); only the requested frame is decoded."""
    ds = pydicom.Dataset()
    try:
        if pydicom.filereader.read_file_meta_info(path).TransferSyntaxUID.is_deflated:
            # pixel_array(path) reads the raw file; a deflated dataset must be inflated whole first.
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
            pixels = pixels[int(file_frame)] if pixels.ndim == 3 else pixels
        else:
            pixels = pydicom.pixels.pixel_array(str(path), index=int(file_frame), ds_out=ds)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as exc:  # decoders raise many types on damaged data
        raise PixelError(f"{path}: cannot decode frame {int(file_frame) + 1}: {exc.__class__.__name__}: {exc}") from None
    if pixels.shape != (rows, cols):
        raise PixelError(f"{path}: decoded pixels have shape {pixels.shape}, Rows x Columns say {(rows, cols)} "
                         f"({ds.file_meta.TransferSyntaxUID.name})")
    return pixels.astype(np.float32)


class ConstantImage(ValueError):
    """An image with no intensity range (e.g. all black): it cannot be windowed."""


def window(pixels: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0) -> np.ndarray:
    """Map [p_low, p_high] percentiles linearly to [0, 255] (clipped) as uint8."""
    lo, hi = np.percentile(pixels, [low_pct, high_pct])
    if not hi > lo:
        raise ConstantImage(f"constant image (percentiles {low_pct}-{high_pct} both {lo:g})")
    scaled = (pixels - lo) * (255.0 / (hi - lo))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write an 8-bit grayscale PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="L").save(path, optimize=False)


def load_png(path: str | Path) -> np.ndarray:
    """Read an 8-bit grayscale PNG as uint8 (H, W)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


PREPROCESSING_FILE = "preprocessing.json"


def preprocessing(cfg: Any) -> dict:
    """How the PNGs were made from the DICOM pixels (``cfg``: params.PngSettings). to_png writes it next to
    the PNGs, train copies it into each model, predict applies exactly this."""
    return {"window_percentiles": list(cfg.window), "ed_frame": cfg.ed_frame, "es_frame": cfg.es_frame,
            "bit_depth": 8}


def read_preprocessing(png_dir: str | Path) -> dict:
    """The preprocessing record of a PNG folder (written by to_png)."""
    path = Path(png_dir) / PREPROCESSING_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the PNGs were made by an older to_png; rerun it "
                                "(dvc repro to_png)")
    return json.loads(path.read_text())
