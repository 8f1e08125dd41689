"""Table 5 metrics with scikit-learn, always in anatomical class order, plus SOTD and bootstrap CIs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from saxlevel import CLASS_INDEX, CLASSES

LABELS = list(range(len(CLASSES)))
# Paper section 4: merging ap/mid/bs into "in" gives a 3-class problem (oap / in / obs).
THREE_CLASS = np.array([0, 1, 1, 1, 2])


def sotd(confusion: np.ndarray) -> int:
    """Sum of the confusion entries outside the tridiagonal (|true - predicted| >= 2)."""
    c = np.asarray(confusion)
    i, j = np.indices(c.shape)
    return int(c[np.abs(i - j) >= 2].sum())


def weighted_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest AUC per class present, weighted by class support (sklearn 'weighted')."""
    present = [k for k in LABELS if (y == k).any()]
    if len(present) < 2:
        return float("nan")
    aucs, weights = [], []
    for k in present:
        if (y == k).all():
            continue
        aucs.append(roc_auc_score((y == k).astype(int), probs[:, k]))
        weights.append(int((y == k).sum()))
    return float(np.average(aucs, weights=weights))


def split_metrics(y: np.ndarray, pred: np.ndarray, probs: np.ndarray, stack_ids: np.ndarray) -> dict:
    """All Table 5 metrics (+ SOTD, 3-class error, stack accuracy) for one split."""
    absent = [CLASSES[k] for k in LABELS if not (y == k).any()]
    if absent:
        warnings.warn(f"class(es) {absent} absent from this split: their F1 is 0 and AUC skips them", stacklevel=2)
    cm = confusion_matrix(y, pred, labels=LABELS)
    f1 = f1_score(y, pred, labels=LABELS, average=None, zero_division=0)
    right = pd.Series(y == pred).groupby(stack_ids).all()
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "auc_weighted": weighted_auc(y, probs),
        "f1": {c: float(f) for c, f in zip(CLASSES, f1)},
        "sotd": sotd(cm),
        "error_3class": float(np.mean(THREE_CLASS[y] != THREE_CLASS[pred])),
        "stack_accuracy": float(right.mean()),
        "confusion": cm.tolist(),
        "n_images": int(len(y)),
        "n_stacks": int(len(right)),
    }


def encode(labels) -> np.ndarray:
    return np.asarray([CLASS_INDEX[x] for x in labels], dtype=int)


def bootstrap_ci(y, pred, probs, subjects, stack_ids, resamples: int, seed: int) -> dict:
    """Subject-level bootstrap 95 % intervals for accuracy, weighted AUC, each F1 and SOTD."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(subjects)
    rows_of = {s: np.nonzero(subjects == s)[0] for s in uniq}
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        pick = np.concatenate([rows_of[s] for s in rng.choice(uniq, size=len(uniq), replace=True)])
        yb, pb = y[pick], pred[pick]
        cm = confusion_matrix(yb, pb, labels=LABELS)
        f1 = f1_score(yb, pb, labels=LABELS, average=None, zero_division=0)
        vals = {"accuracy": float(np.mean(yb == pb)), "auc_weighted": weighted_auc(yb, probs[pick]),
                "sotd": float(sotd(cm)), **{f"f1_{c}": float(f) for c, f in zip(CLASSES, f1)}}
        for k, v in vals.items():
            samples.setdefault(k, []).append(v)
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in samples.items()}


def paired_bootstrap(y, pred_a, pred_b, subjects, resamples: int, seed: int) -> dict:
    """Accuracy difference A - B with a subject-level paired bootstrap 95 % CI and two-sided p."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(subjects)
    rows_of = {s: np.nonzero(subjects == s)[0] for s in uniq}
    diffs = []
    for _ in range(resamples):
        pick = np.concatenate([rows_of[s] for s in rng.choice(uniq, size=len(uniq), replace=True)])
        diffs.append(np.mean(y[pick] == pred_a[pick]) - np.mean(y[pick] == pred_b[pick]))
    diffs = np.asarray(diffs)
    observed = float(np.mean(y == pred_a) - np.mean(y == pred_b))
    p = float(min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"accuracy_diff": observed, "ci95": [float(lo), float(hi)], "p_value": p,
            "significant": bool(lo > 0 or hi < 0)}
