"""Benchmark: labeler event latency, the previous labeler and the current one side by side in one run.

Both are driven through their real event handlers (matplotlib key and button events processed by the
canvas) on a real Agg canvas at their on-screen figure size, on one synthetic subject with a 25-slice
ED and a 25-slice ES stack (256 x 192 PNGs). Per event type it prints the median and 95th percentile in
milliseconds, including the drawing each event triggers:

    python benchmarks/labeler_latency.py [--slices 25] [--repeat 20]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import types
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backend_bases import KeyEvent, MouseEvent  # noqa: E402

from saxlevel import labeler  # noqa: E402
from saxlevel.ingest import images

REPO = Path(__file__).resolve().parents[1]
# The last commit with the previous labeler (one stack per screen, every event reloads and redraws all).
PREVIOUS = "4770be15f45f02f96312a6ea073edf64f222abfb"


def previous_labeler() -> types.ModuleType:
    """The previous labeler module, loaded from the repository's history (no copy kept in the tree)."""
    try:
        source = subprocess.run(["git", "show", f"{PREVIOUS}:src/saxlevel/labeler.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"cannot read the previous labeler from git history ({exc}): run in a full clone") from None
    module = types.ModuleType("labeler_previous")
    exec(compile(source, f"{PREVIOUS[:7]}:src/saxlevel/labeler.py", "exec"), module.__dict__)
    return module


def make_index(folder: Path, slices: int) -> pd.DataFrame:
    """Two subjects, ED and ES stacks of ``slices`` 256 x 192 PNGs with a moving bright disc."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :192]
    rows = []
    for s in (1, 2):
        for phase, frame, r in (("ED", 1, 30), ("ES", 9, 18)):
            for k in range(slices):
                img = rng.integers(0, 60, (256, 192)).astype(np.uint8)
                img[(yy - 130) ** 2 + (xx - 90) ** 2 < r * r] = 220
                path = folder / f"{s}_{phase}_{k:02d}.png"
                images.save_png(path, img)
                rows.append({"subject": s, "phase": phase, "frame": frame, "series": f"sax_{k}", "order": k,
                             "path": str(path), "pixel_spacing": 1.4})
    return pd.DataFrame(rows)


def timed(fig, event) -> float:
    t0 = time.perf_counter()
    fig.canvas.callbacks.process(event.name, event)
    return (time.perf_counter() - t0) * 1000


def key(fig, k: str) -> KeyEvent:
    return KeyEvent("key_press_event", fig.canvas, k)


def click(fig, ax) -> MouseEvent:
    x, y = ax.transAxes.transform((0.5, 0.5))
    return MouseEvent("button_press_event", fig.canvas, x, y, button=1)


def measure(lab, axes_of, repeat: int) -> dict[str, list[float]]:
    """Event type -> latencies (ms). ``axes_of(j)`` is the axes of slice j in the first stack row."""
    fig = lab.fig
    fig.canvas.draw()
    out: dict[str, list[float]] = {"choose class (key)": [], "label a slice (click)": [],
                                   "boundary fill (click)": [], "next/previous page (key)": []}
    for i in range(repeat):
        out["choose class (key)"].append(timed(fig, key(fig, str(1 + i % 5))))
        out["label a slice (click)"].append(timed(fig, click(fig, axes_of(i % 20))))
    timed(fig, key(fig, "b"))
    for i in range(repeat):
        timed(fig, key(fig, str(1 + i % 5)))
        out["boundary fill (click)"].append(timed(fig, click(fig, axes_of(i % 20))))
    timed(fig, key(fig, "b"))
    for i in range(repeat):
        out["next/previous page (key)"].append(timed(fig, key(fig, "right" if i % 2 == 0 else "left")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = make_index(Path(tmp), args.slices)
        before = previous_labeler().Labeler(index, Path(tmp) / "a.csv", autosave_every=10**6)
        t_old = measure(before, lambda j: before.axes[j], args.repeat)
        after = labeler.Labeler(index, Path(tmp) / "b.csv", autosave_every=10**6)
        t_new = measure(after, lambda j: after.panels[("ED", j)]["ax"], args.repeat)
    print(f"labeler event latency, {args.slices}-slice stacks, Agg canvas, {args.repeat} events each "
          f"(previous: one stack per screen; current: ED and ES of a subject, {2 * args.slices} panels)")
    print(f"{'event':<28} {'previous median/p95 ms':>24} {'current median/p95 ms':>23} {'speed-up':>9}")
    for name in t_old:
        a, b = np.array(t_old[name]), np.array(t_new[name])
        print(f"{name:<28} {np.median(a):11.0f} / {np.percentile(a, 95):5.0f}      "
              f"{np.median(b):10.1f} / {np.percentile(b, 95):5.1f} {np.median(a) / np.median(b):8.0f}x")


if __name__ == "__main__":
    main()
