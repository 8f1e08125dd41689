"""Train a head on cached features and predict per-slice level probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from saxlevel import CLASS_INDEX, CLASSES, STACK_KEY
from saxlevel.heads import RNN_HEADS, build_head


@dataclass
class Stacks:
    """Features arranged per stack: x (S, T, D) zero-padded, y (S, T, 5), weight (S, T) 1 = real slice."""

    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    rows: list[np.ndarray]  # split.csv positions of each stack's slices, apex -> base


def one_hot(labels: pd.Series) -> np.ndarray:
    return np.eye(len(CLASSES), dtype=np.float32)[labels.map(CLASS_INDEX).to_numpy()]


def stack_rows(data: pd.DataFrame, max_slices: int) -> list[np.ndarray]:
    """Index labels of each (subject, phase) stack's rows, apex -> base; a stack longer than max_slices
    is an error naming the parameter."""
    groups = [g.sort_values("order").index.to_numpy() for _, g in data.groupby(STACK_KEY, sort=True)]
    longest = max((len(g) for g in groups), default=0)
    if longest > max_slices:
        raise ValueError(f"a stack has {longest} slices but train.max_slices is {max_slices}; raise train.max_slices")
    return groups


def make_stacks(data: pd.DataFrame, feats: np.ndarray, max_slices: int) -> Stacks:
    """Group images into (subject, phase) stacks ordered apex->base, zero-padded to the longest stack
    (at most max_slices). Padding is masked, so its length changes no output; padding only to the
    longest real stack rather than always to max_slices saves a quarter of the RNN training time."""
    rows = stack_rows(data, max_slices)
    S, D, T = len(rows), feats.shape[1], max((len(r) for r in rows), default=1)
    x = np.zeros((S, T, D), np.float32)
    y = np.zeros((S, T, len(CLASSES)), np.float32)
    w = np.zeros((S, T), np.float32)
    for i, pos in enumerate(rows):
        x[i, : len(pos)] = feats[pos]
        y[i, : len(pos)] = one_hot(data.label.loc[pos])
        w[i, : len(pos)] = 1.0
    return Stacks(x, y, w, rows)


def _best_weights_callback(patience: int):
    import keras

    class BestWeights(keras.callbacks.Callback):
        """Keep the weights of the epoch with the lowest validation loss (paper: the dip of the
        validation curve); stop after ``patience`` epochs without improvement."""

        def __init__(self) -> None:
            super().__init__()
            self.best, self.best_epoch, self.weights = np.inf, -1, None

        def on_epoch_end(self, epoch, logs=None):
            loss = float((logs or {}).get("val_loss", np.inf))
            if loss < self.best:
                self.best, self.best_epoch, self.weights = loss, epoch, self.model.get_weights()
            elif patience and epoch - self.best_epoch >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    return BestWeights()


def _progress_callback(epochs: int, desc: str):
    import keras
    from tqdm import tqdm

    class EpochProgress(keras.callbacks.Callback):
        """A tqdm bar over epochs with the current train / validation loss."""

        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc=desc, unit="epoch")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix(loss=f"{logs.get('loss', np.nan):.3f}", val_loss=f"{logs.get('val_loss', np.nan):.3f}")
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochProgress()


def fit(head: str, data: pd.DataFrame, feats: np.ndarray, *, epochs: int, lr: float, batch_size: int,
        max_slices: int = 25, patience: int = 0, callbacks: list | None = None, verbose: int = 0,
        progress: str | None = None):
    """Train on the train split, validate on val; return (model, best-epoch callback, history)."""
    import keras

    data = data.reset_index(drop=True)
    train, val = data[data.split == "train"], data[data.split == "val"]
    model = build_head(head, feats.shape[1])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy",
                  weighted_metrics=["accuracy"])
    best = _best_weights_callback(patience)
    cbs = [best] + list(callbacks or []) + ([_progress_callback(epochs, progress)] if progress else [])
    if head in RNN_HEADS:
        tr, va = make_stacks(train, feats, max_slices), make_stacks(val, feats, max_slices)
        # Padded positions get weight 0: they count in neither the loss nor the accuracy.
        hist = model.fit(tr.x, tr.y, sample_weight=tr.weight, validation_data=(va.x, va.y, va.weight),
                         epochs=epochs, batch_size=batch_size, shuffle=True, callbacks=cbs, verbose=verbose)
    else:
        hist = model.fit(feats[train.index], one_hot(train.label),
                         validation_data=(feats[val.index], one_hot(val.label)),
                         epochs=epochs, batch_size=batch_size, shuffle=True, callbacks=cbs, verbose=verbose)
    return model, best, hist


def predict(model, head: str, data: pd.DataFrame, feats: np.ndarray, max_slices: int = 25) -> np.ndarray:
    """Per-image probabilities (N, 5) for ``data``'s rows; ``feats`` is aligned with those rows."""
    if len(data) != len(feats):
        raise ValueError(f"{len(data)} rows but {len(feats)} feature vectors")
    data = data.reset_index(drop=True)
    if head not in RNN_HEADS:
        return np.asarray(model.predict(feats, verbose=0))
    st = make_stacks(data, feats, max_slices)
    probs = np.asarray(model.predict(st.x, verbose=0))
    out = np.zeros((len(data), len(CLASSES)), np.float32)
    for i, pos in enumerate(st.rows):
        out[pos] = probs[i, : len(pos)]
    return out


def predictions_frame(data: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """The predictions CSV contract: split,subject,phase,order,series,frame,true,p_*,pred."""
    out = data[["split", "subject", "phase", "order", "series", "frame"]].reset_index(drop=True).copy()
    out["true"] = data["label"].to_numpy()
    for i, c in enumerate(CLASSES):
        out[f"p_{c}"] = np.round(probs[:, i], 6)
    out["pred"] = [CLASSES[i] for i in probs.argmax(1)]
    return out
