"""The paper's figures as PNGs: learning curves (Fig. 2), stack panels (Fig. 3), confusion
matrices with the tridiagonal outlined (Fig. 4) and SOTD bars grouped by backbone (Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402

from saxlevel import CLASSES  # noqa: E402
from saxlevel.catalog import display  # noqa: E402
from saxlevel.ingest.images import load_png  # noqa: E402


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def learning_curves(curves: dict[str, pd.DataFrame], path: Path) -> None:
    """Figure 2: train and validation loss per epoch, one panel per model."""
    n = len(curves)
    cols = min(5, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    for ax, (name, c) in zip(axes.flat, curves.items()):
        ax.plot(c.epoch, c.train_loss, label="train")
        ax.plot(c.epoch, c.val_loss, label="validation")
        best = int(c.val_loss.idxmin())
        ax.axvline(c.epoch[best], color="grey", ls=":", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Learning curves (dotted: epoch kept, lowest validation loss)", fontsize=10)
    _save(fig, path)


def stack_panels(stack: pd.DataFrame, title: str, path: Path, show_truth: bool = True) -> None:
    """Figure 3: a stack apex->base; slice index, ground truth and prediction above each image,
    green when right and red when wrong (``show_truth=False``: slice index and prediction only, with the AHA
    region and segments below where the table has aha_region and aha_segments columns)."""
    stack = stack.sort_values("order")
    n = len(stack)
    cols = min(n, 7)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.3 * rows), squeeze=False)
    for ax, r in zip(axes.flat, stack.itertuples()):
        ax.imshow(load_png(r.path), cmap="gray")
        if show_truth:
            ax.set_title(f"{r.order}: ({r.true.upper()}) (P = {r.pred.upper()})", fontsize=8,
                         color="green" if r.true == r.pred else "red")
        elif hasattr(r, "aha_region"):  # predict: the AHA region (17-segment model) under the level
            segments = f" {r.aha_segments}" if r.aha_segments else ""
            ax.set_title(f"{r.order}: {r.pred.upper()}\n{r.aha_region}{segments}", fontsize=9)
        else:
            ax.set_title(f"{r.order}: {r.pred.upper()}", fontsize=9)
        ax.axis("off")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def _confusion_axes(ax, cm: np.ndarray, title: str) -> None:
    ax.imshow(cm, cmap="Blues")
    k = len(CLASSES)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    # Outline the tridiagonal band |true - predicted| <= 1: errors outside it are what SOTD counts.
    ax.add_patch(Polygon(tridiagonal_outline(k), closed=True, fill=False, ec="red", lw=1.2))
    ax.set_xticks(range(k), CLASSES, fontsize=7)
    ax.set_yticks(range(k), CLASSES, fontsize=7)
    ax.set_xlabel("predicted", fontsize=7)
    ax.set_ylabel("true", fontsize=7)
    ax.set_title(title, fontsize=8)


def tridiagonal_outline(k: int) -> list[tuple[float, float]]:
    """Polygon (image x = column, y = row) around the cells with |row - column| <= 1."""
    right = [min(i + 1, k - 1) + 0.5 for i in range(k)]
    left = [max(i - 1, 0) - 0.5 for i in range(k)]
    pts = [pt for i in range(k) for pt in ((right[i], i - 0.5), (right[i], i + 0.5))]
    pts += [pt for i in range(k - 1, -1, -1) for pt in ((left[i], i + 0.5), (left[i], i - 0.5))]
    return pts


def confusion_grid(confusions: dict[str, np.ndarray], path: Path, suptitle: str) -> None:
    """Figure 4: one confusion matrix per model, tridiagonal outlined in red."""
    n = len(confusions)
    cols = min(5, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.9 * rows), squeeze=False)
    from saxlevel.evaluation.metrics import sotd

    for ax, (name, cm) in zip(axes.flat, confusions.items()):
        _confusion_axes(ax, np.asarray(cm), f"{name} (SOTD {sotd(np.asarray(cm))})")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(suptitle, fontsize=10)
    _save(fig, path)


def sotd_bars(table: pd.DataFrame, path: Path) -> None:
    """Figure 5: SOTD per model, grouped by backbone (test split, argmax decoding)."""
    backbones = list(dict.fromkeys(table["backbone"]))
    heads = list(dict.fromkeys(table["head"]))
    width = 0.8 / len(heads)
    fig, ax = plt.subplots(figsize=(1.8 * len(backbones) + 2, 3.2))
    for i, h in enumerate(heads):
        vals = [table[(table["backbone"] == b) & (table["head"] == h)]["sotd"].sum() for b in backbones]
        ax.bar(np.arange(len(backbones)) + i * width, vals, width, label=display(h))
    ax.set_xticks(np.arange(len(backbones)) + width * (len(heads) - 1) / 2,
                  [display(b) for b in backbones], fontsize=8)
    ax.set_ylabel("SOTD (test)")
    ax.legend(fontsize=7, ncols=len(heads))
    ax.set_title("Sum of confusion entries outside the tridiagonal", fontsize=9)
    _save(fig, path)
