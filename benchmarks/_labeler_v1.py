"""The labeler as it was before issue 13 (one stack per screen, every event reloads and redraws all), kept only
so benchmarks/labeler_latency.py can measure it side by side with the current one.

Original docstring: `saxlevel label`: the paper's matplotlib slice labeler (section 2.2), made faster to use.

One stack (subject, phase) at a time, slices apex->base with their index and label above each.
Keys: 1-5 choose the class (oap, ap, mid, bs, obs); a click labels a slice with it; b toggles
boundary mode, where a click sets where the chosen level *starts* and the whole stack is filled
in (levels never go backwards from apex to base); a accepts the model's pre-filled labels of the
stack; left/right move between stacks, h/l jump by 10; space saves. Labels autosave every few
changes and when leaving a stack, atomically, with a timestamped backup of the previous file.
Each label records who and when. On start it reloads the file and resumes at the first stack with
an unlabeled slice.
"""

from __future__ import annotations

import getpass
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saxlevel import CLASSES, LABEL_KEY, STACK_KEY, io
from saxlevel.images import load_png

KEY = LABEL_KEY
COLUMNS = KEY + ["label", "labeled_by", "labeled_at"]
KEEP_BACKUPS = 5


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


class Labeler:
    """The labeling session: state, event handlers and drawing (testable without a screen)."""

    def __init__(self, index: pd.DataFrame, labels_path: str | Path, predictions: pd.DataFrame | None = None,
                 user: str | None = None, autosave_every: int = 10, show: bool = True) -> None:
        self.labels_path = Path(labels_path)
        self.user = user or os.environ.get("USER") or getpass.getuser()
        self.autosave_every = autosave_every
        self.stacks = [g.sort_values("order").reset_index(drop=True)
                       for _, g in index.groupby(STACK_KEY, sort=True)]
        if not self.stacks:
            raise ValueError("the index lists no images to label")
        self.labels: dict[tuple, dict] = {}
        if self.labels_path.exists():
            old = pd.read_csv(self.labels_path)
            for r in old.to_dict("records"):
                self.labels[(int(r["subject"]), str(r["series"]), int(r["frame"]))] = {
                    "label": r["label"], "labeled_by": r.get("labeled_by", ""), "labeled_at": r.get("labeled_at", "")}
        self.pred: dict[tuple, str] = {}
        if predictions is not None:
            for r in predictions.to_dict("records"):
                self.pred[(int(r["subject"]), str(r["series"]), int(r["frame"]))] = str(r["pred"])
        self.current = self._first_unfinished()
        self.cls: int | None = None
        self.boundary = False
        self.starts: dict[int, int] = {}
        self.unsaved = 0
        self.message = ""
        self.fig: Any = None
        if show:
            self._make_figure()

    # ----- state -----
    def _key(self, row) -> tuple:
        return (int(row["subject"]), str(row["series"]), int(row["frame"]))

    def _first_unfinished(self) -> int:
        for i, st in enumerate(self.stacks):
            if any(self._key(r) not in self.labels for r in st.to_dict("records")):
                return i
        return 0

    @property
    def stack(self) -> pd.DataFrame:
        return self.stacks[self.current]

    def label_of(self, j: int) -> str | None:
        rec = self.labels.get(self._key(self.stack.iloc[j]))
        return rec["label"] if rec else None

    def set_label(self, j: int, cls: int) -> None:
        self.labels[self._key(self.stack.iloc[j])] = {"label": CLASSES[cls], "labeled_by": self.user,
                                                      "labeled_at": _now()}
        self.unsaved += 1
        if self.unsaved >= self.autosave_every:
            self.save()

    def goto(self, i: int) -> None:
        if self.unsaved:
            self.save()
        self.current = int(np.clip(i, 0, len(self.stacks) - 1))
        self.starts = {}

    def accept_prefill(self) -> int:
        """Take the model's prediction for every unlabeled slice of this stack; returns how many."""
        n = 0
        for j, r in enumerate(self.stack.to_dict("records")):
            k = self._key(r)
            if k not in self.labels and k in self.pred:
                self.set_label(j, CLASSES.index(self.pred[k]))
                n += 1
        return n

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

    # ----- events -----
    def on_key(self, event) -> None:
        key = event.key
        if key in {"1", "2", "3", "4", "5"}:
            self.cls = int(key) - 1
            self.message = f"class {CLASSES[self.cls]}"
        elif key == "right":
            self.goto(self.current + 1)
        elif key == "left":
            self.goto(self.current - 1)
        elif key == "l":
            self.goto(self.current + 10)
        elif key == "h":
            self.goto(self.current - 10)
        elif key == " ":
            self.save()
        elif key == "b":
            self.boundary = not self.boundary
            self.starts = {}
            self.message = "boundary mode: choose a class, click the slice where it starts" if self.boundary else ""
        elif key == "a":
            self.message = f"accepted {self.accept_prefill()} predicted labels"
        self.draw()

    def on_click(self, event) -> None:
        if self.fig is None or event.inaxes is None or event.inaxes not in self.axes:
            return
        j = self.axes.index(event.inaxes)
        if j >= len(self.stack):
            return
        if self.cls is None:
            self.message = "press 1-5 to choose a class first"
        elif self.boundary:
            self.starts[self.cls] = j
            for k, c in enumerate(levels_from_starts(self.starts, len(self.stack))):
                self.set_label(k, c)
        else:
            self.set_label(j, self.cls)
        self.draw()

    # ----- drawing -----
    def _make_figure(self) -> None:
        import matplotlib.pyplot as plt

        n = max(len(s) for s in self.stacks)
        cols = min(n, 7)
        rows = int(np.ceil(n / cols))
        self.fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.4 * rows + 0.6), squeeze=False)
        self.axes = list(axes.flat)
        self.fig.canvas.mpl_connect("key_press_event", self.on_key)
        self.fig.canvas.mpl_connect("button_press_event", self.on_click)
        self.draw()

    def draw(self) -> None:
        if self.fig is None:
            return
        st = self.stack
        for j, ax in enumerate(self.axes):
            ax.clear()
            ax.axis("off")
            if j >= len(st):
                continue
            r = st.iloc[j]
            ax.imshow(load_png(r["path"]), cmap="gray")
            lab = self.label_of(j)
            pred = self.pred.get(self._key(r))
            text = f"{j}: {lab.upper() if lab else '--'}"
            color = "black"
            if pred:
                text += f" (P = {pred.upper()})"
                color = "grey" if lab is None else ("green" if lab == pred else "red")
            ax.set_title(text, fontsize=8, color=color)
        done = sum(self.label_of(j) is not None for j in range(len(st)))
        mode = "BOUNDARY" if self.boundary else "slice"
        cls = CLASSES[self.cls] if self.cls is not None else "-"
        self.fig.suptitle(f"stack {self.current + 1}/{len(self.stacks)}: subject {st.subject.iloc[0]} "
                          f"{st.phase.iloc[0]} | {done}/{len(st)} labelled | class {cls} | {mode} mode | "
                          f"{self.message}", fontsize=9)
        self.fig.canvas.draw_idle()


def main(args) -> int:
    """Entry point of `saxlevel label`."""
    import matplotlib.pyplot as plt

    index_path = Path(args.index)
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} not found: run `dvc repro to_png` first or pass --index")
    predictions = pd.read_csv(args.predictions) if args.predictions else None
    lab = Labeler(pd.read_csv(index_path), args.labels, predictions, user=args.user)
    print(__doc__.split("\n\n")[1])
    print(f"resuming at stack {lab.current + 1}/{len(lab.stacks)}; labels go to {args.labels}")
    if plt.get_backend().lower() == "agg":
        print("no interactive matplotlib backend (set MPLBACKEND, e.g. TkAgg or QtAgg, on a machine with a screen)")
        return 1
    plt.show()
    if lab.unsaved:
        lab.save()
    return 0
