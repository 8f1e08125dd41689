"""Image loading and intensity windowing (DICOM pixels -> 8-bit PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import pydicom.pixels
from PIL import Image

if TYPE_CHECKING:
    import pandas as pd


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


def read_index(path: str | Path) -> "pd.DataFrame":
    """filter_dicom's index.csv, checked for the columns to_png needs (a clear error names what is missing)."""
    import pandas as pd

    from saxlevel.dicom import INDEX_COLUMNS

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index {path} not found: run filter_dicom first (dvc repro filter_dicom)")
    index = pd.read_csv(path)
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}: it was written by an older filter_dicom; "
                         "rerun it (dvc repro filter_dicom)")
    return index


PNG_COLUMNS = ["subject", "split", "phase", "frame", "series", "slice", "order", "position_mm", "path",
               "rows", "cols", "pixel_spacing"]


def ordered_series(images) -> tuple[dict, list[str]]:
    """One subject's index rows per series (sorted by frame) and the series in apex->base order."""
    by_series = {s: g.sort_values("frame") for s, g in images.groupby("series")}
    return by_series, sorted(by_series, key=lambda s: int(by_series[s]["order"].iloc[0]))


def choose_frames(images, ed_frame: int | str, es_frame: int | str) -> dict[str, int]:
    """The ED and ES frame numbers of one subject: given numbers, or 'auto' from the images
    (phases.detect_ed_es over the mid slices). Raises ValueError naming the problem."""
    from saxlevel import phases

    frames = sorted(int(f) for f in images["frame"].unique())
    by_series, order = ordered_series(images)
    chosen: dict[str, int] = {}
    if "auto" in (ed_frame, es_frame):
        picks = [order[i] for i in phases.mid_slices(len(order))]
        cines = []
        for s in picks:
            rec = by_series[s]
            if len(rec) != len(frames):
                raise ValueError(f"{s} has {len(rec)} frames, others {len(frames)}: cannot detect ED/ES")
            cines.append(np.stack([read_pixels(p, k) for p, k in zip(rec["path"], rec["file_frame"])]))
        if max(float(c.max()) for c in cines) <= 0:
            raise ConstantImage(f"all-black mid slices ({', '.join(picks)})")
        spacings = [float(by_series[s]["pixel_spacing"].iloc[0]) for s in picks]
        ed_i, es_i, _ = phases.detect_ed_es(cines, spacings)
        chosen = {"ED": frames[ed_i], "ES": frames[es_i]}
    for phase, value in (("ED", ed_frame), ("ES", es_frame)):
        if value != "auto":
            if int(value) not in frames:
                raise ValueError(f"to_png.{phase.lower()}_frame={value} not in frames {frames[0]}-{frames[-1]}")
            chosen[phase] = int(value)
    return chosen


def safe_subject_to_png(images, out: Path, ed_frame: int | str, es_frame: int | str,
                        pct: tuple[float, float]) -> tuple[list[dict], list[dict], dict]:
    """subject_to_png, with any unforeseen exception turned into an exclusion of that subject only."""
    try:
        return subject_to_png(images, out, ed_frame, es_frame, pct)
    except Exception as exc:  # noqa: BLE001  one subject must not stop the run
        return crash_result((images, out), f"{exc.__class__.__name__}: {exc}")


def crash_result(task: tuple, why: str) -> tuple[list[dict], list[dict], dict]:
    """The to_png result of a subject whose processing failed unexpectedly (its files named)."""
    images = task[0]
    sid = int(images["subject"].iloc[0])
    folders = sorted({str(Path(p).parent) for p in images["path"]})
    return [], [{"subject": sid, "rule": "error", "action": "excluded",
                 "detail": f"{why} (files in {', '.join(folders[:3])}{' ...' if len(folders) > 3 else ''})"}], \
        {"subject": sid}


def subject_to_png(images, out: Path, ed_frame: int | str, es_frame: int | str,
                   pct: tuple[float, float]) -> tuple[list[dict], list[dict], dict]:
    """Write one subject's ED and ES stacks as PNGs.

    ``images`` is the subject's rows of the filter index. Returns (PNG index rows, exclusions,
    info with the chosen frames). A constant image excludes the subject: its stack would be incomplete.
    """
    sid = int(images["subject"].iloc[0])
    info: dict = {"subject": sid}

    def excluded(rule: str, detail: str) -> tuple[list, list, dict]:
        return [], [{"subject": sid, "rule": rule, "detail": detail, "action": "excluded"}], info

    try:
        chosen = choose_frames(images, ed_frame, es_frame)
    except ConstantImage as exc:
        return excluded("constant", str(exc))
    except PixelError as exc:
        return excluded("undecodable", str(exc))
    except ValueError as exc:
        return excluded("frames", str(exc))
    info.update(ed_frame=chosen["ED"], es_frame=chosen["ES"])
    by_series, order = ordered_series(images)
    rows: list[dict] = []
    for phase in ("ED", "ES"):
        for s in order:
            rec = by_series[s]
            rec = rec[rec["frame"] == chosen[phase]].iloc[0]
            try:
                img = window(read_pixels(rec["path"], rec["file_frame"]), *pct)
            except ConstantImage as exc:
                return excluded("constant", f"{rec['path']}: {exc}")
            except PixelError as exc:
                return excluded("undecodable", str(exc))
            rel = Path(str(sid)) / f"{phase}_{int(rec['order']):02d}_{s}.png"
            save_png(out / rel, img)
            rows.append({"subject": sid, "split": rec["split"], "phase": phase, "frame": chosen[phase],
                         "series": s, "slice": int(rec["slice"]), "order": int(rec["order"]),
                         "position_mm": float(rec["position_mm"]), "path": str(out / rel),
                         "rows": int(rec["rows"]), "cols": int(rec["cols"]),
                         "pixel_spacing": float(rec["pixel_spacing"])})
    return rows, [], info
