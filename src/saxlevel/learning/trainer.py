"""Train one model of either grid (the train and finetune stages): inputs, fitting, and what the model file
records about itself.

With the paper's settings (finetune none, no augmentation) the head trains on extract's feature cache;
otherwise the backbone runs inside the model on the PNG images (saxlevel.learning.finetune) and the model file is
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

from saxlevel import CLASSES, catalog
from saxlevel.evaluation import table5
from saxlevel.learning import backbones, training
from saxlevel.params import TrainSettings


@dataclass
class Trained:
    model: Any
    info: dict  # saxlevel.json
    predictions: pd.DataFrame  # val and test rows
    best_epoch: int
    best_val_loss: float
    history: dict[str, list[float]]  # per epoch: loss, accuracy, val_loss, val_accuracy (as keras logs them)


def model_info(backbone: str, head: str, cfg: TrainSettings, preprocessing: dict) -> dict:
    """The saxlevel.json of a model before training: names, classes, settings and the input's preprocessing."""
    return {"backbone": backbone, "head": head, "classes": list(CLASSES), "weights": cfg.weights,
            "finetune": cfg.finetune, "augment": cfg.augment, "image_size": cfg.image_size,
            "preprocess": backbones.spec(backbone).preprocess,
            "preprocessing": {**preprocessing, "image_size": cfg.image_size,
                              "resize": "zero-pad to a centred square, then bilinear resize"},
            "max_slices": cfg.max_slices, "batch_size": catalog.batch_size(backbone, head), "lr": cfg.lr,
            "seed": cfg.seed}


def load_features(backbone: str, data: pd.DataFrame, features_dir: str | Path | None) -> tuple[np.ndarray, dict]:
    """extract's feature cache of ``backbone`` and its metadata; it must be of these split.csv rows."""
    if features_dir is None:
        raise ValueError("frozen, unaugmented models train on the feature cache: pass --features")
    feat_dir = Path(features_dir)
    inputs = np.load(feat_dir / f"{backbone}.npy")
    meta = json.loads((feat_dir / f"{backbone}.json").read_text())
    if meta["row_ids"] != data.row.tolist():
        raise ValueError(f"{feat_dir}/{backbone}.npy was extracted from another split.csv; "
                         f"re-run `dvc repro extract@{backbone}`")
    return inputs, {**meta, "feature_extractor": str(feat_dir / f"{backbone}.keras")}


def _finish(model, info: dict, best, hist, data: pd.DataFrame, inputs: np.ndarray, head: str,
            cfg: TrainSettings, predict_fn: Callable[..., np.ndarray]) -> Trained:
    """The trained model's record and its val/test predictions."""
    info = {**info, "best_epoch": best.best_epoch + 1, "epochs_run": len(hist.history["loss"])}
    rows = data[data.split.isin(["val", "test"])]
    probs = predict_fn(model, head, rows, inputs[rows.index.to_numpy()], cfg.max_slices)
    return Trained(model, info, table5.predictions_frame(rows, probs), best.best_epoch + 1, float(best.best),
                   hist.history)


def cached_info(backbone: str, head: str, cfg: TrainSettings, preprocessing: dict, meta: dict) -> dict:
    """The saxlevel.json of a head trained on ``backbone``'s feature cache (``meta``: the cache's record)."""
    info = model_info(backbone, head, cfg, preprocessing)
    info.update(input="features", weights=meta["weights"], image_size=meta["image_size"],
                preprocess=meta["preprocess"], feature_extractor=meta["feature_extractor"])
    info["preprocessing"]["image_size"] = meta["image_size"]
    return info


def train_cached(models: list[tuple[str, str]], data: pd.DataFrame, cfgs: dict[str, TrainSettings],
                 preprocessing: dict, features_dir: str | Path | None, callbacks: dict[tuple, list] | None = None,
                 progress: dict[tuple, str] | None = None, workers: int | None = None,
                 done: Callable[[tuple[str, str], Trained], None] | None = None) -> dict[tuple[str, str], Trained]:
    """Train several (backbone, head) models on their backbones' feature caches at once (training.iter_fit:
    each as it would train alone, ``workers`` in parallel; ``cfgs``: each backbone's settings, which may differ
    in nothing the fitting reads); {(backbone, head): Trained}. ``done(key, trained)`` is called for each
    model as soon as it is finished, while later ones still train."""
    backbones = list(dict.fromkeys(b for b, _ in models))
    first = cfgs[backbones[0]]
    fitting = ("epochs", "lr", "max_slices", "patience", "seed")
    for b in backbones:
        if any(getattr(cfgs[b], f) != getattr(first, f) for f in fitting):
            raise ValueError(f"{b} and {backbones[0]} train with different settings; train them separately")
    loaded = {b: load_features(b, data, features_dir) for b in backbones}
    infos = {(b, h): cached_info(b, h, cfgs[b], preprocessing, loaded[b][1]) for b, h in models}
    fitted = training.iter_fit(models, data, {b: inputs for b, (inputs, _) in loaded.items()}, epochs=first.epochs,
                               lr=first.lr, batch_sizes={k: infos[k]["batch_size"] for k in models},
                               max_slices=first.max_slices, patience=first.patience, callbacks=callbacks,
                               progress=progress, seed=first.seed, workers=workers)
    data = data.reset_index(drop=True)
    out = {}
    for key, (model, best, hist) in fitted:
        b, h = key
        out[key] = _finish(model, infos[key], best, hist, data, loaded[b][0], h, cfgs[b], training.predict)
        if done is not None:
            done(key, out[key])
    return out


def train(backbone: str, head: str, data: pd.DataFrame, cfg: TrainSettings, preprocessing: dict,
          features_dir: str | Path | None = None, callbacks: list | None = None, progress: str = "") -> Trained:
    """Train ``backbone``-``head`` on split.csv rows ``data``; raises ValueError / FileNotFoundError /
    backbones.WeightsUnavailable naming the problem."""
    if cfg.cached:
        key = (backbone, head)
        return train_cached([key], data, {backbone: cfg}, preprocessing, features_dir, {key: callbacks or []},
                            {key: progress} if progress else None)[key]
    from saxlevel.learning import finetune

    info = model_info(backbone, head, cfg, preprocessing)
    inputs = finetune.load_images(data.path.tolist(), cfg.image_size)
    train_rows = data[data.split == "train"]
    bn_paths = train_rows.sample(n=min(cfg.bn_images, len(train_rows)), random_state=cfg.seed).path.tolist()
    info.update(input="gray", input_range=[0, 255], padding="NaN slices (RNN stacks)")
    model, best, hist, facts = finetune.fit(backbone, head, data, inputs, cfg, batch_size=info["batch_size"],
                                            bn_paths=bn_paths, callbacks=callbacks or [], progress=progress)
    info.update(facts)
    return _finish(model, info, best, hist, data, inputs, head, cfg, finetune.predict)
