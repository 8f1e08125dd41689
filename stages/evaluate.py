"""DVC stage evaluate: Table 5 (both decodings, CIs), the selected model's metrics, figures and plots."""

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
    # Iterate over the grid from params, not over files: stale outputs survive grid changes.
    models, rows, preds = {}, [], {}
    for b in backbones:
        for h in heads:
            name = f"{b}-{h}"
            try:
                preds[name] = evaluation.read_predictions(pred_dir / f"{name}.csv")
            except FileNotFoundError as exc:
                print(f"evaluate: error: {exc}", file=sys.stderr)
                return 2
            res = evaluation.evaluate_model(preds[name], resamples, seed)
            models[name] = {"backbone": b, "head": h, "decode": res}
            rows += evaluation.table_rows(name, b, h, res)
    # Paper's main claim per backbone: does each CNN-RNN head beat the dense (CNN) head?
    claims = {}
    if "dense" in heads:
        for b in backbones:
            for h in heads:
                if h != "dense":
                    claims[f"{b}: {h} vs dense"] = {
                        d: evaluation.compare(preds[f"{b}-{h}"], preds[f"{b}-dense"], d, resamples, seed)
                        for d in evaluation.decode.DECODERS}
    claim_rows = []
    for key, per_decode in claims.items():
        b, rest = key.split(": ")
        h = rest.split(" vs ")[0]
        for d, c in per_decode.items():
            rnn, cnn = models[f"{b}-{h}"]["decode"][d]["test"], models[f"{b}-dense"]["decode"][d]["test"]
            claim_rows.append({"backbone": b, "rnn_head": h, "decode": d, "accuracy_rnn": round(rnn["accuracy"], 3),
                               "accuracy_cnn": round(cnn["accuracy"], 3), "accuracy_diff": round(c["accuracy_diff"], 3),
                               "diff_ci95": f"{c['ci95'][0]:.3f}-{c['ci95'][1]:.3f}", "p_value": round(c["p_value"], 4),
                               "significant": c["significant"], "sotd_rnn": rnn["sotd"], "sotd_cnn": cnn["sotd"],
                               "rnn_better_in_accuracy_and_sotd": bool(rnn["accuracy"] > cnn["accuracy"]
                                                                       and rnn["sotd"] < cnn["sotd"])})
    selected = f"{sel_backbone}-{sel_head}"
    data = pd.read_csv(args.split)
    baseline = evaluation.position_baseline(data)
    io.write_json(mdir / "table5.json", {"models": models, "comparisons": claims,
                                         "baselines": {"position_only": baseline},
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
    live = Path(args.live)
    curve = {f"{b}-{h}": curves(live / f"{b}-{h}") for b in backbones for h in heads}
    io.write_csv(plots / "curves.csv", curve[selected][["epoch", "train_loss", "val_loss"]])

    fig_dir = plots / "figures"
    figures.learning_curves(curve, fig_dir / "figure2_learning_curves.png")
    figures.confusion_grid({m: np.asarray(models[m]["decode"][how]["test"]["confusion"]) for m in models},
                           fig_dir / "figure4_confusion.png", f"Test confusion matrices ({how} decoding)")
    figures.sotd_bars(argmax_rows, fig_dir / "figure5_sotd.png")
    test_subjects = sorted(sel_test.subject.unique())[:n_fig3]
    for s in test_subjects:
        stack = sel_test[(sel_test.subject == s) & (sel_test.phase == "ED")]
        stack = stack.merge(data[["subject", "phase", "order", "path"]], on=["subject", "phase", "order"])
        figures.stack_panels(stack, f"subject {s} ED, {selected} ({how})", fig_dir / f"figure3_subject{s}.png")
    head = models[selected]["decode"][how]["test"]
    print(f"evaluate: {len(models)} models; selected {selected} ({how}): accuracy {head['accuracy']:.3f}, "
          f"SOTD {head['sotd']}, weighted AUC {head['auc_weighted']:.3f}; image-free position-only baseline "
          f"accuracy {baseline['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
