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


def bootstrap_counts(subjects: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A subject-level bootstrap: (resamples, n_subjects) how often each resample draws each subject (drawn with
    replacement), and each row's subject index into those columns."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(subjects, return_inverse=True)
    draws = rng.integers(0, len(uniq), size=(resamples, len(uniq)))
    counts = np.stack([np.bincount(d, minlength=len(uniq)) for d in draws])
    return counts.astype(float), inverse


def weighted_confusions(y: np.ndarray, pred: np.ndarray, counts: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """(R, 5, 5) confusion matrices of R subject-level resamples (``bootstrap_counts``; rows true, columns
    predicted): each subject's confusion counts once per draw."""
    k = len(CLASSES)
    per_subject = np.zeros((counts.shape[1], k * k))
    np.add.at(per_subject, (subject, y * k + pred), 1.0)
    return (counts @ per_subject).reshape(len(counts), k, k)


def _auc_ovr_weighted(score: np.ndarray, positive: np.ndarray, counts: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """Binary AUC (Mann-Whitney, ties count 1/2) under each of R subject-level resamples (``bootstrap_counts``);
    nan where undefined.

    With c the resample's subject counts, the Mann-Whitney numerator is c' M c, where M[a, b] counts the pairs
    (a positive of subject a, a negative of subject b) in which the positive scores higher, ties 1/2: one pass
    over the sorted rows builds M, then every resample is two small matrix products. All terms are multiples of
    1/2, so the sums are exact and equal the row-by-row Mann-Whitney sums."""
    n_subjects = counts.shape[1]
    order = np.argsort(score, kind="stable")
    s, pos, subj = score[order], positive[order], subject[order]
    negatives = np.zeros((len(s), n_subjects))
    negatives[np.arange(len(s)), subj] = ~pos
    cum = np.cumsum(negatives, axis=0)  # (rows, subjects): negatives of each subject at or below each row
    _, start, size = np.unique(s, return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(start)), size)
    first, last = start[group][pos], (start[group] + size[group] - 1)[pos]
    below = np.where((first > 0)[:, None], cum[np.maximum(first - 1, 0)], 0.0)
    beaten = below + 0.5 * (cum[last] - below)  # per positive: each subject's negatives it beats, ties 1/2
    pairs = np.zeros((n_subjects, n_subjects))
    np.add.at(pairs, subj[pos], beaten)
    num = ((counts @ pairs) * counts).sum(axis=1)
    per_subject = np.bincount(subject, weights=positive, minlength=n_subjects), \
        np.bincount(subject, weights=~positive, minlength=n_subjects)
    den = (counts @ per_subject[0]) * (counts @ per_subject[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def bootstrap_ci(y, pred, probs, subjects, resamples: int, seed: int) -> dict:
    """Subject-level bootstrap 95 % intervals for accuracy, weighted AUC, each F1 and SOTD.

    Vectorised: every resample is a vector of subject counts (bootstrap_counts), so confusion matrices and
    AUCs of all resamples come from a few matrix products instead of R scikit-learn calls.
    """
    counts, subject = bootstrap_counts(np.asarray(subjects), resamples, seed)
    cm = weighted_confusions(y, pred, counts, subject)
    tp = np.einsum("rkk->rk", cm)
    fp, fn = cm.sum(axis=1) - tp, cm.sum(axis=2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    i, j = np.indices((len(CLASSES), len(CLASSES)))
    samples = {"accuracy": tp.sum(1) / cm.sum(axis=(1, 2)), "sotd": cm[:, np.abs(i - j) >= 2].sum(1),
               **{f"f1_{c}": f1[:, k] for k, c in enumerate(CLASSES)}}
    support = cm.sum(axis=2)  # weighted class counts per resample
    aucs = np.stack([_auc_ovr_weighted(probs[:, k], y == k, counts, subject) for k in LABELS], axis=1)
    valid = ~np.isnan(aucs) & (support > 0)
    samples["auc_weighted"] = (np.where(valid, aucs, 0) * support).sum(1) / np.where(valid, support, 0).sum(1)
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in samples.items()}


def paired_bootstrap(y, pred_a, pred_b, subjects, resamples: int, seed: int) -> dict:
    """Accuracy difference A - B with a subject-level paired bootstrap 95 % CI and two-sided p."""
    counts, subject = bootstrap_counts(np.asarray(subjects), resamples, seed)
    diff_rows = (y == pred_a).astype(float) - (y == pred_b).astype(float)
    diffs: np.ndarray = (counts @ np.bincount(subject, weights=diff_rows)) / (counts @ np.bincount(subject))
    observed = float(diff_rows.mean())
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"accuracy_diff": observed, "ci95": [float(lo), float(hi)], "p_value": p,
            "significant": bool(lo > 0 or hi < 0)}
