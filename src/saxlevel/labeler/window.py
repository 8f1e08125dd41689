"""The labeller's matplotlib window: keys, clicks and drawing (blitted) over a Session, and `saxlevel label`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saxlevel import CLASSES, io
from saxlevel.labeler.session import COLORS, PHASES, Session, levels_from_starts


def keys_help() -> str:
    """The keys paragraph of the labeller's documentation (the package docstring), shown by ? and at start."""
    from saxlevel import labeler

    return str(labeler.__doc__).split("\n\n")[2]


class Labeler(Session):
    """The labelling session with its window: event handlers and drawing (testable without a screen)."""

    def __init__(self, index: pd.DataFrame, labels_path: str | Path, predictions: pd.DataFrame | None = None,
                 user: str | None = None, autosave_every: int = 10, show: bool = True,
                 review: str | None = None) -> None:
        super().__init__(index, labels_path, predictions, user, autosave_every, review)
        self.fig: Any = None
        if show:
            self._make_figure()

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
        self.help_text = self.fig.text(0.5, 0.5, keys_help(), ha="center", va="center", fontsize=10,
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
    print(keys_help())
    print(f"resuming at subject {lab.current + 1}/{len(lab.subjects)}; labels go to {args.labels}")
    if plt.get_backend().lower() == "agg":
        print("no interactive matplotlib backend (set MPLBACKEND, e.g. TkAgg or QtAgg, on a machine with a screen)")
        return 1
    plt.show()
    if lab.unsaved:
        lab.save()
    return 0
