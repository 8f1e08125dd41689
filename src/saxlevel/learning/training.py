"""Train a head on cached features and predict per-slice level probabilities."""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from saxlevel import CLASS_INDEX, CLASSES, STACK_KEY
from saxlevel.learning.heads import RNN_HEADS, build_head, training_forward


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


def _progress_callback(epochs: int, desc: str, position: int = 0):
    import keras
    from tqdm import tqdm

    class EpochProgress(keras.callbacks.Callback):
        """A tqdm bar over epochs with the current train / validation loss."""

        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc=desc, unit="epoch", position=position)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix(loss=f"{logs.get('loss', np.nan):.3f}", val_loss=f"{logs.get('val_loss', np.nan):.3f}")
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochProgress()


@dataclass
class History:
    """Per-epoch logs, as keras' History holds them: loss, accuracy, val_loss, val_accuracy."""

    history: dict[str, list[float]]


def fixed_batches(n: int, batch_size: int, rng: np.random.Generator | None) -> np.ndarray:
    """(batches, batch_size) row indices of one epoch: a seeded permutation (``rng``; None keeps the order),
    the last batch filled up with -1 (an empty slot: zero weight, so it changes neither loss nor gradient)."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    full = -(-n // batch_size) * batch_size
    return np.concatenate([order, np.full(full - n, -1)]).reshape(-1, batch_size)


class Loop:
    """The paper's training protocol on preloaded arrays, at the hardware's pace.

    Adam on the categorical cross-entropy averaged over the real slices (images) of each batch, padding and
    empty slots weighted 0, so they count in neither loss nor accuracy: exactly what keras' fit computes with
    Masking and sample weights. What fit adds per step (Python callbacks, data adapters, one graph call per
    batch through its generic machinery) costs more than the step itself at Table 4's batch of 2 stacks, and
    so does one call per batch of even a compiled step (a Bi-GRU step at 13 slices on 2 cores: 6.7 ms called
    batch by batch, 3.5 ms inside one compiled loop). So a whole epoch is one XLA-compiled
    function: a loop over the epoch's batches, in the seeded order, each gathered from the training rows in
    TensorFlow's memory, run forward and backward, and applied with Adam, batch after batch exactly as one
    call per batch would. The RNN heads' time loop stops at each batch's longest stack
    (heads.training_forward), so padding to the split's longest costs only the input projection."""

    def __init__(self, model, lr: float, x: np.ndarray, y: np.ndarray, w: np.ndarray, batch_size: int,
                 jit: bool = True, arrays: tuple | None = None) -> None:
        import keras
        import tensorflow as tf

        self.model, self.batch_size = model, batch_size
        self.x, self.y, self.w = x, y, w
        # The training rows stay in TensorFlow's memory and each step gathers its batch there: per epoch only
        # the batches' row numbers cross from Python (``arrays``: the same tensors, shared between models).
        self.arrays = arrays if arrays is not None else tuple(tf.constant(a) for a in (x, y, w))
        self.optimizer = keras.optimizers.Adam(lr)
        self.optimizer.build(model.trainable_variables)
        self.train_forward = training_forward(model) or (lambda x: model(x, training=True))
        self.forward = inference(model)
        self._compile(jit)

    def _compile(self, jit: bool) -> None:
        """The epoch function, traced once for the split's (batches, batch_size) row numbers."""
        import tensorflow as tf

        self.jit = jit
        spec = tf.TensorSpec([-(-len(self.x) // self.batch_size), self.batch_size], tf.int32)
        self.run_epoch = tf.function(self._epoch_steps, jit_compile=jit, input_signature=[spec], autograph=False)

    def _epoch_steps(self, batches):
        """Every batch's step, in order: (loss, right slices) per batch."""
        import tensorflow as tf

        n = batches.shape[0]
        losses, rights = (tf.TensorArray(tf.float32, size=n, element_shape=[]) for _ in range(2))

        def body(i, losses, rights):
            loss, right = self._batch_step(batches[i])
            return [i + 1, losses.write(i, loss), rights.write(i, right)]

        _, losses, rights = tf.while_loop(lambda i, *_: i < n, body, [tf.constant(0), losses, rights])
        return losses.stack(), rights.stack()

    def _batch_step(self, idx):
        """The step on rows ``idx`` of the training arrays (-1: an empty slot, weighted 0)."""
        import tensorflow as tf

        keep = tf.cast(idx >= 0, tf.float32)
        x, y, w = (tf.gather(a, tf.maximum(idx, 0)) for a in self.arrays)
        shape = [-1] + [1] * (len(x.shape) - 1)
        x, y = x * tf.reshape(keep, shape), y * tf.reshape(keep, shape)
        return self.step(x, y, w * tf.reshape(keep, shape[:len(w.shape)]))

    def step(self, x, y, w):
        """One step on a batch given as arrays (traced inside the compiled epoch, or a caller's loop)."""
        import keras
        import tensorflow as tf

        with tf.GradientTape() as tape:
            p = self.train_forward(x)
            loss = tf.reduce_sum(keras.losses.categorical_crossentropy(y, p) * w) / tf.reduce_sum(w)
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply(grads, self.model.trainable_variables)
        right = tf.reduce_sum(w * tf.cast(tf.argmax(p, -1) == tf.argmax(y, -1), w.dtype))
        return loss, right

    def _run_epoch(self, batches: np.ndarray):
        """The compiled epoch; where XLA cannot compile the model (some GPU RNN kernels), the same loop as a
        plain graph, with a warning (compilation fails before anything is updated)."""
        import tensorflow as tf

        try:
            return self.run_epoch(batches)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError) as exc:
            if not self.jit:
                raise
            warnings.warn(f"XLA could not compile the training loop ({str(exc).splitlines()[0][:200]}); "
                          "training it as a plain TensorFlow graph instead (same arithmetic, slower)", stacklevel=2)
            self._compile(False)
            return self.run_epoch(batches)

    def epoch(self, rng: np.random.Generator) -> tuple[float, float]:
        """One pass over the training rows in a seeded order: (mean batch loss weighted by the rows in each
        batch, as keras reports it; accuracy over the real slices)."""
        batches = fixed_batches(len(self.x), self.batch_size, rng).astype(np.int32)
        losses, right = (np.asarray(t, np.float64) for t in self._run_epoch(batches))
        rows = (batches >= 0).sum(axis=1)
        return float(np.average(losses, weights=rows)), float(right.sum()) / float(self.w.sum())

    def evaluate(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
        """(cross-entropy, accuracy) over every real slice of a split."""
        p = self.probabilities(x)
        eps = 1e-7  # keras' clipping of probabilities in the categorical cross-entropy
        ce = -(y * np.log(np.clip(p, eps, 1 - eps))).sum(-1)
        right = (p.argmax(-1) == y.argmax(-1)).astype(np.float64)
        return float((ce * w).sum() / w.sum()), float((right * w).sum() / w.sum())

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The model's output for every row of ``x`` (inference mode)."""
        return in_chunks(self.forward, x)


_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference(model):
    """model(x, training=False) as one traced function for any number of rows (and of slices), kept with the
    model: validation each epoch and the final predictions share one trace (tracing holds Python's lock, so
    with many models trained side by side every trace saved is time saved)."""
    import tensorflow as tf

    if model not in _INFERENCE:
        shape = model.inputs[0].shape
        spec = tf.TensorSpec([None] * (len(shape) - 1) + [shape[-1]], tf.float32)
        _INFERENCE[model] = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    return _INFERENCE[model]


def in_chunks(forward, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``forward`` (a traced inference call) over the rows of ``x``, ``chunk`` rows at a time."""
    if not len(x):
        return np.zeros((0, *x.shape[1:-1], len(CLASSES)), np.float32)
    return np.concatenate([np.asarray(forward(x[i:i + chunk])) for i in range(0, len(x), chunk)])


def _arrays(head: str, data: pd.DataFrame, feats: np.ndarray, max_slices: int):
    """(train arrays, val arrays) of one head: stacks for the RNN heads, single images for dense."""
    train, val = data[data.split == "train"], data[data.split == "val"]
    if head in RNN_HEADS:
        tr, va = make_stacks(train, feats, max_slices), make_stacks(val, feats, max_slices)
        return (tr.x, tr.y, tr.weight), (va.x, va.y, va.weight)
    return ((feats[train.index], one_hot(train.label), np.ones(len(train), np.float32)),
            (feats[val.index], one_hot(val.label), np.ones(len(val), np.float32)))


def _epochs(loop: Loop, val_arrays: tuple, cbs, model, epochs: int, seed: int) -> History:
    """The epoch loop of one model: epoch e's batch order is drawn from (seed, e); the callbacks keep the best
    weights and may stop it early."""
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    model.stop_training = False
    cbs.on_train_begin()
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        loss, acc = loop.epoch(np.random.default_rng([seed, epoch]))
        val_loss, val_acc = loop.evaluate(*val_arrays)
        logs = {"loss": loss, "accuracy": acc, "val_loss": val_loss, "val_accuracy": val_acc}
        for k, v in logs.items():
            history[k].append(v)
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end()
    return History(history)


def workers_default() -> int:
    """Models trained at once: one per CPU core (a step at Table 4's batch sizes keeps about one core busy)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


Model = tuple[str, str]  # (name of the feature matrix it trains on, head)


def iter_fit(models: list[Model], data: pd.DataFrame, feats: dict[str, np.ndarray], *, epochs: int, lr: float,
             batch_sizes: dict[Model, int], max_slices: int = 25, patience: int = 0,
             callbacks: dict[Model, list] | None = None, progress: dict[Model, str] | None = None, seed: int = 0,
             jit: bool = True, workers: int | None = None) -> Iterator[tuple[Model, tuple]]:
    """Train several models, each a head on one of the feature matrices ``feats``, ``workers`` at a time in
    threads (TensorFlow releases the GIL while a step runs, and one small step keeps about one core busy);
    yield (model key, (model, best-epoch callback, history)) in the order of ``models``, each as soon as it and
    those before it are trained, so the caller can finish one (predict, save) while the others train. Each
    head is built right after the seeds are set to ``seed`` and has its own optimizer, batch order and
    callbacks, so it trains exactly as it would alone: what else trains beside it changes none of its numbers."""
    import keras
    import tensorflow as tf

    data = data.reset_index(drop=True)
    callbacks, progress = callbacks or {}, progress or {}
    jobs, shared = [], {}
    for i, key in enumerate(models):  # built one after the other in this thread: seeded initial weights
        name, head = key
        keras.utils.set_random_seed(seed)
        model = build_head(head, feats[name].shape[1])
        kind = (name, head in RNN_HEADS)  # stacks or single images: the same arrays for every head of a kind
        if kind not in shared:
            (x, y, w), val_arrays = _arrays(head, data, feats[name], max_slices)
            shared[kind] = (x, y, w), val_arrays, tuple(tf.constant(a) for a in (x, y, w))
        (x, y, w), val_arrays, tensors = shared[kind]
        loop = Loop(model, lr, x, y, w, batch_size=batch_sizes[key], jit=jit, arrays=tensors)
        best = _best_weights_callback(patience)
        bar = [_progress_callback(epochs, progress[key], position=i)] if key in progress else []
        cbs = keras.callbacks.CallbackList([best] + list(callbacks.get(key, [])) + bar, model=model)
        jobs.append((key, model, best, loop, val_arrays, cbs))

    def run(job) -> tuple:
        key, model, best, loop, val_arrays, cbs = job
        return key, (model, best, _epochs(loop, val_arrays, cbs, model, epochs, seed))

    n = min(len(jobs), workers or workers_default())
    if n <= 1:
        yield from map(run, jobs)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="train") as pool:
        yield from pool.map(run, jobs)


def fit_many(heads: list[str], data: pd.DataFrame, feats: np.ndarray, *, batch_sizes: dict[str, int],
             callbacks: dict[str, list] | None = None, progress: dict[str, str] | None = None,
             **kw) -> dict[str, tuple]:
    """Several heads on the same features (iter_fit); {head: (model, best-epoch callback, history)}."""
    key = {h: ("", h) for h in heads}
    fitted = iter_fit([key[h] for h in heads], data, {"": feats}, batch_sizes={key[h]: batch_sizes[h] for h in heads},
                      callbacks={key[h]: c for h, c in (callbacks or {}).items()},
                      progress={key[h]: p for h, p in (progress or {}).items()}, **kw)
    return {k[1]: result for k, result in fitted}


def fit(head: str, data: pd.DataFrame, feats: np.ndarray, *, epochs: int, lr: float, batch_size: int,
        max_slices: int = 25, patience: int = 0, callbacks: list | None = None, progress: str | None = None,
        seed: int = 0, jit: bool = True):
    """Train one head on the train split, validate on val; return (model, best-epoch callback, history).
    ``jit``: XLA-compiled steps (False: plain graph, the same arithmetic). See fit_many."""
    return fit_many([head], data, feats, epochs=epochs, lr=lr, batch_sizes={head: batch_size},
                    max_slices=max_slices, patience=patience, callbacks={head: callbacks or []},
                    progress={head: progress} if progress else None, seed=seed, jit=jit)[head]


def predict(model, head: str, data: pd.DataFrame, feats: np.ndarray, max_slices: int = 25) -> np.ndarray:
    """Per-image probabilities (N, 5) for ``data``'s rows; ``feats`` is aligned with those rows."""
    if len(data) != len(feats):
        raise ValueError(f"{len(data)} rows but {len(feats)} feature vectors")
    data = data.reset_index(drop=True)
    forward = inference(model)
    if head not in RNN_HEADS:
        return in_chunks(forward, feats)
    st = make_stacks(data, feats, max_slices)
    probs = in_chunks(forward, st.x)
    out = np.zeros((len(data), len(CLASSES)), np.float32)
    for i, pos in enumerate(st.rows):
        out[pos] = probs[i, : len(pos)]
    return out
