"""Benchmark: the label -> train -> pre-fill loop, measured on the phantom with its truth as the oracle.

A user labels N subjects by hand, trains (`dvc exp run -S data.labels=...`), then opens
`saxlevel label --predictions ...` on the rest and only corrects what the model got wrong. For
N = 5, 10, 20, 40 labelled subjects (seeded draw; 1 in 5 of them held for validation) this trains the
selected head on extract's cached features exactly as train@ does, pre-fills every slice of the same
held-out subjects, and prints the share of pre-filled slices that need a correction. It then projects
the person-hours to label all 974 Kaggle subjects (Table 1, after filtering; ~10.3 slices x 2 phases
each) against labelling from scratch, with the seconds per action stated below (change them with the
options). Run after `dvc repro extract@mobilenet`:

    python benchmarks/label_loop.py [--backbone mobilenet] [--head bigru] [--sizes 5 10 20 40] [--finetune]

--finetune trains like the finetune@ stage instead (finetune_grid settings: the backbone trains on the
PNGs, augmented), the model that sees the images when no ImageNet weights are at hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel import CLASSES, catalog
from saxlevel import params as P
from saxlevel.learning import training
from saxlevel.stageutil import seed_everything

KAGGLE_SUBJECTS = 974  # paper Table 1, after the exclusion rules


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="data/split.csv")
    ap.add_argument("--features", default="data/features")
    ap.add_argument("--backbone", default="mobilenet")
    ap.add_argument("--head", default="bigru")
    ap.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune", action="store_true", help="train as finetune@ does (finetune_grid settings)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--scratch-s", type=float, default=2.5,
                    help="seconds per slice labelled from scratch: look, choose the class, click (boundary mode "
                         "fills runs of slices, but every slice must still be looked at)")
    ap.add_argument("--check-s", type=float, default=1.0, help="seconds to check a pre-filled slice that is right")
    ap.add_argument("--fix-s", type=float, default=3.0, help="seconds to correct a wrong pre-filled slice")
    args = ap.parse_args()
    data = pd.read_csv(args.split)
    feats = np.load(Path(args.features) / f"{args.backbone}.npy")
    meta = json.loads((Path(args.features) / f"{args.backbone}.json").read_text())
    if meta["row_ids"] != data.row.tolist():
        raise SystemExit(f"{args.features}/{args.backbone}.npy is from another split.csv: dvc repro extract first")
    subjects = np.random.default_rng(args.seed).permutation(sorted(data.subject.unique()))
    largest = max(args.sizes)
    if largest >= len(subjects) - 5:
        raise SystemExit(f"{len(subjects)} subjects: --sizes up to {len(subjects) - 6} leave a held-out set")
    held_out = set(subjects[largest:].tolist())
    slices_per_subject = data.groupby("subject").size().mean()
    # ED -> ES copy: the share of ES slices whose level equals the ED level of the same series.
    ed = data[data.phase == "ED"].set_index(["subject", "series"]).label
    es = data[data.phase == "ES"].set_index(["subject", "series"]).label
    same = float((es == ed.reindex(es.index)).mean())
    print(f"{len(subjects)} phantom subjects, {len(held_out)} held out for pre-filling "
          f"({slices_per_subject:.1f} images per subject, ED and ES); {args.backbone}-{args.head}"
          f"{' fine-tuned (finetune_grid settings)' if args.finetune else ' on the feature cache'}, "
          f"features.weights={meta['weights']}; ED->ES copy leaves {same:.0%} of ES slices right")
    rows = []
    images = None
    for n in args.sizes:
        labelled = subjects[:n].tolist()
        n_val = max(1, n // 5)
        split = np.where(data.subject.isin(labelled[n_val:]), "train",
                         np.where(data.subject.isin(labelled[:n_val]), "val", "rest"))
        run = data.assign(split=split)
        seed_everything(args.seed)
        batch = catalog.batch_size(args.backbone, args.head)
        target = run[run.subject.isin(held_out)]
        if args.finetune:
            from saxlevel.learning import finetune

            cfg = P.train_settings(P.load(args.params), P.FINETUNE_SECTION)
            if images is None:
                images = finetune.load_images(data.path.tolist(), cfg.image_size)
            train_paths = run[run.split == "train"].path
            bn_paths = train_paths.sample(n=min(cfg.bn_images, len(train_paths)), random_state=cfg.seed).tolist()
            model, best, _, _ = finetune.fit(args.backbone, args.head, run, images, cfg, batch_size=batch,
                                             bn_paths=bn_paths)
            probs = finetune.predict(model, args.head, target, images[target.index.to_numpy()], cfg.max_slices)
        else:
            model, best, _ = training.fit(args.head, run, feats, epochs=args.epochs, lr=1e-3, batch_size=batch,
                                          patience=10)
            probs = training.predict(model, args.head, target, feats[target.index.to_numpy()])
        wrong = float((np.array(CLASSES)[probs.argmax(1)] != target.label.to_numpy()).mean())
        rows.append({"labelled subjects": n, "corrections": wrong, "best epoch": best.best_epoch + 1})
    scratch_h = KAGGLE_SUBJECTS * slices_per_subject * args.scratch_s / 3600
    print(f"\nassumed seconds per action: from scratch {args.scratch_s}/slice; pre-filled: check "
          f"{args.check_s}/slice + {args.fix_s} per correction")
    print(f"{'labelled N':>10} {'slices to correct':>18} {'hours for 974 subjects':>23} {'vs from scratch':>16}")
    for r in rows:
        n = r["labelled subjects"]
        hours = (n * slices_per_subject * args.scratch_s + (KAGGLE_SUBJECTS - n) * slices_per_subject
                 * (args.check_s + r["corrections"] * args.fix_s)) / 3600
        print(f"{n:>10} {r['corrections']:>17.1%} {hours:>23.1f} {hours / scratch_h:>15.2f}x")
    print(f"{'scratch':>10} {'100% (all)':>18} {scratch_h:>23.1f} {1:>15.2f}x")
    # From scratch, but ES starts as a copy of ED (key c): ES slices are checked and the changed ones fixed.
    copy_h = KAGGLE_SUBJECTS * slices_per_subject / 2 * (args.scratch_s + args.check_s + (1 - same) * args.fix_s) / 3600
    print(f"{'scratch+c':>10} {f'ES {1 - same:.0%}':>18} {copy_h:>23.1f} {copy_h / scratch_h:>15.2f}x"
          "   (ED by hand, ES copied from ED with c, then corrected)")


if __name__ == "__main__":
    main()
