"""Image loading and intensity windowing (DICOM pixels -> 8-bit PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image


def read_pixels(path: str | Path) -> np.ndarray:
    """The stored pixel values of one DICOM image as float32."""
    return pydicom.dcmread(path).pixel_array.astype(np.float32)


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
            cines.append(np.stack([read_pixels(p) for p in rec["path"]]))
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
                img = window(read_pixels(rec["path"]), *pct)
            except ConstantImage as exc:
                return excluded("constant", f"{rec['path']}: {exc}")
            rel = Path(str(sid)) / f"{phase}_{int(rec['order']):02d}_{s}.png"
            save_png(out / rel, img)
            rows.append({"subject": sid, "split": rec["split"], "phase": phase, "frame": chosen[phase],
                         "series": s, "slice": int(rec["slice"]), "order": int(rec["order"]),
                         "position_mm": float(rec["position_mm"]), "path": str(out / rel),
                         "rows": int(rec["rows"]), "cols": int(rec["cols"]),
                         "pixel_spacing": float(rec["pixel_spacing"])})
    return rows, [], info
