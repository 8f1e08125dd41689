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

from saxlevel import handoff
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
                    help=f"where sibling models trained along wait for their stages (default {handoff.ROOT})")
    args = ap.parse_args()
    name = f"{'train' if args.section == 'train' else 'finetune'}@{args.backbone}-{args.head}"
    prm = P.load(args.params)
    cfg = P.train_settings(prm, args.section, args.backbone)
    outs = Path(args.model_out), Path(args.predictions), Path(args.live)
    scope = handoff.scope()
    if args.section == "train" and cfg.cached and scope != "off":
        box = handoff.HandOff(args.handoff)
        paths = Path(args.split), Path(args.png), Path(args.features)
        digest = handoff.inputs_digest(REPO, *paths, args.backbone)
        key = handoff.fingerprint(digest, args.backbone, args.head, cfg)
        if box.has(name, key):
            print(f"{name}: trained beside its siblings by an earlier train stage (same fingerprint {key}); "
                  f"taken from {box.entry(name, key)}")
        else:
            _train_along(args.backbone, args.head, prm, cfg, digest, paths, outs[0].parent, box, scope == "grid")
        result = handoff.publish(box.entry(name, key), *outs)
        box.discard(name)
    else:
        from saxlevel import images, io, trainer

        seed_everything(cfg.seed)
        trained = trainer.train(args.backbone, args.head, io.read_table(args.split), cfg,
                                images.read_preprocessing(args.png), args.features, progress=name)
        with tempfile.TemporaryDirectory(dir=outs[0].parent if outs[0].parent.exists() else None) as tmp:
            handoff.write_result(Path(tmp), trained)
            result = handoff.publish(Path(tmp), *outs)
    acc = result["accuracy"]
    print(f"{name}: best epoch {result['best_epoch']}/{result['epochs_run']} "
          f"(val loss {result['best_val_loss']:.4f}); accuracy val {acc['val']:.3f} test {acc['test']:.3f}")
    return 0


def _train_along(backbone: str, head: str, prm: dict, cfg: P.TrainSettings, digest: str, paths: tuple[Path, ...],
                 models_dir: Path, box: handoff.HandOff, whole_grid: bool) -> None:
    """Train ``backbone``-``head`` and the siblings that wait for it (its backbone's other heads; with
    ``whole_grid``, every grid model whose backbone's feature cache is on disk for this split), side by side,
    and leave each in the hand-off under its fingerprint."""
    from saxlevel import images, io, trainer

    split, png, features = paths
    data = io.read_table(split)
    heads, row_ids = list(prm["grid"]["heads"]), data.row.tolist()
    plan = {backbone: (cfg, digest, [head] + handoff.siblings_to_train(box, digest, backbone, heads, cfg, models_dir,
                                                                       skip=(head,)))}
    for other in prm["grid"]["backbones"] if whole_grid else []:
        other_cfg = P.train_settings(prm, "train", other)
        if other in plan or not other_cfg.cached or not handoff.features_on_disk(features, other, row_ids):
            continue
        other_digest = handoff.inputs_digest(REPO, split, png, features, other)
        todo = handoff.siblings_to_train(box, other_digest, other, heads, other_cfg, models_dir)
        if todo:
            plan[other] = (other_cfg, other_digest, todo)
    models = [(b, h) for b, (_, _, hs) in plan.items() for h in hs]
    names = {(b, h): handoff.stage_name(b, h) for b, h in models}
    if len(models) > 1:
        print(f"{names[models[0]]}: training {', '.join(f'{b}-{h}' for b, h in models[1:])} along "
              f"(their stages take them from {box.root})")

    def leave(model: tuple[str, str], trained) -> None:
        b, h = model
        trained.info["fingerprint"] = handoff.fingerprint(plan[b][1], b, h, plan[b][0])
        box.put(names[model], trained.info["fingerprint"], lambda folder: handoff.write_result(folder, trained))

    seed_everything(cfg.seed)
    trainer.train_cached(models, data, {b: c for b, (c, _, _) in plan.items()}, images.read_preprocessing(png),
                         features, progress=names, done=leave)


if __name__ == "__main__":
    sys.exit(run_stage("train", main))
