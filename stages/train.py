"""DVC stages train@BACKBONE-HEAD and finetune@BACKBONE-HEAD: train one model; write model, curves, predictions.

With the paper's settings (finetune none, no augmentation) the head trains on the feature cache; otherwise
the backbone runs inside the model on the PNG images (saxlevel.finetune) and the model file is self-contained.
"""

import sys
from pathlib import Path

# This checkout's library first: a queued experiment (dvc queue) runs in a copy of the repository, where an
# editable install would otherwise import the main workspace's src/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import tempfile

from saxlevel import handoff, images, io
from saxlevel import params as P
from saxlevel.stageutil import parser, run_stage, seed_everything

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
                    help=f"where this backbone's sibling models trained along wait for their stages (default {handoff.ROOT})")
    args = ap.parse_args()
    name = f"{'train' if args.section == 'train' else 'finetune'}@{args.backbone}-{args.head}"
    prm = P.load(args.params)
    cfg = P.train_settings(prm, args.section, args.backbone)
    data = io.read_table(args.split)
    preprocessing = images.read_preprocessing(args.png)
    outs = Path(args.model_out), Path(args.predictions), Path(args.live)
    if args.section == "train" and cfg.cached and handoff.enabled():
        box = handoff.HandOff(args.handoff)
        digest = handoff.inputs_digest(REPO, Path(args.split), Path(args.png), Path(args.features), args.backbone)
        key = handoff.fingerprint(digest, args.backbone, args.head, cfg)
        if box.has(name, key):
            print(f"{name}: trained beside its siblings by an earlier train@{args.backbone}-* stage "
                  f"(same fingerprint {key}); taken from {box.entry(name, key)}")
        else:
            heads = [args.head] + handoff.siblings_to_train(box, digest, args.backbone, args.head,
                                                            list(prm["grid"]["heads"]), cfg, outs[0])
            if len(heads) > 1:
                print(f"{name}: training {', '.join(heads[1:])} along (same features); "
                      f"their stages take them from {box.root}")
            _train_cached(args.backbone, heads, data, cfg, preprocessing, args.features, box, digest)
        result = handoff.publish(box.entry(name, key), *outs)
        box.discard(name)
    else:
        from saxlevel import trainer

        seed_everything(cfg.seed)
        trained = trainer.train(args.backbone, args.head, data, cfg, preprocessing, args.features, progress=name)
        with tempfile.TemporaryDirectory(dir=outs[0].parent if outs[0].parent.exists() else None) as tmp:
            handoff.write_result(Path(tmp), trained)
            result = handoff.publish(Path(tmp), *outs)
    pred = io.read_table(args.predictions)
    acc = {s: float((pred.true == pred.pred)[pred.split == s].mean()) for s in ("val", "test")}
    print(f"{name}: best epoch {result['best_epoch']}/{result['epochs_run']} "
          f"(val loss {result['best_val_loss']:.4f}); accuracy val {acc['val']:.3f} test {acc['test']:.3f}")
    return 0


def _train_cached(backbone: str, heads: list[str], data, cfg: P.TrainSettings, preprocessing: dict, features: str,
                  box: handoff.HandOff, digest: str) -> None:
    """Train ``heads`` of ``backbone`` side by side and leave each in the hand-off under its fingerprint."""
    from saxlevel import trainer

    seed_everything(cfg.seed)
    names = {h: handoff.stage_name(backbone, h) for h in heads}
    trained = trainer.train_cached(backbone, heads, data, cfg, preprocessing, features, progress=names)
    for h, t in trained.items():
        key = handoff.fingerprint(digest, backbone, h, cfg)
        t.info["fingerprint"] = key
        box.put(names[h], key, lambda folder, t=t: handoff.write_result(folder, t))


if __name__ == "__main__":
    sys.exit(run_stage("train", main))
