"""The to_png stage's logic: choose each subject's ED and ES frames and write both stacks as 8-bit PNGs.

Per subject, every problem is an exclusion with a reason (constant images, pixel data that fails to
decode, frames that cannot be chosen, or any unforeseen error); the run goes on with the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel import io, parallel
from saxlevel.ingest import phases, seglevels
from saxlevel.ingest.images import ConstantImage, PixelError, read_pixels, save_png, window
from saxlevel.params import PngSettings
from saxlevel.sources import dicomheader, nifti
from saxlevel.sources.contract import EXCLUDED_COLUMNS, INDEX_COLUMNS, SOURCE_COLUMNS


def read_index(path: str | Path) -> pd.DataFrame:
    """filter_dicom's index.csv, checked for the columns to_png needs (a clear error names what is missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index {path} not found: run filter_dicom first (dvc repro filter_dicom)")
    index = io.read_table(path)
    missing = [c for c in INDEX_COLUMNS if c not in index.columns and c not in SOURCE_COLUMNS]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}: it was written by an older filter_dicom; "
                         "rerun it (dvc repro filter_dicom)")
    return index


def read_image(path: str | Path, file_frame: int) -> np.ndarray:
    """One stored image as float32: a NIfTI volume's slice, or a DICOM file's frame: a plain uncompressed
    single-frame file (the Kaggle export) straight from its bytes (dicomheader.plain_pixels, ~5x faster, the same
    values), any other through pydicom's decoders (images.read_pixels)."""
    if nifti.is_nifti(path):
        return nifti.read_image(path, file_frame)
    if not file_frame:
        try:
            plain = dicomheader.plain_pixels(path)
        except OSError:
            plain = None  # read_pixels names the problem
        if plain is not None:
            return plain.astype(np.float32)
    return read_pixels(path, file_frame)


FRAMES_FILE = "frames.csv"  # each written subject's ED and ES frame, and why ED moved where prior and curve differ
LABELS_FILE = "labels.csv"  # levels derived from segmentations, in the labels contract (subject,series,frame,label)
PNG_COLUMNS = ["subject", "split", "phase", "frame", "series", "slice", "order", "position_mm", "path",
               "rows", "cols", "pixel_spacing"]


def ordered_series(images) -> tuple[dict, list[str]]:
    """One subject's index rows per series (sorted by frame) and the series in apex->base order."""
    by_series = {s: g.sort_values("frame") for s, g in images.groupby("series")}
    return by_series, sorted(by_series, key=lambda s: int(by_series[s]["order"].iloc[0]))


def declared_phases(images) -> dict[str, int]:
    """The ED and ES frame numbers a source names in the index's ``phase`` column (NIfTI sources), if any."""
    if "phase" not in images:
        return {}
    named = images[images["phase"].isin(["ED", "ES"])]
    return {str(p): int(g["frame"].iloc[0]) for p, g in named.groupby("phase")}


def choose_frames(images, ed_frame: int | str, es_frame: int | str,
                  notes: list[str] | None = None) -> dict[str, int]:
    """The ED and ES frame numbers of one subject: given numbers, or 'auto': the frames the source names
    (declared_phases), else from the images and trigger times (phases.detect_ed_es over every slice's cine; a
    disagreement of the R-wave prior and the image curve is appended to ``notes``). Raises ValueError naming
    the problem."""
    frames = sorted(int(f) for f in images["frame"].unique())
    by_series, order = ordered_series(images)
    chosen: dict[str, int] = {}
    declared = declared_phases(images)
    if "auto" in (ed_frame, es_frame) and len(declared) == 2:
        chosen = declared  # the source names them (ACDC's Info.cfg, M&Ms' labelled frames, UK Biobank)
    elif "auto" in (ed_frame, es_frame):
        mid = phases.mid_slices(len(order))
        cines = []
        for s in order:
            rec = by_series[s]
            if len(rec) != len(frames):
                raise ValueError(f"{s} has {len(rec)} frames, others {len(frames)}: cannot detect ED/ES")
            cines.append(np.stack([read_image(p, k) for p, k in zip(rec["path"], rec["file_frame"])]))
        if max(float(cines[i].max()) for i in mid) <= 0:
            raise ConstantImage(f"all-black mid slices ({', '.join(order[i] for i in mid)})")
        spacings = [float(by_series[s]["pixel_spacing"].iloc[0]) for s in order]
        ed_i, es_i, _, note = phases.detect_ed_es(cines, spacings, frame_trigger_ms(images, frames))
        chosen = {"ED": frames[ed_i], "ES": frames[es_i]}
        if note and notes is not None and ed_frame == "auto":
            notes.append(note)
    for phase, value in (("ED", ed_frame), ("ES", es_frame)):
        if value != "auto":
            if int(value) not in frames:
                raise ValueError(f"to_png.{phase.lower()}_frame={value} not in frames {frames[0]}-{frames[-1]}")
            chosen[phase] = int(value)
    return chosen


def frame_trigger_ms(images, frames: list[int]) -> np.ndarray | None:
    """Each frame's TriggerTime (the median over the slices, which are triggered alike), None where absent."""
    if "trigger_time" not in images:
        return None
    t = pd.to_numeric(images["trigger_time"], errors="coerce").groupby(images["frame"].astype(int)).median()
    return t.reindex(frames).to_numpy(float)


def failed_subject(task: tuple, why: str) -> tuple[list[dict], list[dict], dict]:
    """The to_png result of a subject whose processing raised or killed its worker (its files named)."""
    images = task[0]
    sid = io.subject_id(images["subject"].iloc[0])
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
    sid = io.subject_id(images["subject"].iloc[0])
    info: dict = {"subject": sid}

    def excluded(rule: str, detail: str) -> tuple[list, list, dict]:
        return [], [{"subject": sid, "rule": rule, "detail": detail, "action": "excluded"}], info

    notes: list[str] = []
    try:
        chosen = choose_frames(images, ed_frame, es_frame, notes)
    except ConstantImage as exc:
        return excluded("constant", str(exc))
    except PixelError as exc:
        return excluded("undecodable", str(exc))
    except ValueError as exc:
        return excluded("frames", str(exc))
    info.update(ed_frame=chosen["ED"], es_frame=chosen["ES"], note="; ".join(notes))
    by_series, order = ordered_series(images)
    rows: list[dict] = []
    for phase in ("ED", "ES"):
        for s in order:
            rec = by_series[s]
            rec = rec[rec["frame"] == chosen[phase]].iloc[0]
            try:
                img = window(read_image(rec["path"], rec["file_frame"]), *pct)
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
                         "pixel_spacing": float(rec["pixel_spacing"]),
                         "lv_cavity_px": rec["lv_cavity_px"] if "lv_cavity_px" in rec else np.nan})
    info["labels"], missing = segmentation_labels(rows)
    if missing:
        info.pop("labels")
        return excluded("segmentation", f"{' and '.join(missing)} stack (frame "
                        f"{', '.join(str(chosen[p]) for p in missing)}): no LV cavity in its segmentation, or some "
                        f"slices not segmented (files {images['segmentation'].dropna().unique()[:2].tolist()}): "
                        "its levels cannot be derived")
    return rows, [], info


def segmentation_labels(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Labels (the labels contract) of one subject's PNG rows from their segmentation's LV-cavity pixels
    (seglevels), per phase; and the phases whose stack has no segmentation or no LV cavity at all."""
    out: list[dict] = []
    missing: list[str] = []
    for phase in ("ED", "ES"):
        stack = [r for r in rows if r["phase"] == phase]
        cavity = [r["lv_cavity_px"] for r in stack]
        if not stack or any(pd.isna(c) for c in cavity):
            if any(not pd.isna(c) for c in cavity):
                missing.append(phase)
            continue
        levels = seglevels.levels_from_cavity([r["position_mm"] for r in stack], [c > 0 for c in cavity])
        if levels is None:
            missing.append(phase)
            continue
        out += [{"subject": r["subject"], "series": r["series"], "frame": r["frame"], "label": lv,
                 "labeled_by": "segmentation"} for r, lv in zip(stack, levels)]
    return out, missing


@dataclass
class PngResult:
    """What to_png wrote: the PNG index rows, the exclusions and each written subject's chosen frames."""

    rows: list[dict]
    excluded: pd.DataFrame
    chosen: dict[int | str, dict] = field(default_factory=dict)
    labels: list[dict] = field(default_factory=list)  # derived from segmentations (segmented NIfTI sources)

    @property
    def index(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=PNG_COLUMNS)

    @property
    def frames(self) -> pd.DataFrame:
        """frames.csv: subject, ed_frame, es_frame, note (the R-wave prior's disagreement with the curve)."""
        return pd.DataFrame(list(self.chosen.values()), columns=["subject", "ed_frame", "es_frame", "note"])


def write_pngs(index: pd.DataFrame, out: Path, cfg: PngSettings, final: Path | None = None,
               progress: bool = True) -> PngResult:
    """Every subject of a filter index to PNGs under ``out`` (in ``cfg.jobs`` processes, none able to stop the
    others); index paths point into ``final`` (the folder ``out`` becomes) when given."""
    tasks = [(g, out, cfg.ed_frame, cfg.es_frame, cfg.window) for _, g in index.groupby("subject", sort=True)]
    results = parallel.map_isolated(subject_to_png, tasks, cfg.jobs, on_failure=failed_subject, desc="to_png",
                                    unit="subject", progress=progress)
    rows = [r for res in results for r in res[0]]
    if final is not None:
        for r in rows:
            r["path"] = str(final / Path(r["path"]).relative_to(out))
    excluded = pd.DataFrame([p for res in results for p in res[1]], columns=EXCLUDED_COLUMNS)
    chosen = {res[2]["subject"]: {k: v for k, v in res[2].items() if k != "labels"} for res in results
              if "ed_frame" in res[2]}
    labels = [lab for res in results for lab in res[2].get("labels", [])]
    return PngResult(rows, excluded, chosen, labels)


def frame_hit_rates(chosen: dict[int | str, dict], index: pd.DataFrame, truth_path: str | Path) -> dict[str, float]:
    """Share of written subjects whose chosen ED / ES frame is within one frame of the phantom's truth (the
    cycle wraps around)."""
    truth = json.loads(Path(truth_path).read_text())["subjects"]
    n_frames = {sid: int(g.frame.max()) for sid, g in index.groupby("subject")}
    out = {}
    for key in ("ed_frame", "es_frame"):
        hits = [min(d, n_frames[s] - d) <= 1 for s in chosen
                for d in [abs(chosen[s][key] - truth[str(s)][key])]]
        out[f"{key}_hit_rate_pm1"] = round(sum(hits) / max(len(chosen), 1), 4)
    return out


def png_metrics(result: PngResult, n_subjects: int, cfg: PngSettings, index: pd.DataFrame,
                truth_path: str | Path | None) -> dict:
    """metrics/png.json: counts, exclusions by rule, the frame choice and (phantom) the ED/ES hit rates."""
    metrics: dict = {"subjects": n_subjects, "subjects_written": len(result.chosen), "images": len(result.rows),
                     "excluded_by_rule": result.excluded.rule.value_counts().to_dict(),
                     "ed_frame": str(cfg.ed_frame), "es_frame": str(cfg.es_frame),
                     # subjects whose ED the R-wave prior moved off the whole-cycle curve maximum (frames.csv)
                     "ed_moved_by_r_wave": sum(1 for c in result.chosen.values() if c.get("note"))}
    if truth_path and Path(truth_path).exists():
        metrics.update(frame_hit_rates(result.chosen, index, truth_path))
    return metrics

