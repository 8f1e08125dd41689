"""DVC stages train@BACKBONE-HEAD and finetune@BACKBONE-HEAD: train one model; write model, curves, predictions.

With the paper's settings (finetune none, no augmentation) the head trains on the feature cache; otherwise
the backbone runs inside the model on the PNG images (saxlevel.finetune) and the model file is self-contained.
"""

import sys
from pathlib import Path

# This checkout's library first: a queued experiment (dvc queue) runs in a copy of the repository, where an
# editable install would otherwise import the main workspace's src/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import images, io, trainer
from saxlevel import params as P
from saxlevel.stageutil import parser, run_stage, seed_everything


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--head", required=True)
    ap.add_argument("--section", default="train", choices=["train", P.FINETUNE_SECTION],
                    help="params section with the training settings (finetune_grid overrides train)")
    ap.add_argument("--split", required=True)
    ap.add_argument("--png", required=True, help="to_png's folder (its preprocessing.json goes into the model)")
    ap.add_argument("--features", help="features folder from extract (frozen, unaugmented models)")
    ap.add_argument("--model-out", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--live", required=True, help="dvclive folder for this model's learning curves")
    args = ap.parse_args()
    name = f"{'train' if args.section == 'train' else 'finetune'}@{args.backbone}-{args.head}"
    cfg = P.train_settings(P.load(args.params), args.section, args.backbone)
    data = io.read_table(args.split)
    preprocessing = images.read_preprocessing(args.png)
    seed_everything(cfg.seed)
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    with Live(dir=args.live, save_dvc_exp=False, dvcyaml=None, report=None) as live:
        result = trainer.train(args.backbone, args.head, data, cfg, preprocessing, args.features,
                               callbacks=[DVCLiveCallback(live=live)], progress=name)
        live.summary["best_epoch"] = result.best_epoch
        live.summary["best_val_loss"] = round(result.best_val_loss, 5)
    io.save_keras(args.model_out, result.model, extra=result.info)  # predict reads saxlevel.json from the model
    pred = result.predictions
    io.write_csv(args.predictions, pred)
    acc = {s: float((pred.true == pred.pred)[pred.split == s].mean()) for s in ("val", "test")}
    print(f"{name}: best epoch {result.best_epoch}/{result.info['epochs_run']} "
          f"(val loss {result.best_val_loss:.4f}); accuracy val {acc['val']:.3f} test {acc['test']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("train", main))
