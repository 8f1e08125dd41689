"""Evaluate prediction files: Table 5 per model and decoding, CIs, CNN vs CNN-RNN comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel import CLASSES, STACK_KEY, io
from saxlevel.evaluation import coverage, decode, metrics

PROB_COLUMNS = [f"p_{c}" for c in CLASSES]
SPLITS = ("test", "val")


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions CSV; a missing file names the stage that makes it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro train@{path.stem}` (is the model in the grid?)")
    return io.read_table(path)


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
            res["coverage"] = coverage.coverage_detection(y, levels[m], stack_ids, part.order.to_numpy())
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


def table_rows(name: str, backbone: str, head: str, result: dict, finetune: str = "none",
               augment: bool = False, weights: str = "none") -> list[dict]:
    """Readable Table 5 rows (test split), one per decoding, with CI columns; ``weights``: what the backbone
    started from (imagenet, none or a file)."""
    rows = []
    for how, per_split in result.items():
        t = per_split.get("test")
        if t is None:
            continue
        row = {"model": name, "backbone": backbone, "head": head, "weights": weights, "finetune": finetune,
               "augment": augment, "decode": how,
               **{f"f1_{c}": round(t["f1"][c], 3) for c in CLASSES},
               "auc_weighted": round(t["auc_weighted"], 3), "accuracy": round(t["accuracy"], 3),
               "sotd": t["sotd"], "error_3class": round(t["error_3class"], 3),
               "stack_accuracy": round(t["stack_accuracy"], 3)}
        for k, (lo, hi) in t.get("ci95", {}).items():
            row[f"{k}_ci95"] = f"{lo:.3f}-{hi:.3f}" if k != "sotd" else f"{lo:.0f}-{hi:.0f}"
        rows.append(row)
    return rows


def coverage_rows(name: str, result: dict) -> list[dict]:
    """plots/coverage.csv rows of one model: per decoding and end, how well its test levels detect a stack that
    misses that end (positive = missing), against the truth the labels give."""
    return [{"model": name, "decode": how, "end": end, **per_split["test"]["coverage"][end]}
            for how, per_split in result.items() if "test" in per_split for end in coverage.ENDS]


def flat_headline(name: str, how: str, test: dict) -> dict:
    """metrics/metrics.json: the selected model's test metrics, flat keys."""
    return {"model": name, "decode": how, "accuracy": round(test["accuracy"], 4),
            "auc_weighted": round(test["auc_weighted"], 4), "sotd": test["sotd"],
            "error_3class": round(test["error_3class"], 4), "stack_accuracy": round(test["stack_accuracy"], 4),
            **{f"f1_{c}": round(test["f1"][c], 4) for c in CLASSES},
            **{f"{end}_missing_{k}": test["coverage"][end][k] for end in coverage.ENDS
               for k in ("sensitivity", "specificity")}}


def predictions_frame(data: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """The predictions CSV contract: split,subject,phase,order,series,frame,true,p_*,pred."""
    out = data[["split", "subject", "phase", "order", "series", "frame"]].reset_index(drop=True).copy()
    out["true"] = data["label"].to_numpy()
    for i, c in enumerate(CLASSES):
        out[f"p_{c}"] = np.round(probs[:, i], 6)
    out["pred"] = [CLASSES[i] for i in probs.argmax(1)]
    return out


POSITION_BASELINE = "position-only"


def position_baseline_predictions(data: pd.DataFrame) -> pd.DataFrame:
    """A reference model that sees no image: multinomial logistic regression on the slice's relative
    position in its stack (order / (slices - 1)), fitted on train; val and test rows in the predictions
    CSV form, so it is scored and compared (paired bootstrap) exactly like a trained model.
    It shows how much of a stack model's accuracy the slice position alone explains."""
    from sklearn.linear_model import LogisticRegression


    data = data.reset_index(drop=True)
    rel = data.order / data.groupby(STACK_KEY).order.transform("max").clip(lower=1)
    x = np.c_[rel, rel**2]
    train, rows = (data.split == "train").to_numpy(), data.split.isin(["val", "test"]).to_numpy()
    y = metrics.encode(data.label)
    model = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    probs = np.zeros((int(rows.sum()), len(CLASSES)))
    probs[:, model.classes_] = model.predict_proba(x[rows])
    return predictions_frame(data[rows], probs)


def position_baseline(data: pd.DataFrame) -> dict:
    """The position-only baseline's test metrics (argmax)."""
    return evaluate_model(position_baseline_predictions(data), 0, 0)["argmax"]["test"]


def comparison_pairs(names: list[str], paper_heads: list[str], finetuned: dict[str, str]) -> list[tuple[str, str]]:
    """Which models to compare (A vs B, test accuracy, paired subject bootstrap).

    ``names``: the paper grid's model names BACKBONE-HEAD; ``finetuned``: fine-tuned model name -> the
    frozen model of the same backbone and head. The paper's claim (each CNN-RNN head vs its backbone's
    dense head), then per fine-tuned model: vs its frozen twin, vs the image-free position-only baseline,
    and (RNN heads) vs the fine-tuned dense model of its backbone."""
    pairs = []
    if "dense" in paper_heads:
        for name in names:
            backbone, head = name.rsplit("-", 1)
            if head != "dense":
                pairs.append((name, f"{backbone}-dense"))
    for ft, frozen in finetuned.items():
        if frozen in names:
            pairs.append((ft, frozen))
        pairs.append((ft, POSITION_BASELINE))
        backbone, head = frozen.rsplit("-", 1)
        dense_ft = next((k for k, v in finetuned.items() if v == f"{backbone}-dense"), None)
        if head != "dense" and dense_ft:
            pairs.append((ft, dense_ft))
    return pairs


def comparison_rows(a: str, b: str, result: dict[str, dict], test_metrics: dict[str, dict[str, dict]]) -> list[dict]:
    """plots/claims.csv rows for one pair: per decoding, A's and B's test accuracy and SOTD, the paired
    difference with its 95 % interval and p-value."""
    rows = []
    for how, c in result.items():
        ma, mb = test_metrics[a][how], test_metrics[b][how]
        rows.append({"model_a": a, "model_b": b, "decode": how, "accuracy_a": round(ma["accuracy"], 3),
                     "accuracy_b": round(mb["accuracy"], 3), "accuracy_diff": round(c["accuracy_diff"], 3),
                     "diff_ci95": f"{c['ci95'][0]:.3f}-{c['ci95'][1]:.3f}", "p_value": round(c["p_value"], 4),
                     "significant": c["significant"], "sotd_a": ma["sotd"], "sotd_b": mb["sotd"],
                     "a_better_in_accuracy_and_sotd": bool(ma["accuracy"] > mb["accuracy"] and ma["sotd"] < mb["sotd"])})
    return rows
