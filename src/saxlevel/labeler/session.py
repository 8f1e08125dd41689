"""The labeller's state without a screen: which slices carry which label, the model's pre-fill, undo, atomic
saves with backups, and the heart-centred view box of each slice."""

from __future__ import annotations

import getpass
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel import CLASSES, LABEL_KEY, STACK_KEY, io
from saxlevel.ingest import phases
from saxlevel.ingest.images import load_png

KEY = LABEL_KEY
COLUMNS = KEY + ["label", "labeled_by", "labeled_at"]
KEEP_BACKUPS = 5
PHASES = ("ED", "ES")
# Half-width of the heart-centred crop: 75 mm covers both ventricles of an adult heart around the moving
# centre, which sits between LV and RV (the blood pools lie within ~45 mm of it; the rest is margin for the
# walls and the neighbourhood a reader needs to judge the level).
HEART_HALF_MM = 75.0
CACHED_SUBJECTS = 3  # images of this many subjects stay in memory (back-and-forth costs no disk reads)
UNDO_STEPS = 200
COLORS = {"unlabelled": "#bbbbbb", "agree": "#2ca02c", "disagree": "#d62728", "labelled": "white"}
REVIEW_MODES = ("uncertain",)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def levels_from_starts(starts: dict[int, int], n: int) -> list[int]:
    """Per-slice class indices from 'class c starts at slice k' marks (monotone apex->base).

    Slice j gets the highest class whose start is at or before j; slices before every start get
    the lowest marked class.
    """
    if not starts:
        raise ValueError("no level boundary set")
    first = min(starts)
    out = []
    for j in range(n):
        below = [c for c, k in starts.items() if k <= j]
        out.append(max(below) if below else first)
    return out


def heart_centre(ed: list[np.ndarray], es: list[np.ndarray]) -> tuple[float, float] | None:
    """(row, column) of the heart in a subject's images: the weighted centroid of the top 1 % of the
    ED-ES difference summed over the mid slices (phases.motion_centre). None when nothing moves (or the
    stacks differ in shape)."""
    n = min(len(ed), len(es))
    mids = phases.mid_slices(n)
    diffs = [np.abs(ed[k].astype(np.float32) - es[k]) for k in mids if k < n and ed[k].shape == es[k].shape]
    if not diffs or len({d.shape for d in diffs}) != 1:
        return None
    return phases.motion_centre(np.sum(diffs, axis=0))


def uncertainty_order(subjects: list, predictions: pd.DataFrame) -> list:
    """Subjects with predictions first, the least confident first (mean over slices of 1 - the largest
    class probability), then the rest in their order."""
    prob_cols = [f"p_{c}" for c in CLASSES]
    if not set(prob_cols) <= set(predictions.columns):
        raise ValueError("--review uncertain needs a predictions CSV with p_oap ... p_obs columns "
                         "(data/predictions/BACKBONE-HEAD.csv)")
    doubt = (1 - predictions[prob_cols].max(axis=1)).groupby(predictions.subject).mean()
    known = [s for s in doubt.sort_values(ascending=False, kind="stable").index if s in set(subjects)]
    return [io.subject_id(s) for s in known] + [s for s in subjects if s not in set(known)]


class Session:
    """The labelling session's state: stacks, labels, the model's pre-fill, undo, saving (no screen needed)."""

    def __init__(self, index: pd.DataFrame, labels_path: str | Path, predictions: pd.DataFrame | None = None,
                 user: str | None = None, autosave_every: int = 10,
                 review: str | None = None) -> None:
        self.labels_path = Path(labels_path)
        self.user = user or os.environ.get("USER") or getpass.getuser()
        self.autosave_every = autosave_every
        if index.empty:
            raise ValueError("the index lists no images to label")
        self.rows: dict[int | str, dict[str, pd.DataFrame]] = {}
        for (sid, phase), g in index.groupby(STACK_KEY, sort=True):
            self.rows.setdefault(io.subject_id(sid), {})[str(phase)] = g.sort_values("order").reset_index(drop=True)
        self.subjects = sorted(self.rows)
        # Image keys per subject and phase, apex -> base: the hot path never touches pandas.
        self.keys: dict[int | str, dict[str, list[tuple]]] = {
            sid: {ph: [self._key(r) for r in g.to_dict("records")] for ph, g in phases.items()}
            for sid, phases in self.rows.items()}
        self.spacing: dict[int | str, dict[str, list[float]]] = {
            sid: {ph: [float(v) if v == v else 1.5 for v in g.get("pixel_spacing", pd.Series([1.5] * len(g)))]
                  for ph, g in phases.items()} for sid, phases in self.rows.items()}
        if review is not None:
            if review not in REVIEW_MODES:
                raise ValueError(f"--review must be one of {REVIEW_MODES}, got {review!r}")
            if predictions is None:
                raise ValueError("--review uncertain needs --predictions")
            self.subjects = uncertainty_order(self.subjects, predictions)
        self.labels: dict[tuple, dict] = {}
        if self.labels_path.exists():
            for r in io.read_table(self.labels_path).to_dict("records"):
                self.labels[(io.subject_id(r["subject"]), str(r["series"]), int(r["frame"]))] = {
                    "label": r["label"], "labeled_by": r.get("labeled_by", ""), "labeled_at": r.get("labeled_at", "")}
        self.pred: dict[tuple, str] = {}
        if predictions is not None:
            # A predictions CSV (pred), saxlevel predict's levels.csv (level), or a labels CSV (label), e.g. to_png's
            # levels from a segmentation.
            column = next((c for c in ("pred", "level", "label") if c in predictions.columns), None)
            if column is None:
                raise ValueError("--predictions needs a predictions CSV (column pred), saxlevel predict's levels.csv "
                                 "(column level) or a labels CSV (column label)")
            for r in predictions.to_dict("records"):
                self.pred[(io.subject_id(r["subject"]), str(r["series"]), int(r["frame"]))] = str(r[column])
        self.current = self._first_unfinished()
        self.cls: int | None = None
        self.boundary = False
        self.starts: dict[str, dict[int, int]] = {}
        self.unsaved = 0
        self.message = ""
        self.history: list[list[tuple[tuple, dict | None]]] = []
        self.heart_view = True
        self.level, self.contrast = 0.0, 1.0  # display window: brightness offset and contrast factor
        self.centres: dict[int | str, tuple[float, float] | None] = {}
        self._cache: OrderedDict[int | str, dict[str, list[np.ndarray]]] = OrderedDict()
        self.session_start = time.monotonic()
        self.session_labels = 0
        self.show_help = False

    # ----- state -----
    @staticmethod
    def _key(row: dict) -> tuple:
        return (io.subject_id(row["subject"]), str(row["series"]), int(row["frame"]))

    @property
    def subject(self) -> int | str:
        return self.subjects[self.current]

    def row_keys(self, phase: str) -> list[tuple]:
        """The current subject's image keys at ``phase``, apex -> base."""
        return self.keys[self.subject].get(phase, [])

    def _keys(self, sid: int | str) -> list[tuple]:
        return [k for keys in self.keys[sid].values() for k in keys]

    def _first_unfinished(self) -> int:
        for i, sid in enumerate(self.subjects):
            if any(k not in self.labels for k in self._keys(sid)):
                return i
        return 0

    def label_of(self, phase: str, j: int) -> str | None:
        rec = self.labels.get(self.row_keys(phase)[j])
        return rec["label"] if rec else None

    def _set(self, changes: Mapping[tuple, int | None]) -> list[tuple]:
        """Apply {image key: class index or None (remove)} as one undoable step; returns the changed keys."""
        step, changed = [], []
        for k, cls in changes.items():
            old = self.labels.get(k)
            new = None if cls is None else CLASSES[cls]
            if (old["label"] if old else None) == new:
                continue
            step.append((k, old))
            changed.append(k)
            if new is None:
                del self.labels[k]
            else:
                self.labels[k] = {"label": new, "labeled_by": self.user, "labeled_at": _now()}
                self.session_labels += 1
        if step:
            self.history = (self.history + [step])[-UNDO_STEPS:]
            self.unsaved += len(step)
            if self.unsaved >= self.autosave_every:
                self.save()
        return changed

    def set_label(self, phase: str, j: int, cls: int) -> list[tuple]:
        return self._set({self.row_keys(phase)[j]: cls})

    def undo(self) -> list[tuple]:
        """Revert the last change (one click, one boundary fill, one accept or copy)."""
        if not self.history:
            self.message = "nothing to undo"
            return []
        step = self.history.pop()
        for k, old in reversed(step):
            if old is None:
                self.labels.pop(k, None)
            else:
                self.labels[k] = old
        self.unsaved += len(step)
        self.message = f"undid {len(step)} label(s)"
        return [k for k, _ in step]

    def goto(self, i: int) -> None:
        if self.unsaved:
            self.save()
        self.current = int(np.clip(i, 0, len(self.subjects) - 1))
        self.starts = {}

    def accept_prefill(self) -> int:
        """Take the model's prediction for every unlabelled slice of this subject; returns how many."""
        changes = {k: CLASSES.index(self.pred[k]) for k in self._keys(self.subject)
                   if k not in self.labels and k in self.pred}
        return len(self._set(changes))

    def copy_ed_to_es(self) -> int:
        """Give each ES slice the label of the ED slice of the same series (a starting point: most slices
        keep their level over the cycle; basal ones can move up). Returns how many changed."""
        ed = {k[1]: self.labels[k]["label"] for k in self.row_keys("ED") if k in self.labels}
        changes = {k: CLASSES.index(ed[k[1]]) for k in self.row_keys("ES") if k[1] in ed}
        return len(self._set(changes))

    def save(self) -> Path:
        """Write all labels atomically; keep a timestamped backup of the previous file."""
        if self.labels_path.exists():
            stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
            shutil.copy2(self.labels_path, self.labels_path.with_name(f"{self.labels_path.name}.bak-{stamp}"))
            backups = sorted(self.labels_path.parent.glob(f"{self.labels_path.name}.bak-*"))
            for old in backups[:-KEEP_BACKUPS]:
                old.unlink()
        rows = [{"subject": k[0], "series": k[1], "frame": k[2], **v} for k, v in self.labels.items()]
        frame = pd.DataFrame(rows, columns=COLUMNS).sort_values(KEY)
        io.write_csv(self.labels_path, frame)
        self.unsaved = 0
        self.message = f"saved {len(frame)} labels"
        return self.labels_path

    def progress(self) -> str:
        """Subjects done / total and this session's labelling rate."""
        done = sum(all(k in self.labels for k in self._keys(s)) for s in self.subjects)
        hours = max(time.monotonic() - self.session_start, 1.0) / 3600
        return (f"subjects done {done}/{len(self.subjects)} | {self.session_labels} labels this session "
                f"({self.session_labels / hours:.0f}/h)")

    def status(self) -> str:
        cls = CLASSES[self.cls] if self.cls is not None else "-"
        counts = ", ".join(f"{ph} {sum(k in self.labels for k in self.row_keys(ph))}/{len(self.row_keys(ph))}"
                           for ph in PHASES if self.row_keys(ph))
        saved = f"{self.unsaved} UNSAVED change(s)" if self.unsaved else "all saved"
        return (f"subject {self.current + 1}/{len(self.subjects)} (id {self.subject}) | {counts} labelled | "
                f"class {cls} | {'BOUNDARY' if self.boundary else 'slice'} mode | {saved} | {self.message}\n"
                f"{self.progress()} | ? help")

    # ----- images -----
    def images(self, sid: int | str) -> dict[str, list[np.ndarray]]:
        """A subject's images per phase, read from disk once and kept for the last few subjects."""
        if sid not in self._cache:
            self._cache[sid] = {ph: [load_png(p) for p in g.path] for ph, g in self.rows[sid].items()}
            while len(self._cache) > CACHED_SUBJECTS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(sid)
        return self._cache[sid]

    def centre(self, sid: int | str) -> tuple[float, float] | None:
        if sid not in self.centres:
            imgs = self.images(sid)
            self.centres[sid] = heart_centre(imgs.get("ED", []), imgs.get("ES", []))
        return self.centres[sid]

    def view_box(self, phase: str, j: int) -> tuple[float, float, float, float] | None:
        """(x0, x1, y1, y0) axis limits of the heart-centred crop of one slice, or None for the full view."""
        centre = self.centre(self.subject)
        if not self.heart_view or centre is None:
            return None
        spacing = self.spacing[self.subject][phase][j] or 1.5  # mm per pixel (index.csv pixel_spacing)
        half = HEART_HALF_MM / spacing
        cy, cx = centre
        return (cx - half, cx + half, cy + half, cy - half)

    # ----- events -----
