"""Benchmark: training images per second for each fine-tuning mode and backbone, side by side in one run.

Modes, from cheapest to dearest:
  cached      the paper: frozen backbone, the head trains on the feature cache (extract paid once)
  frozen+aug  frozen backbone inside the model (needed for augmentation), no backbone gradients
  top         the last blocks train (backbones.TOP_BLOCKS), augmented images through the whole network
  top-cached  the same without augmentation: the frozen bottom's outputs are cached once (not timed,
              like extract) and only the top blocks and the head run
  all         the whole backbone trains
Each figure is real optimiser steps (train_on_batch, dense head, the Table 4 batch size) on the default
phantom's training PNGs (random weights, finetune_grid.image_size). RNN heads are measured for MobileNet
(2 stacks per step). It then projects the wall time of the full 4 x 5 fine-tuned grid on this machine
for finetune_grid.epochs epochs over the default phantom's training and validation images.

    python benchmarks/finetune_cost.py [--size 96] [--steps 6] [--backbones mobilenet ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from saxlevel import catalog
from saxlevel import params as P
from saxlevel.learning import backbones, finetune, heads, training
from saxlevel.stageutil import seed_everything

MODES = ("cached", "frozen+aug", "top", "top-cached", "all")


def settings(prm: dict, mode: str, size: int) -> P.TrainSettings:
    over = {"finetune": {"cached": "none", "frozen+aug": "none", "top-cached": "top"}.get(mode, mode),
            "augment": mode not in ("cached", "top-cached"),
            "image_size": size}
    prm = {**prm, P.FINETUNE_SECTION: {**prm[P.FINETUNE_SECTION], **over}}
    return P.train_settings(prm, P.FINETUNE_SECTION)


def images_per_second(name: str, head: str, mode: str, cfg: P.TrainSettings, part: pd.DataFrame,
                      images: np.ndarray, steps: int) -> float:
    """Training images per second over ``steps`` optimiser steps after two warm-up steps."""
    import keras

    batch = catalog.batch_size(name, head)
    if mode == "cached":
        dims = backbones.spec(name).features
        model = heads.build_head(head, dims)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        feats = np.random.default_rng(0).normal(size=(len(part), dims)).astype(np.float32)
        if head in heads.RNN_HEADS:
            st = training.make_stacks(part, feats, 25)
            x, y, w = st.x, st.y, st.weight
            per_step = [int(w[i:i + batch].sum()) for i in range(0, len(x), batch)]
            step = lambda i: model.train_on_batch(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch],  # noqa: E731
                                                  sample_weight=w[i * batch:(i + 1) * batch])
        else:
            y = training.one_hot(part.label)
            per_step = [batch] * (len(part) // batch)
            step = lambda i: model.train_on_batch(feats[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])  # noqa: E731
    else:
        if mode == "top-cached":
            _, model, bottom, _ = finetune.prepare_cached_top(name, head, cfg, [])
            images = np.asarray(bottom.predict(images.astype(np.float32)[..., None], batch_size=64, verbose=0))
        else:
            model, _ = finetune.prepare(name, head, cfg, [])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        data = finetune.batches(part, images, training.one_hot(part.label), head, batch, 25, cfg.augment, True, 0)
        per_step = [int(np.prod(data[i][1].shape[:-1])) if head == "dense" else int(data[i][2].sum())
                    for i in range(len(data))]
        step = lambda i: model.train_on_batch(*data[i])  # noqa: E731  (augmentation included in the time)
    n = min(steps + 2, len(per_step))
    step(0), step(1)
    t0 = time.perf_counter()
    for i in range(2, n):
        step(i)
    return sum(per_step[2:n]) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="data/split.csv")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--size", type=int, help="image size (default: finetune_grid.image_size)")
    ap.add_argument("--steps", type=int, default=6, help="timed optimiser steps per measurement")
    ap.add_argument("--backbones", nargs="+", default=list(backbones.SPECS))
    ap.add_argument("--heads", nargs="+", default=["dense", "bigru"],
                    help="heads to measure (RNN heads for MobileNet only; they need the TensorFlow backend)")
    args = ap.parse_args()
    prm = P.load(args.params)
    size = args.size or int(P.get(prm, "finetune_grid.image_size"))
    epochs = int(P.train_settings(prm, P.FINETUNE_SECTION).epochs)
    seed_everything(0)
    data = pd.read_csv(args.split)
    train = data[data.split == "train"].reset_index(drop=True)
    n_train, n_val = len(train), int((data.split == "val").sum())
    images = finetune.load_images(train.path.tolist(), size)
    rows = []
    for name in args.backbones:
        for head in [h for h in args.heads if h == "dense" or name == "mobilenet"]:
            for mode in MODES:
                ips = images_per_second(name, head, mode, settings(prm, mode, size), train, images, args.steps)
                rows.append({"backbone": name, "head": head, "mode": mode, "train_images_per_s": round(ips, 1)})
                print(f"{name:15s} {head:6s} {mode:10s} {ips:9.1f} training images/s", flush=True)
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index=["backbone", "head"], columns="mode", values="train_images_per_s")[list(MODES)]
    import keras

    print(f"\nTraining images/s at {size} px on this machine, Keras backend {keras.backend.backend()} "
          "(dense: Table 4 batch; bigru: 2 stacks):")
    print(wide.to_string())
    print("\nSlow-down against the cached head:")
    print((wide[["cached"]].to_numpy() / wide).round(1).to_string())
    # Projection: each fine-tuned model = epochs x (train images at the training pace + validation images at
    # ~3x that pace, inference only); the RNN heads of a backbone cost what its dense head costs per image.
    dense = table[table["head"] == "dense"].set_index(["backbone", "mode"]).train_images_per_s
    print(f"\nProjected {len(args.backbones)} backbone(s) x 5 heads x {epochs} epochs on the default phantom "
          f"({n_train} train + {n_val} val images per epoch):")
    for mode in MODES[1:]:
        per_model = {b: epochs * (n_train / dense[(b, mode)] + n_val / (3 * dense[(b, mode)]))
                     for b in args.backbones}
        total = 5 * sum(per_model.values())
        detail = ", ".join(f"{b} {s / 60:.1f}" for b, s in per_model.items())
        print(f"  {mode:10s} {total / 3600:5.2f} h  (minutes per model: {detail})")


if __name__ == "__main__":
    main()
