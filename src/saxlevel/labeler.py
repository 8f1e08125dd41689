"""`saxlevel label`: the paper's matplotlib slice labeler (section 2.2), made fast and heart-centred.

One subject per screen: its ED stack above its ES stack, slices apex->base, each cropped around the
heart (the region that moves between ED and ES; a right-click sets the centre by hand).

Keys: 1-5 choose the class (oap, ap, mid, bs, obs); a click labels a slice with it; b toggles boundary
mode (a click sets where the chosen level starts in that row and the row is filled in: levels never go
backwards from apex to base); a accepts the model's labels for every unlabelled slice of the subject;
c copies ED's labels to ES; z undoes (many steps); f toggles heart view / full field of view;
up/down brighten/darken, +/- raise/lower contrast, 0 resets; left/right move between subjects, h/l jump
by 10; space saves; ? shows this help. Labels autosave every few changes and on every subject change,
atomically, with a timestamped backup of the previous file; each label records who and when; on start
the file is reloaded and labelling resumes at the first subject with an unlabelled slice.

Speed: every image is read from disk once per subject and cached; an event redraws only what it changed
(one slice's label, the status line) with blitting, so typing ahead never lags behind the labels.
"""

from __future__ import annotations

import getpass
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saxlevel import CLASSES, LABEL_KEY, STACK_KEY, io, phases
from saxlevel.images import load_png

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


class Labeler:
    """The labelling session: state, event handlers and drawing (testable without a screen)."""

    def __init__(self, index: pd.DataFrame, labels_path: str | Path, predictions: pd.DataFrame | None = None,
                 user: str | None = None, autosave_every: int = 10, show: bool = True,
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
        self.fig: Any = None
        if show:
            self._make_figure()

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
    def on_key(self, event: Any) -> None:
        key = event.key
        changed: list[tuple] = []
        full = False
        if key in {"1", "2", "3", "4", "5"}:
            self.cls = int(key) - 1
            self.message = f"class {CLASSES[self.cls]}"
        elif key in ("right", "left", "l", "h"):
            self.goto(self.current + {"right": 1, "left": -1, "l": 10, "h": -10}[key])
            full = True
        elif key == " ":
            self.save()
        elif key == "b":
            self.boundary = not self.boundary
            self.starts = {}
            self.message = "boundary mode: choose a class, click the slice where it starts" if self.boundary else ""
        elif key == "a":
            n = self.accept_prefill()
            self.message = f"accepted {n} predicted labels"
            changed = self._keys(self.subject)
        elif key == "c":
            self.message = f"copied ED labels to {self.copy_ed_to_es()} ES slices"
            changed = self._keys(self.subject)
        elif key == "z":
            changed = self.undo()
        elif key == "f":
            self.heart_view = not self.heart_view
            self.message = "heart view" if self.heart_view else "full field of view"
            full = True
        elif key in ("up", "down", "+", "-", "0"):
            if key == "0":
                self.level, self.contrast = 0.0, 1.0
            elif key in ("up", "down"):
                self.level += 20.0 if key == "up" else -20.0
            else:
                self.contrast *= 1.25 if key == "+" else 0.8
            full = True
        elif key == "?":
            self.show_help = not self.show_help
            full = True
        else:
            return
        self.refresh(changed, full)

    def on_click(self, event: Any) -> None:
        if self.fig is None or event.inaxes is None or event.inaxes not in self._slot:
            return
        phase, j = self._slot[event.inaxes]
        if j >= len(self.row_keys(phase)):
            return
        if event.button == 3:  # right-click: the heart is here, for every slice of this subject
            self.centres[self.subject] = (float(event.ydata), float(event.xdata))
            self.message = "heart centre set"
            self.refresh([], True)
            return
        changed: list[tuple] = []
        if self.cls is None:
            self.message = "press 1-5 to choose a class first"
        elif self.boundary:
            marks = self.starts.setdefault(phase, {})
            marks[self.cls] = j
            keys = self.row_keys(phase)
            changed = self._set(dict(zip(keys, levels_from_starts(marks, len(keys)))))
        else:
            changed = self.set_label(phase, j, self.cls)
        self.refresh(changed, False)

    # ----- drawing -----
    def _make_figure(self) -> None:
        import matplotlib.pyplot as plt

        n = max(len(g) for phases in self.rows.values() for g in phases.values())
        # Small at first: a Tk window grows to the screen (_fit_to_screen) but does not shrink below its start.
        self.fig = plt.figure(figsize=(min(1.9 * n, 19.0), 5.2) if plt.get_backend().lower() == "agg" else (6, 3))
        grid = self.fig.add_gridspec(3, n, height_ratios=[0.28, 1, 1], hspace=0.06, wspace=0.04,
                                     left=0.01, right=0.99, top=0.99, bottom=0.01)
        self.status_ax = self.fig.add_subplot(grid[0, :])
        self.status_ax.set_xticks([])
        self.status_ax.set_yticks([])
        for spine in self.status_ax.spines.values():  # the white frame stays: a blit repaints it under new text
            spine.set_visible(False)
        # Labels and the status line are "animated": the full draw leaves them out, _on_draw keeps the pixels
        # beneath them and draws them on top, and an event repaints just those strips (blitting).
        self.status_text = self.status_ax.text(0.0, 0.5, "", fontsize=9, va="center", family="monospace",
                                               animated=True)
        self._slot: dict[Any, tuple[str, int]] = {}
        self.panels: dict[tuple[str, int], dict[str, Any]] = {}
        for r, phase in enumerate(PHASES):
            for j in range(n):
                ax = self.fig.add_subplot(grid[r + 1, j])
                ax.set_xticks([])
                ax.set_yticks([])
                im = ax.imshow(np.zeros((2, 2), np.uint8), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                label = ax.text(0.5, 0.98, "", transform=ax.transAxes, ha="center", va="top", fontsize=8,
                                color="white", animated=True, clip_on=True,
                                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "edgecolor": "none"})
                if j == 0:  # the row's phase, once (every text in a panel is redrawn with it)
                    ax.text(0.02, 0.02, phase, transform=ax.transAxes, fontsize=8, color="yellow", va="bottom")
                self._slot[ax] = (phase, j)
                self.panels[(phase, j)] = {"ax": ax, "image": im, "label": label}
        self.help_text = self.fig.text(0.5, 0.5, __doc__.split("\n\n")[2], ha="center", va="center", fontsize=10,
                                       wrap=True, visible=False,
                                       bbox={"facecolor": "lightyellow", "alpha": 0.95, "pad": 12})
        self._fit_to_screen()
        self._backgrounds: dict[Any, Any] = {}
        self.fig.canvas.mpl_connect("draw_event", self._on_draw)
        self.fig.canvas.mpl_connect("key_press_event", self.on_key)
        self.fig.canvas.mpl_connect("button_press_event", self.on_click)
        self.refresh([], True)

    def _fit_to_screen(self) -> None:
        """Panels as large as the screen allows: the window takes the screen's width and most of its height
        (interactive Tk backends; other backends keep the default size)."""
        window = getattr(getattr(self.fig.canvas, "manager", None), "window", None)
        if window is None or not hasattr(window, "winfo_screenwidth"):
            return
        # Tk draws figure inches at dpi x device pixel ratio (its points-per-pixel scaling), as matplotlib does.
        dpi = self.fig.dpi * max(round(window.winfo_fpixels("1i") / 96, 2), 0.5)
        width, height = window.winfo_screenwidth() * 0.98 / dpi, window.winfo_screenheight() * 0.85 / dpi
        n = len(self.panels) // len(PHASES)
        # square panels: two rows of n, plus the status line
        height = min(height, 2.35 * width / n + 0.8)
        self.fig.set_size_inches(width, height, forward=True)

    def _label_style(self, phase: str, j: int) -> tuple[str, str]:
        lab = self.label_of(phase, j)
        pred = self.pred.get(self.row_keys(phase)[j])
        text = f"{j}: {lab.upper() if lab else '--'}"
        if pred:
            text += f" (P {pred.upper()})"
            return text, COLORS["unlabelled"] if lab is None else COLORS["agree" if lab == pred else "disagree"]
        return text, COLORS["labelled" if lab else "unlabelled"]

    def refresh(self, changed: list[tuple], full: bool) -> None:
        """Redraw: everything after a page or view change (``full``), else only the changed slices' labels
        and the status line, blitted."""
        if self.fig is None:
            return
        self.status_text.set_text(self.status())
        if full:
            self._fill_page()
            self.help_text.set_visible(self.show_help)
            self.fig.canvas.draw_idle()
            return
        keys = set(changed)
        dirty = [(self.status_ax, self.status_text)]
        for phase in PHASES:
            for j, k in enumerate(self.row_keys(phase)):
                if k in keys:
                    text, color = self._label_style(phase, j)
                    panel = self.panels[(phase, j)]
                    panel["label"].set_text(text)
                    panel["label"].set_color(color)
                    dirty.append((panel["ax"], panel["label"]))
        canvas = self.fig.canvas
        if self.show_help or not getattr(canvas, "supports_blit", False) or \
                any(ax not in self._backgrounds for ax, _ in dirty):
            canvas.draw_idle()
            return
        for ax, artist in dirty:
            box, background = self._backgrounds[ax]
            canvas.restore_region(background)
            ax.draw_artist(artist)
            canvas.blit(box)

    def _strip(self, ax: Any) -> Any:
        """The display region an axes' animated text occupies: the status axes, or a panel's top strip."""
        from matplotlib.transforms import Bbox

        box = ax.bbox
        if ax is self.status_ax:
            return Bbox(box.get_points().copy())
        return Bbox.from_extents(box.x0, box.y1 - max(0.18 * box.height, 16.0), box.x1, box.y1)

    def _on_draw(self, event: Any) -> None:
        """After a full draw: keep the pixels under every animated text, then draw the texts on top."""
        canvas = self.fig.canvas
        if not getattr(canvas, "supports_blit", False):
            return
        self._backgrounds = {}
        shown = [(self.status_ax, self.status_text)] + [
            (p["ax"], p["label"]) for p in self.panels.values() if p["ax"].get_visible()]
        for ax, _ in shown:
            box = self._strip(ax)
            self._backgrounds[ax] = (box, canvas.copy_from_bbox(box))
        for ax, artist in shown:
            ax.draw_artist(artist)

    def _fill_page(self) -> None:
        imgs = self.images(self.subject)
        lo, hi = 127.5 - 127.5 / self.contrast - self.level, 127.5 + 127.5 / self.contrast - self.level
        for (phase, j), panel in self.panels.items():
            ax = panel["ax"]
            stack = imgs.get(phase, [])
            if j >= len(stack):
                ax.set_visible(False)
                continue
            ax.set_visible(True)
            img = stack[j]
            panel["image"].set_data(img)
            panel["image"].set_extent((-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
            panel["image"].set_clim(lo, hi)
            box = self.view_box(phase, j)
            ax.set_xlim(*(box[:2] if box else (-0.5, img.shape[1] - 0.5)))
            ax.set_ylim(*(box[2:] if box else (img.shape[0] - 0.5, -0.5)))
            text, color = self._label_style(phase, j)
            panel["label"].set_text(text)
            panel["label"].set_color(color)


def main(args: Any) -> int:
    """Entry point of `saxlevel label`."""
    import matplotlib.pyplot as plt

    index_path = Path(args.index)
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} not found: run `dvc repro to_png` first or pass --index")
    predictions = io.read_table(args.predictions) if args.predictions else None
    lab = Labeler(io.read_table(index_path), args.labels, predictions, user=args.user,
                  review=getattr(args, "review", None))
    print(__doc__.split("\n\n")[2])
    print(f"resuming at subject {lab.current + 1}/{len(lab.subjects)}; labels go to {args.labels}")
    if plt.get_backend().lower() == "agg":
        print("no interactive matplotlib backend (set MPLBACKEND, e.g. TkAgg or QtAgg, on a machine with a screen)")
        return 1
    plt.show()
    if lab.unsaved:
        lab.save()
    return 0
