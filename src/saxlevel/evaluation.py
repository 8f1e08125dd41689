"""Evaluate prediction files: Table 5 per model and decoding, CIs, CNN vs CNN-RNN comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel import CLASSES, decode, metrics

PROB_COLUMNS = [f"p_{c}" for c in CLASSES]
SPLITS = ("test", "val")


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions CSV; a missing file names the stage that makes it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro train@{path.stem}` (is the model in the grid?)")
    return pd.read_csv(path)


def decoded(pred: pd.DataFrame, how: str) -> np.ndarray:
    """Level indices after decoding each (split, subject, phase) stack."""
    stack = (pred.split + "/" + pred.subject.astype(str) + "/" + pred.phase).to_numpy()
    return decode.decode_stacks(pred[PROB_COLUMNS].to_numpy(), stack, pred.order.to_numpy(), how)


def evaluate_model(pred: pd.DataFrame, resamples: int, seed: int) -> dict:
    """{"argmax": {"test": ..., "val": ...}, "ordered": {...}} with CIs on every split."""
    out: dict = {}
    for how in decode.DECODERS:
        levels = decoded(pred, how)
        out[how] = {}
        for split in SPLITS:
            m = (pred.split == split).to_numpy()
            if not m.any():
                continue
            part = pred[m]
            y = metrics.encode(part["true"])
            probs = part[PROB_COLUMNS].to_numpy()
            stack_ids = (part.subject.astype(str) + "/" + part.phase).to_numpy()
            res = metrics.split_metrics(y, levels[m], probs, stack_ids)
            if resamples:
                res["ci95"] = metrics.bootstrap_ci(y, levels[m], probs, part.subject.to_numpy(), resamples, seed)
            out[how][split] = res
    return out


def compare(pred_a: pd.DataFrame, pred_b: pd.DataFrame, how: str, resamples: int, seed: int) -> dict:
    """Paired subject-level bootstrap of the test accuracy difference A - B (same images)."""
    key = ["split", "subject", "phase", "order"]
    a = pred_a[pred_a.split == "test"].sort_values(key).reset_index(drop=True)
    b = pred_b[pred_b.split == "test"].sort_values(key).reset_index(drop=True)
    if not a[key].equals(b[key]):
        raise ValueError("the two prediction files cover different test images")
    y = metrics.encode(a["true"])
    return metrics.paired_bootstrap(y, decoded(a, how), decoded(b, how), a.subject.to_numpy(), resamples, seed)


def table_rows(name: str, backbone: str, head: str, result: dict) -> list[dict]:
    """Readable Table 5 rows (test split), one per decoding, with CI columns."""
    rows = []
    for how, per_split in result.items():
        t = per_split.get("test")
        if t is None:
            continue
        row = {"model": name, "backbone": backbone, "head": head, "decode": how,
               **{f"f1_{c}": round(t["f1"][c], 3) for c in CLASSES},
               "auc_weighted": round(t["auc_weighted"], 3), "accuracy": round(t["accuracy"], 3),
               "sotd": t["sotd"], "error_3class": round(t["error_3class"], 3),
               "stack_accuracy": round(t["stack_accuracy"], 3)}
        for k, (lo, hi) in t.get("ci95", {}).items():
            row[f"{k}_ci95"] = f"{lo:.3f}-{hi:.3f}" if k != "sotd" else f"{lo:.0f}-{hi:.0f}"
        rows.append(row)
    return rows


def flat_headline(name: str, how: str, test: dict) -> dict:
    """metrics/metrics.json: the selected model's test metrics, flat keys."""
    return {"model": name, "decode": how, "accuracy": round(test["accuracy"], 4),
            "auc_weighted": round(test["auc_weighted"], 4), "sotd": test["sotd"],
            "error_3class": round(test["error_3class"], 4), "stack_accuracy": round(test["stack_accuracy"], 4),
            **{f"f1_{c}": round(test["f1"][c], 4) for c in CLASSES}}


def position_baseline(data: pd.DataFrame) -> dict:
    """A reference model that sees no image: multinomial logistic regression on the slice's relative
    position in its stack (order / (slices - 1)), fitted on train, scored on test with argmax.
    It shows how much of a stack model's accuracy the slice position alone explains."""
    from sklearn.linear_model import LogisticRegression

    rel = data.order / data.groupby(["subject", "phase"]).order.transform("max").clip(lower=1)
    x = np.c_[rel, rel**2]
    train, test = (data.split == "train").to_numpy(), (data.split == "test").to_numpy()
    y = metrics.encode(data.label)
    model = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    probs = np.zeros((int(test.sum()), len(CLASSES)))
    probs[:, model.classes_] = model.predict_proba(x[test])
    stack_ids = (data.subject.astype(str) + "/" + data.phase).to_numpy()[test]
    return metrics.split_metrics(y[test], probs.argmax(1), probs, stack_ids)
