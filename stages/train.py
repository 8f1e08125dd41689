"""DVC stage train@BACKBONE-HEAD: train a head on the feature cache; write model, curves, predictions."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel import CLASSES, backbones, io, training
from saxlevel import params as P
from saxlevel.heads import RNN_HEADS
from saxlevel.stageutil import parser, seed_everything


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--head", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--features", required=True, help="features folder from extract")
    ap.add_argument("--model-out", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--live", required=True, help="dvclive folder for this model's learning curves")
    args = ap.parse_args()
    prm = P.load(args.params)
    epochs, lr = int(P.get(prm, "train.epochs")), float(P.get(prm, "train.lr"))
    seed, max_slices = int(P.get(prm, "train.seed")), int(P.get(prm, "train.max_slices"))
    patience = int(P.get(prm, "train.patience", 0))
    name = f"{args.backbone}-{args.head}"
    data = pd.read_csv(args.split)
    feat_dir = Path(args.features)
    feats = np.load(feat_dir / f"{args.backbone}.npy")
    meta = json.loads((feat_dir / f"{args.backbone}.json").read_text())
    if meta["row_ids"] != data.row.tolist():
        print(f"train@{name}: error: {feat_dir}/{args.backbone}.npy was extracted from another split.csv; "
              f"re-run `dvc repro extract@{args.backbone}`", file=sys.stderr)
        return 2
    batch = backbones.RNN_BATCH if args.head in RNN_HEADS else backbones.spec(args.backbone).dense_batch
    seed_everything(seed)
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    with Live(dir=args.live, save_dvc_exp=False, dvcyaml=None, report=None) as live:
        try:
            model, best, hist = training.fit(args.head, data, feats, epochs=epochs, lr=lr, batch_size=batch,
                                             max_slices=max_slices, patience=patience,
                                             callbacks=[DVCLiveCallback(live=live)], progress=f"train@{name}")
        except ValueError as exc:
            print(f"train@{name}: error: {exc}", file=sys.stderr)
            return 2
        live.summary["best_epoch"] = best.best_epoch + 1
        live.summary["best_val_loss"] = round(best.best, 5)
    info = {"backbone": args.backbone, "head": args.head, "classes": list(CLASSES), "weights": meta["weights"],
            "image_size": meta["image_size"], "preprocess": meta["preprocess"], "max_slices": max_slices,
            "feature_extractor": str(feat_dir / f"{args.backbone}.keras"), "best_epoch": best.best_epoch + 1,
            "epochs_run": len(hist.history["loss"]), "batch_size": batch, "lr": lr, "seed": seed}
    io.save_keras(args.model_out, model, extra=info)  # predict reads saxlevel.json from the model file
    rows = data[data.split.isin(["val", "test"])]
    probs = training.predict(model, args.head, rows, feats[rows.index.to_numpy()], max_slices)
    pred = training.predictions_frame(rows, probs)
    io.write_csv(args.predictions, pred)
    acc = {s: float((pred.true == pred.pred)[pred.split == s].mean()) for s in ("val", "test")}
    print(f"train@{name}: best epoch {info['best_epoch']}/{info['epochs_run']} "
          f"(val loss {best.best:.4f}); accuracy val {acc['val']:.3f} test {acc['test']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
