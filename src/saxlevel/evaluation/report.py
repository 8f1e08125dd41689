"""The evaluate stage's logic: Table 5 for both grids (both decodings, subject-bootstrap CIs), the paired
comparisons, Table 4, the selected model's metrics, DVC plot data and the paper's figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saxlevel import CLASSES, catalog, io
from saxlevel.evaluation import decode, figures, table5
from saxlevel.params import EvaluateSettings, TrainSettings

DVC_LABEL = {c: f"{i + 1}-{c}" for i, c in enumerate(CLASSES)}  # DVC sorts labels alphabetically


@dataclass(frozen=True)
class Entry:
    """One trained model to evaluate: its Table 5 name, files and training settings."""

    name: str
    backbone: str
    head: str
    predictions: Path
    live: Path
    cfg: TrainSettings


def model_entries(cfg: EvaluateSettings, pred_dir: Path, live_dir: Path) -> list[Entry]:
    """Both grids' models, from params (not from the files present: stale outputs survive grid changes)."""
    entries = [Entry(f"{b}-{h}", b, h, pred_dir / f"{b}-{h}.csv", live_dir / f"{b}-{h}", cfg.paper)
               for b in cfg.backbones for h in cfg.heads]
    if cfg.finetuned:
        entries += [Entry(f"{b}-{h}{cfg.finetuned.suffix}", b, h, pred_dir / "finetuned" / f"{b}-{h}.csv",
                          live_dir / "finetuned" / f"{b}-{h}", cfg.finetuned)
                    for b in cfg.finetune_backbones for h in cfg.finetune_heads]
    return entries


def curves(live: Path) -> pd.DataFrame:
    """Per-epoch train/validation loss and accuracy from a dvclive folder."""
    def tsv(part: str, metric: str) -> pd.Series:
        return pd.read_csv(live / "plots" / "metrics" / part / f"{metric}.tsv", sep="\t")[metric]

    return pd.DataFrame({"epoch": tsv("train", "loss").index + 1, "train_loss": tsv("train", "loss"),
                         "val_loss": tsv("eval", "loss"), "train_accuracy": tsv("train", "accuracy"),
                         "val_accuracy": tsv("eval", "accuracy")})


def table4(backbones: list[str], features_dir: Path) -> pd.DataFrame:
    """Table 4: per backbone facts from the extract stage and the catalogue."""
    rows = []
    for b in backbones:
        meta = json.loads((features_dir / f"{b}.json").read_text())
        spec = catalog.BACKBONES[b]
        rows.append({"backbone": b, "parameters": meta.get("parameters"), "imagenet_top1": spec.top1,
                     "features_after_gap": meta["dims"], "batch_cnn": spec.dense_batch,
                     "batch_cnn_rnn": catalog.RNN_BATCH, "weights": meta["weights"],
                     "images_per_second": meta["images_per_second"]})
    return pd.DataFrame(rows)


@dataclass
class Results:
    models: dict  # Table 5 entries by model name
    rows: list[dict]  # plots/table5.csv
    preds: dict[str, pd.DataFrame]  # predictions by model name (the position-only baseline included)
    baseline: dict
    claims: dict
    claim_rows: list[dict]
    finetuned: dict[str, str]  # fine-tuned model -> its frozen twin


def evaluate(entries: list[Entry], data: pd.DataFrame, cfg: EvaluateSettings) -> Results:
    """Table 5 rows for every model, the position-only baseline, and the paired subject-bootstrap comparisons:
    the paper's claim (CNN-RNN vs CNN per backbone) and each fine-tuned model against its frozen twin, the
    baseline and its own dense model."""
    models: dict[str, dict[str, Any]] = {}
    rows: list[dict] = []
    preds: dict[str, pd.DataFrame] = {}
    for e in entries:
        preds[e.name] = table5.read_predictions(e.predictions)
        res = table5.evaluate_model(preds[e.name], cfg.bootstrap, cfg.seed)
        weights = cfg.weights[e.backbone]
        models[e.name] = {"backbone": e.backbone, "head": e.head, "weights": weights, "finetune": e.cfg.finetune,
                          "augment": e.cfg.augment, "image_size": e.cfg.image_size, "decode": res}
        rows += table5.table_rows(e.name, e.backbone, e.head, res, e.cfg.finetune, e.cfg.augment, weights)
    base = table5.POSITION_BASELINE
    preds[base] = table5.position_baseline_predictions(data)
    baseline = table5.evaluate_model(preds[base], cfg.bootstrap, cfg.seed)
    finetuned = {e.name: f"{e.backbone}-{e.head}" for e in entries if e.cfg is not cfg.paper}
    test_metrics = {n: {d: r[d]["test"] for d in r} for n, r in
                    [(n, m["decode"]) for n, m in models.items()] + [(base, baseline)]}
    claims, claim_rows = {}, []
    paper_names = [e.name for e in entries if e.cfg is cfg.paper]
    for a, b in table5.comparison_pairs(paper_names, cfg.heads, finetuned):
        claims[f"{a} vs {b}"] = {d: table5.compare(preds[a], preds[b], d, cfg.bootstrap, cfg.seed)
                                 for d in decode.DECODERS}
        claim_rows += table5.comparison_rows(a, b, claims[f"{a} vs {b}"], test_metrics)
    return Results(models, rows, preds, baseline, claims, claim_rows, finetuned)


def write(res: Results, entries: list[Entry], data: pd.DataFrame, cfg: EvaluateSettings, features_dir: Path,
          metrics_dir: Path, plots: Path) -> dict:
    """Write table5.json, metrics.json, the plot CSVs and the figures; returns the selected model's test
    metrics."""
    how, selected = cfg.decode, "-".join(cfg.selected)
    io.write_json(metrics_dir / "table5.json", {
        "models": res.models, "comparisons": res.claims, "baselines": {"position_only": {"decode": res.baseline}},
        "bootstrap": {"resamples": cfg.bootstrap, "seed": cfg.seed, "level": "subject"}})
    io.write_json(metrics_dir / "metrics.json",
                  table5.flat_headline(selected, how, res.models[selected]["decode"][how]["test"]))
    table = pd.DataFrame(res.rows)
    io.write_csv(plots / "table5.csv", table)
    io.write_csv(plots / "claims.csv", pd.DataFrame(res.claim_rows))
    io.write_csv(plots / "table4.csv", table4(cfg.backbones, features_dir))
    # Coverage QC from the levels: every model, then the image-free baseline (what slice position alone gives).
    io.write_csv(plots / "coverage.csv", pd.DataFrame(
        [row for name, m in res.models.items() for row in table5.coverage_rows(name, m["decode"])]
        + table5.coverage_rows(table5.POSITION_BASELINE, res.baseline)))

    # DVC plots: confusion of the selected model (labels that sort anatomically), SOTD bars, curves.
    sel = res.preds[selected]
    sel_test = sel[sel.split == "test"].copy()
    sel_test["pred"] = [CLASSES[i] for i in table5.decoded(sel, how)[(sel.split == "test").to_numpy()]]
    io.write_csv(plots / "confusion.csv", pd.DataFrame({"actual": sel_test["true"].map(DVC_LABEL),
                                                        "predicted": sel_test["pred"].map(DVC_LABEL)}))
    chosen_rows = table[table.decode == how]
    io.write_csv(plots / "sotd.csv", chosen_rows[["model", "backbone", "head", "sotd"]])
    curve = {e.name: curves(e.live) for e in entries}
    io.write_csv(plots / "curves.csv", curve[selected][["epoch", "train_loss", "val_loss"]])

    fig_dir = plots / "figures"
    figures.learning_curves(curve, fig_dir / "figure2_learning_curves.png")
    figures.confusion_grid({m: np.asarray(res.models[m]["decode"][how]["test"]["confusion"]) for m in res.models},
                           fig_dir / "figure4_confusion.png", f"Test confusion matrices ({how} decoding)")
    # Fine-tuned models get their own group of bars (a backbone's frozen and fine-tuned heads never add up).
    ft_rows = chosen_rows.model.isin(list(res.finetuned))
    figures.sotd_bars(chosen_rows.assign(backbone=np.where(ft_rows, chosen_rows.backbone + " (fine-tuned)",
                                                           chosen_rows.backbone)), fig_dir / "figure5_sotd.png")
    for s in sorted(sel_test.subject.unique())[:cfg.figure3_subjects]:
        stack = sel_test[(sel_test.subject == s) & (sel_test.phase == "ED")]
        stack = stack.merge(data[["subject", "phase", "order", "path"]], on=["subject", "phase", "order"])
        figures.stack_panels(stack, f"subject {s} ED, {selected} ({how})", fig_dir / f"figure3_subject{s}.png")
    return res.models[selected]["decode"][how]["test"]
