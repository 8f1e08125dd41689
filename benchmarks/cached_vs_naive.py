"""Benchmark: one training epoch of the naive CNN-RNN (frozen backbone inside the model through
TimeDistributed, features recomputed every epoch, as in the paper's original code) against one
epoch of the same head on cached features, side by side in one run on the same phantom stacks.

Prints the per-epoch ratio and the projected cost of the full grid (4 backbones x 5 heads x 50
epochs) both ways. Run after `dvc repro split` (and extract, for the other backbones' throughput):

    python benchmarks/cached_vs_naive.py [--backbone mobilenet] [--head lstm2] [--stacks 16] [--size 224]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel.learning import backbones, features, heads, training
from saxlevel.stageutil import seed_everything


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="data/split.csv")
    ap.add_argument("--features", default="data/features")
    ap.add_argument("--backbone", default="mobilenet")
    ap.add_argument("--head", default="lstm2")
    ap.add_argument("--stacks", type=int, default=16, help="training stacks per measured epoch")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=50)
    args = ap.parse_args()
    import keras

    seed_everything(0)
    data = pd.read_csv(args.split)
    train = data[data.split == "train"]
    keys = train[["subject", "phase"]].drop_duplicates().head(args.stacks)
    part = train.merge(keys, on=["subject", "phase"]).reset_index(drop=True)
    T = int(part.groupby(["subject", "phase"]).size().max())
    n_images = len(part)

    backbone = backbones.build(args.backbone, args.size, "none")
    gray = features.load_images(part.path.tolist(), args.size)
    x_img = backbones.to_backbone_input(gray, args.backbone)
    dims = backbones.SPECS[args.backbone].features

    # Naive: images go through the frozen backbone inside the model, every epoch.
    stacks_img = np.zeros((len(keys), T, args.size, args.size, 3), np.float32)
    y = np.zeros((len(keys), T, 5), np.float32)
    w = np.zeros((len(keys), T), np.float32)
    for i, (_, g) in enumerate(part.groupby(["subject", "phase"], sort=True)):
        g = g.sort_values("order")
        stacks_img[i, : len(g)] = x_img[g.index.to_numpy()]
        y[i, : len(g)] = training.one_hot(g.label)
        w[i, : len(g)] = 1
    inp = keras.Input((T, args.size, args.size, 3))
    feats = keras.layers.TimeDistributed(backbone)(inp)
    naive = keras.Model(inp, heads.build_head(args.head, dims)(feats))
    naive.compile(optimizer="adam", loss="categorical_crossentropy")
    naive.fit(stacks_img[:2], y[:2], sample_weight=w[:2], epochs=1, batch_size=2, verbose=0)  # warm-up
    t0 = time.perf_counter()
    naive.fit(stacks_img, y, sample_weight=w, epochs=1, batch_size=2, verbose=0)
    naive_epoch = time.perf_counter() - t0

    # Cached: features computed once, the head trains on them.
    t0 = time.perf_counter()
    cache = np.asarray(backbone.predict(x_img, batch_size=32, verbose=0))
    extract_s = time.perf_counter() - t0
    st = training.make_stacks(part.assign(label=part.label), cache, T)
    head = heads.build_head(args.head, dims)
    head.compile(optimizer="adam", loss="categorical_crossentropy")
    head.fit(st.x[:2], st.y[:2], sample_weight=st.weight[:2], epochs=1, batch_size=2, verbose=0)  # warm-up
    t0 = time.perf_counter()
    head.fit(st.x, st.y, sample_weight=st.weight, epochs=1, batch_size=2, verbose=0)
    cached_epoch = time.perf_counter() - t0

    print(f"{args.backbone}-{args.head}, {len(keys)} stacks / {n_images} images at {args.size} px, 2 CPU-core run:")
    print(f"  naive epoch (backbone inside, TimeDistributed): {naive_epoch:8.2f} s")
    print(f"  cached epoch (head on feature cache):           {cached_epoch:8.3f} s")
    print(f"  one-off feature extraction for these images:    {extract_s:8.2f} s")
    print(f"  per-epoch ratio naive / cached: {naive_epoch / cached_epoch:.0f}x")

    # Projection to the full grid on the whole split: 4 backbones x 5 heads x E epochs.
    n_all, n_fit = len(data), int(data.split.isin(["train", "val"]).sum())
    scale = n_fit / n_images
    naive_img_s = naive_epoch / n_images  # seconds per image per epoch, this backbone
    ips = {args.backbone: n_images / extract_s}
    for b in backbones.SPECS:
        meta = Path(args.features) / f"{b}.json"
        if b not in ips and meta.exists():
            ips[b] = json.loads(meta.read_text())["images_per_second"]
    naive_total = cached_total = 0.0
    for _backbone, rate in ips.items():
        ratio_b = ips[args.backbone] / rate  # slower backbones cost proportionally more per image
        naive_total += 5 * args.epochs * n_fit * naive_img_s * ratio_b
        cached_total += n_all / rate + 5 * args.epochs * cached_epoch * scale
    print(f"projected grid ({len(ips)} backbones x 5 heads x {args.epochs} epochs, {n_fit} train+val images): "
          f"naive {naive_total / 3600:.1f} h vs cached {cached_total / 60:.1f} min "
          f"-> {naive_total / cached_total:.0f}x")


if __name__ == "__main__":
    main()
