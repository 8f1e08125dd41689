"""Train one model of either grid (the train and finetune stages): inputs, fitting, and what the model file
records about itself.

With the paper's settings (finetune none, no augmentation) the head trains on extract's feature cache;
otherwise the backbone runs inside the model on the PNG images (saxlevel.finetune) and the model file is
self-contained. Either way the model's saxlevel.json carries every choice that shaped its input, so
``saxlevel predict`` can repeat them exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saxlevel import CLASSES, backbones, catalog, training
from saxlevel.params import TrainSettings


@dataclass
class Trained:
    model: Any
    info: dict  # saxlevel.json
    predictions: pd.DataFrame  # val and test rows
    best_epoch: int
    best_val_loss: float


def model_info(backbone: str, head: str, cfg: TrainSettings, preprocessing: dict) -> dict:
    """The saxlevel.json of a model before training: names, classes, settings and the input's preprocessing."""
    return {"backbone": backbone, "head": head, "classes": list(CLASSES), "weights": cfg.weights,
            "finetune": cfg.finetune, "augment": cfg.augment, "image_size": cfg.image_size,
            "preprocess": backbones.spec(backbone).preprocess,
            "preprocessing": {**preprocessing, "image_size": cfg.image_size,
                              "resize": "zero-pad to a centred square, then bilinear resize"},
            "max_slices": cfg.max_slices, "batch_size": catalog.batch_size(backbone, head), "lr": cfg.lr,
            "seed": cfg.seed}


def train(backbone: str, head: str, data: pd.DataFrame, cfg: TrainSettings, preprocessing: dict,
          features_dir: str | Path | None = None, callbacks: list | None = None, progress: str = "") -> Trained:
    """Train ``backbone``-``head`` on split.csv rows ``data``; raises ValueError / FileNotFoundError /
    backbones.WeightsUnavailable naming the problem."""
    info = model_info(backbone, head, cfg, preprocessing)
    batch = info["batch_size"]
    if cfg.cached:
        if features_dir is None:
            raise ValueError("frozen, unaugmented models train on the feature cache: pass --features")
        feat_dir = Path(features_dir)
        inputs = np.load(feat_dir / f"{backbone}.npy")
        meta = json.loads((feat_dir / f"{backbone}.json").read_text())
        if meta["row_ids"] != data.row.tolist():
            raise ValueError(f"{feat_dir}/{backbone}.npy was extracted from another split.csv; "
                             f"re-run `dvc repro extract@{backbone}`")
        info.update(input="features", weights=meta["weights"], image_size=meta["image_size"],
                    preprocess=meta["preprocess"], feature_extractor=str(feat_dir / f"{backbone}.keras"))
        info["preprocessing"]["image_size"] = meta["image_size"]
        predict_fn: Callable[..., np.ndarray] = training.predict
        model, best, hist = training.fit(head, data, inputs, epochs=cfg.epochs, lr=cfg.lr, batch_size=batch,
                                         max_slices=cfg.max_slices, patience=cfg.patience,
                                         callbacks=callbacks or [], progress=progress)
    else:
        from saxlevel import finetune

        predict_fn = finetune.predict
        inputs = finetune.load_images(data.path.tolist(), cfg.image_size)
        train_rows = data[data.split == "train"]
        bn_paths = train_rows.sample(n=min(cfg.bn_images, len(train_rows)), random_state=cfg.seed).path.tolist()
        info.update(input="gray", input_range=[0, 255], padding="NaN slices (RNN stacks)")
        model, best, hist, facts = finetune.fit(backbone, head, data, inputs, cfg, batch_size=batch,
                                                bn_paths=bn_paths, callbacks=callbacks or [], progress=progress)
        info.update(facts)
    info.update(best_epoch=best.best_epoch + 1, epochs_run=len(hist.history["loss"]))
    rows = data[data.split.isin(["val", "test"])]
    probs = predict_fn(model, head, rows, inputs[rows.index.to_numpy()], cfg.max_slices)
    return Trained(model, info, training.predictions_frame(rows, probs), best.best_epoch + 1, float(best.best))
