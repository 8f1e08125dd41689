"""How hard is a single phantom image? Per-image level accuracy of simple references, side by side.

Answers "is the phantom too easy or too hard per image, or are the features the limit?" on the
current split (validation images, trained on train images):
- chance (majority class),
- slice position alone (logistic regression on relative position; sees no image),
- cached backbone features + logistic regression (what the dense head sees),
- raw pixels (64 px) + PCA + logistic regression,
- a small CNN trained end-to-end on 64 px images (what a per-image model can learn from the phantom).

    python benchmarks/phantom_difficulty.py [--split data/split.csv] [--features data/features] [--epochs 25]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from saxlevel import CLASSES
from saxlevel.evaluation.metrics import encode
from saxlevel.learning import features
from saxlevel.stageutil import seed_everything


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="data/split.csv")
    ap.add_argument("--features", default="data/features")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=25)
    args = ap.parse_args()
    seed_everything(0)
    data = pd.read_csv(args.split)
    tr, va = (data.split == "train").to_numpy(), (data.split == "val").to_numpy()
    y = encode(data.label)
    results = {"chance (majority class)": float(np.mean(y[va] == np.bincount(y[tr]).argmax()))}
    rel = (data.order / data.groupby(["subject", "phase"]).order.transform("max").clip(lower=1)).to_numpy()
    pos = np.c_[rel, rel**2]
    results["slice position only (no image)"] = LogisticRegression(max_iter=2000).fit(pos[tr], y[tr]).score(pos[va], y[va])
    for f in sorted(Path(args.features).glob("*.npy")):
        x = np.load(f)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(x[tr], y[tr])
        results[f"{f.stem} cached features + logistic regression"] = clf.score(x[va], y[va])
    imgs = features.load_images(data.path.tolist(), args.size).astype(np.float32) / 255.0
    flat = imgs.reshape(len(imgs), -1)
    clf = make_pipeline(PCA(100, random_state=0), LogisticRegression(max_iter=3000)).fit(flat[tr], y[tr])
    results[f"raw pixels ({args.size} px) + PCA + logistic regression"] = clf.score(flat[va], y[va])

    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((args.size, args.size, 1)),
        layers.Conv2D(16, 3, activation="relu", padding="same"), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu", padding="same"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu", padding="same"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu", padding="same"), layers.GlobalAveragePooling2D(),
        layers.Dropout(0.3), layers.Dense(len(CLASSES), activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(imgs[tr, ..., None], y[tr], validation_data=(imgs[va, ..., None], y[va]),
                     epochs=args.epochs, batch_size=32, verbose=0)
    results[f"small CNN trained end-to-end ({args.size} px, best epoch)"] = max(hist.history["val_accuracy"])
    print(f"per-image level accuracy on {int(va.sum())} validation images (trained on {int(tr.sum())}):")
    for k, v in results.items():
        print(f"  {v:6.3f}  {k}")


if __name__ == "__main__":
    main()
