"""DVC stages train@BACKBONE-HEAD and finetune@BACKBONE-HEAD: train one model; write model, curves, predictions.

With the paper's settings (finetune none, no augmentation) the head trains on the feature cache; otherwise
the backbone runs inside the model on the PNG images (saxlevel.finetune) and the model file is self-contained.
"""

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
    ap.add_argument("--section", default="train", choices=["train", P.FINETUNE_SECTION],
                    help="params section with the training settings (finetune_grid overrides train)")
    ap.add_argument("--split", required=True)
    ap.add_argument("--features", help="features folder from extract (frozen, unaugmented models)")
    ap.add_argument("--model-out", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--live", required=True, help="dvclive folder for this model's learning curves")
    args = ap.parse_args()
    name = f"train@{args.backbone}-{args.head}" if args.section == "train" else f"finetune@{args.backbone}-{args.head}"
    try:
        cfg = P.train_settings(P.load(args.params), args.section)
    except P.ParamError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    data = pd.read_csv(args.split)
    batch = backbones.RNN_BATCH if args.head in RNN_HEADS else backbones.spec(args.backbone).dense_batch
    info = {"backbone": args.backbone, "head": args.head, "classes": list(CLASSES), "weights": cfg.weights,
            "finetune": cfg.finetune, "augment": cfg.augment, "image_size": cfg.image_size,
            "preprocess": f"keras.applications.{backbones.spec(args.backbone).module}.preprocess_input",
            "max_slices": cfg.max_slices, "batch_size": batch, "lr": cfg.lr, "seed": cfg.seed}
    if cfg.cached:
        if not args.features:
            print(f"{name}: error: frozen, unaugmented models train on the feature cache: pass --features",
                  file=sys.stderr)
            return 2
        feat_dir = Path(args.features)
        inputs = np.load(feat_dir / f"{args.backbone}.npy")
        meta = json.loads((feat_dir / f"{args.backbone}.json").read_text())
        if meta["row_ids"] != data.row.tolist():
            print(f"{name}: error: {feat_dir}/{args.backbone}.npy was extracted from another split.csv; "
                  f"re-run `dvc repro extract@{args.backbone}`", file=sys.stderr)
            return 2
        info.update(input="features", weights=meta["weights"], image_size=meta["image_size"],
                    preprocess=meta["preprocess"], feature_extractor=str(feat_dir / f"{args.backbone}.keras"))
    else:
        from saxlevel import finetune

        inputs = finetune.load_images(data.path.tolist(), cfg.image_size)
        train = data[data.split == "train"]
        bn_paths = train.sample(n=min(cfg.bn_images, len(train)), random_state=cfg.seed).path.tolist()
        info.update(input="gray", input_range=[0, 255], padding="NaN slices (RNN stacks)")
    seed_everything(cfg.seed)
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    with Live(dir=args.live, save_dvc_exp=False, dvcyaml=None, report=None) as live:
        cbs = [DVCLiveCallback(live=live)]
        try:
            if cfg.cached:
                model, best, hist = training.fit(args.head, data, inputs, epochs=cfg.epochs, lr=cfg.lr,
                                                 batch_size=batch, max_slices=cfg.max_slices, patience=cfg.patience,
                                                 callbacks=cbs, progress=name)
            else:
                model, best, hist, facts = finetune.fit(args.backbone, args.head, data, inputs, cfg,
                                                        batch_size=batch, bn_paths=bn_paths, callbacks=cbs,
                                                        progress=name)
                info.update(facts)
        except (ValueError, backbones.WeightsUnavailable, FileNotFoundError) as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            return 2
        live.summary["best_epoch"] = best.best_epoch + 1
        live.summary["best_val_loss"] = round(best.best, 5)
    info.update(best_epoch=best.best_epoch + 1, epochs_run=len(hist.history["loss"]))
    io.save_keras(args.model_out, model, extra=info)  # predict reads saxlevel.json from the model file
    rows = data[data.split.isin(["val", "test"])]
    part = inputs[rows.index.to_numpy()]
    if cfg.cached:
        probs = training.predict(model, args.head, rows, part, cfg.max_slices)
    else:
        probs = finetune.predict(model, args.head, rows, part, cfg.max_slices)
    pred = training.predictions_frame(rows, probs)
    io.write_csv(args.predictions, pred)
    acc = {s: float((pred.true == pred.pred)[pred.split == s].mean()) for s in ("val", "test")}
    print(f"{name}: best epoch {info['best_epoch']}/{info['epochs_run']} "
          f"(val loss {best.best:.4f}); accuracy val {acc['val']:.3f} test {acc['test']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
