"""DVC stage evaluate: Table 5 (both grids, both decodings, CIs), comparisons, the selected model's metrics, figures."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel import CLASSES, evaluation, figures, io
from saxlevel import params as P
from saxlevel.backbones import RNN_BATCH, SPECS
from saxlevel.stageutil import parser

DVC_LABEL = {c: f"{i + 1}-{c}" for i, c in enumerate(CLASSES)}  # DVC sorts labels alphabetically


def curves(live: Path) -> pd.DataFrame:
    """Per-epoch train/validation loss and accuracy from a dvclive folder."""
    def tsv(part: str, metric: str) -> pd.Series:
        return pd.read_csv(live / "plots" / "metrics" / part / f"{metric}.tsv", sep="\t")[metric]

    return pd.DataFrame({"epoch": tsv("train", "loss").index + 1, "train_loss": tsv("train", "loss"),
                         "val_loss": tsv("eval", "loss"), "train_accuracy": tsv("train", "accuracy"),
                         "val_accuracy": tsv("eval", "accuracy")})


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--predictions", required=True, help="folder of BACKBONE-HEAD.csv")
    ap.add_argument("--split", required=True, help="split.csv (image paths for Figure 3)")
    ap.add_argument("--features", required=True, help="features folder (Table 4 facts)")
    ap.add_argument("--live", required=True, help="dvclive root (Figure 2)")
    ap.add_argument("--metrics", required=True, help="metrics folder (table5.json, metrics.json, table4.json)")
    ap.add_argument("--plots", required=True, help="plots folder")
    args = ap.parse_args()
    prm = P.load(args.params)
    try:
        backbones, heads = P.grid(prm)
        sel_backbone, sel_head = P.selected_model(prm)
    except P.ParamError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    how = str(P.get(prm, "evaluate.decode", "argmax"))
    resamples = int(P.get(prm, "evaluate.bootstrap", 1000))
    seed = int(P.get(prm, "evaluate.seed", 0))
    n_fig3 = int(P.get(prm, "evaluate.figure3_subjects", 2))
    if how not in evaluation.decode.DECODERS:
        print(f"evaluate: error: evaluate.decode must be one of {evaluation.decode.DECODERS}, got {how!r}",
              file=sys.stderr)
        return 2
    pred_dir, plots, mdir = Path(args.predictions), Path(args.plots), Path(args.metrics)
    try:
        ft_backbones, ft_heads = P.finetune_grid(prm)
        paper_cfg = P.train_settings(prm, "train")
        ft_cfg = P.train_settings(prm, P.FINETUNE_SECTION) if ft_backbones and ft_heads else None
    except P.ParamError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    # Iterate over the grids from params, not over files: stale outputs survive grid changes.
    # (name, backbone, head, predictions file, dvclive folder, training settings)
    entries = [(f"{b}-{h}", b, h, pred_dir / f"{b}-{h}.csv", Path(args.live) / f"{b}-{h}", paper_cfg)
               for b in backbones for h in heads]
    entries += [(f"{b}-{h}{ft_cfg.suffix}", b, h, pred_dir / "finetuned" / f"{b}-{h}.csv",
                 Path(args.live) / "finetuned" / f"{b}-{h}", ft_cfg)
                for b in ft_backbones for h in ft_heads] if ft_cfg else []
    models, rows, preds, lives = {}, [], {}, {}
    for name, b, h, path, live_dir, cfg in entries:
        try:
            preds[name] = evaluation.read_predictions(path)
        except FileNotFoundError as exc:
            print(f"evaluate: error: {exc}", file=sys.stderr)
            return 2
        res = evaluation.evaluate_model(preds[name], resamples, seed)
        models[name] = {"backbone": b, "head": h, "finetune": cfg.finetune, "augment": cfg.augment,
                        "image_size": cfg.image_size, "decode": res}
        lives[name] = live_dir
        rows += evaluation.table_rows(name, b, h, res, cfg.finetune, cfg.augment)
    data = pd.read_csv(args.split)
    base = evaluation.POSITION_BASELINE
    preds[base] = evaluation.position_baseline_predictions(data)
    baseline = evaluation.evaluate_model(preds[base], resamples, seed)
    # The paper's claim (CNN-RNN vs CNN per backbone) and the fine-tuned models against their frozen twins,
    # the position-only baseline and their own dense model: paired subject bootstrap on the test split.
    finetuned = {f"{b}-{h}{ft_cfg.suffix}": f"{b}-{h}" for b in ft_backbones for h in ft_heads} if ft_cfg else {}
    test_metrics = {n: {d: r[d]["test"] for d in r} for n, r in
                    [(n, m["decode"]) for n, m in models.items()] + [(base, baseline)]}
    claims, claim_rows = {}, []
    for a, b in evaluation.comparison_pairs([e[0] for e in entries if e[5] is paper_cfg], heads, finetuned):
        claims[f"{a} vs {b}"] = {d: evaluation.compare(preds[a], preds[b], d, resamples, seed)
                                 for d in evaluation.decode.DECODERS}
        claim_rows += evaluation.comparison_rows(a, b, claims[f"{a} vs {b}"], test_metrics)
    selected = f"{sel_backbone}-{sel_head}"
    io.write_json(mdir / "table5.json", {"models": models, "comparisons": claims,
                                         "baselines": {"position_only": {"decode": baseline}},
                                         "bootstrap": {"resamples": resamples, "seed": seed, "level": "subject"}})
    io.write_json(mdir / "metrics.json",
                  evaluation.flat_headline(selected, how, models[selected]["decode"][how]["test"]))
    table = pd.DataFrame(rows)
    io.write_csv(plots / "table5.csv", table)
    io.write_csv(plots / "claims.csv", pd.DataFrame(claim_rows))

    # Table 4: per backbone facts from the extract stage.
    t4 = []
    for b in backbones:
        meta = json.loads((Path(args.features) / f"{b}.json").read_text())
        t4.append({"backbone": b, "parameters": meta.get("parameters"), "imagenet_top1": SPECS[b].top1,
                   "features_after_gap": meta["dims"], "batch_cnn": SPECS[b].dense_batch, "batch_cnn_rnn": RNN_BATCH,
                   "weights": meta["weights"], "images_per_second": meta["images_per_second"]})
    io.write_csv(plots / "table4.csv", pd.DataFrame(t4))

    # DVC plots: confusion of the selected model (labels that sort anatomically), SOTD bars, curves.
    sel = preds[selected]
    sel_test = sel[sel.split == "test"].copy()
    sel_test["pred"] = [CLASSES[i] for i in evaluation.decoded(sel, how)[(sel.split == "test").to_numpy()]]
    io.write_csv(plots / "confusion.csv", pd.DataFrame({"actual": sel_test["true"].map(DVC_LABEL),
                                                        "predicted": sel_test["pred"].map(DVC_LABEL)}))
    argmax_rows = table[table.decode == how]
    io.write_csv(plots / "sotd.csv", argmax_rows[["model", "backbone", "head", "sotd"]])
    curve = {name: curves(lives[name]) for name in models}
    io.write_csv(plots / "curves.csv", curve[selected][["epoch", "train_loss", "val_loss"]])

    fig_dir = plots / "figures"
    figures.learning_curves(curve, fig_dir / "figure2_learning_curves.png")
    figures.confusion_grid({m: np.asarray(models[m]["decode"][how]["test"]["confusion"]) for m in models},
                           fig_dir / "figure4_confusion.png", f"Test confusion matrices ({how} decoding)")
    # Fine-tuned models get their own group of bars (a backbone's frozen and fine-tuned heads never add up).
    ft_rows = argmax_rows.model.isin(list(finetuned))
    figures.sotd_bars(argmax_rows.assign(backbone=np.where(ft_rows, argmax_rows.backbone + " (fine-tuned)",
                                                           argmax_rows.backbone)), fig_dir / "figure5_sotd.png")
    test_subjects = sorted(sel_test.subject.unique())[:n_fig3]
    for s in test_subjects:
        stack = sel_test[(sel_test.subject == s) & (sel_test.phase == "ED")]
        stack = stack.merge(data[["subject", "phase", "order", "path"]], on=["subject", "phase", "order"])
        figures.stack_panels(stack, f"subject {s} ED, {selected} ({how})", fig_dir / f"figure3_subject{s}.png")
    head = models[selected]["decode"][how]["test"]
    print(f"evaluate: {len(models)} models; selected {selected} ({how}): accuracy {head['accuracy']:.3f}, "
          f"SOTD {head['sotd']}, weighted AUC {head['auc_weighted']:.3f}; image-free position-only baseline "
          f"accuracy {baseline['argmax']['test']['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
