"""DVC stages train@BACKBONE-HEAD and finetune@BACKBONE-HEAD: train one model; write model, curves, predictions.

With the paper's settings (finetune none, no augmentation) the head trains on the feature cache; otherwise
the backbone runs inside the model on the PNG images (saxlevel.learning.finetune) and the model file is self-contained.
"""

import sys
from pathlib import Path

# This checkout's library first: a queued experiment (dvc queue) runs in a copy of the repository, where an
# editable install would otherwise import the main workspace's src/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import params as P
from saxlevel.learning import handoff
from saxlevel.stageutil import parser, run_stage

REPO = Path(__file__).resolve().parents[1]


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
    ap.add_argument("--handoff", default=handoff.ROOT,
                    help=f"where sibling models trained along wait for their stages (default {handoff.ROOT})")
    args = ap.parse_args()
    name = f"{'train' if args.section == 'train' else 'finetune'}@{args.backbone}-{args.head}"
    result = handoff.train_model(args.backbone, args.head, args.section, P.load(args.params),
                                 (Path(args.split), Path(args.png), Path(args.features) if args.features else None),
                                 (Path(args.model_out), Path(args.predictions), Path(args.live)), args.handoff, REPO,
                                 name)
    acc = result["accuracy"]
    print(f"{name}: best epoch {result['best_epoch']}/{result['epochs_run']} "
          f"(val loss {result['best_val_loss']:.4f}); accuracy val {acc['val']:.3f} test {acc['test']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("train", main))
