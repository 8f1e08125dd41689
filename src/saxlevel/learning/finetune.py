"""Fine-tuning: the backbone trains together with the head, on (optionally augmented) images.

The paper froze its backbones and left layer-wise fine-tuning and a stack-consistent data generator as
future work (section 5). Here a model is one network from the grayscale image to the level:

    gray 0-255 -> 3 channels -> the backbone's preprocess_input (as layers) -> backbone -> head

For the dense head the input is one image; for RNN heads it is a stack (slices apex->base, padded with
augment.PAD images). A SliceEncoder runs the backbone on the real slices only and hands the RNN an
explicit mask, so padded slices touch neither BatchNorm batch statistics, the RNN, the loss nor the
accuracy. `finetune` says how much of the backbone trains: none (frozen; only used here with augmentation,
otherwise the feature cache serves), top (the last blocks, TOP_BLOCKS) or all.

BatchNorm (finetune.batchnorm: auto): with pretrained weights (imagenet or a file) the BatchNorm layers keep
their statistics and affine parameters frozen (inference mode), the usual Keras fine-tuning recipe: small
target batches would otherwise wreck statistics learned on ImageNet. With random weights (none) there is
nothing to keep: the statistics are first estimated on training images (as in extract), then BatchNorm
trains with momentum `bn_momentum` (0.9 rather than Keras' 0.99, so the moving statistics follow the
fast-changing weights; at 0.99 validation output collapsed on one class in our measurements).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
import numpy as np
import pandas as pd

from saxlevel import CLASSES, catalog
from saxlevel.learning import augment, backbones, features
from saxlevel.learning.heads import RNN_HEADS, apply_head
from saxlevel.learning.training import one_hot, stack_rows
from saxlevel.params import TrainSettings

MODES, TOP_BLOCKS = catalog.FINETUNE_MODES, backbones.TOP_BLOCKS


def top_start(model, name: str) -> int:
    """Index in model.layers of the first layer that `finetune: top` trains."""
    pattern = re.compile(TOP_BLOCKS[name][0])
    for i, layer in enumerate(model.layers):
        if pattern.search(layer.name):
            return i
    raise ValueError(f"no layer of {name} matches {TOP_BLOCKS[name][0]!r}")  # pragma: no cover


def set_trainable(model, name: str, mode: str, bn_train: bool, bn_momentum: float) -> int:
    """Unfreeze the backbone per ``mode``; BatchNorm layers train only if ``bn_train``. Returns the
    number of trainable backbone parameters."""
    if mode not in MODES:
        raise ValueError(f"finetune must be one of {MODES}, got {mode!r}")
    model.trainable = mode != "none"  # Keras 3: a frozen parent hides its children's weights
    if mode == "none":
        return 0
    start = 0 if mode == "all" else top_start(model, name)
    for i, layer in enumerate(model.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= start and (bn_train or not is_bn)
        if is_bn and layer.trainable:
            layer.momentum = bn_momentum
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@keras.saving.register_keras_serializable(package="saxlevel")
class GrayToBackbone(keras.layers.Layer):
    """(…, H, W, 1) gray 0-255 -> (…, H, W, 3) exactly as backbones.to_backbone_input does it:
    keras.applications' preprocess_input is x / 127.5 - 1 for MobileNet, NASNet and ResNetV2 ('tf'
    mode) and the identity for EfficientNet and EfficientNet-Lite0 (they rescale inside the network)."""

    def __init__(self, backbone: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone
        self.tf_mode = not backbones.spec(backbone).rescales_inside

    def call(self, x):
        x = keras.ops.concatenate([x, x, x], axis=-1)
        return x / 127.5 - 1.0 if self.tf_mode else x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


@keras.saving.register_keras_serializable(package="saxlevel")
class SliceEncoder(keras.layers.Layer):
    """Run an image model on every real slice of (B, T, ...) stacks -> (B, T, D) with a (B, T) mask.

    The slices are images (B, T, H, W, 1), or cached outputs of a frozen bottom (finetune top). Padded
    slices (all augment.PAD, NaN) are removed before the image model runs, so they never enter BatchNorm
    batch statistics or any arithmetic, and get zero features plus mask False for the RNN."""

    def __init__(self, image_model, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_model = image_model
        self.supports_masking = True

    def build(self, input_shape):
        self.built = True

    @staticmethod
    def real(x):
        """(B, T) True for real slices: a padded slice is NaN everywhere, real ones are finite."""
        return keras.ops.all(keras.ops.isfinite(x), axis=tuple(range(2, len(x.shape))))

    def call(self, x, training=None):
        import tensorflow as tf  # boolean_mask needs dynamic shapes: TF backend (the project's stack)

        shape = tf.shape(x)
        flat = tf.reshape(x, tf.concat([[-1], shape[2:]], 0))
        valid = tf.reshape(self.real(x), [-1])
        feats = self.image_model(tf.boolean_mask(flat, valid), training=training)
        # Position k of the flat stack -> row k' of [zeros; feats] (0 for padding): gather, not scatter.
        index = tf.cumsum(tf.cast(valid, tf.int32)) * tf.cast(valid, tf.int32)
        table = tf.concat([tf.zeros_like(feats[:1]), feats], 0)
        return tf.reshape(tf.gather(table, index), tf.stack([shape[0], shape[1], tf.shape(feats)[-1]]))

    def compute_mask(self, x, mask=None):
        return self.real(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.image_model.output_shape[-1])

    def get_config(self):
        return {**super().get_config(), "image_model": keras.saving.serialize_keras_object(self.image_model)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["image_model"] = keras.saving.deserialize_keras_object(config["image_model"])
        return cls(**config)


def build_model(name: str, head: str, backbone_model) -> keras.Model:
    """The whole network, gray image (dense) or gray stack (RNN heads) in, per-slice softmax out."""
    size = backbone_model.input_shape[1]
    image = keras.Input((size, size, 1), name="image")
    image_model = keras.Model(image, backbone_model(GrayToBackbone(name)(image)), name=f"{name}_image")
    if head == "dense":
        return keras.Model(image, apply_head("dense", image_model.output), name=f"{name}-dense-finetuned")
    if head not in RNN_HEADS:
        raise ValueError(f"unknown head {head!r}")
    stack = keras.Input((None, size, size, 1), name="stack")
    encoder = SliceEncoder(image_model, name="slice_encoder")
    feats = encoder(stack)
    return keras.Model(stack, apply_head(head, feats, mask=encoder.compute_mask(stack)),
                       name=f"{name}-{head}-finetuned")


def prepare(name: str, head: str, cfg: TrainSettings, bn_paths: Sequence[str]) -> tuple[keras.Model, dict]:
    """Backbone (BatchNorm statistics estimated for random weights), unfrozen per cfg, inside the model."""
    backbone_model, facts = _backbone(name, cfg, bn_paths)
    return build_model(name, head, backbone_model), facts


def _backbone(name: str, cfg: TrainSettings, bn_paths: Sequence[str]) -> tuple[keras.Model, dict]:
    backbone_model, n_bn = features.prepare_backbone(name, cfg.image_size, cfg.weights, bn_paths)
    trainable = set_trainable(backbone_model, name, cfg.finetune, cfg.batchnorm_trains, cfg.bn_momentum)
    facts = {"backbone_trainable_parameters": trainable, "backbone_parameters": int(backbone_model.count_params()),
             "batchnorm_trains": cfg.batchnorm_trains, "batchnorm_estimated_layers": n_bn,
             "top_blocks": TOP_BLOCKS[name][1] if cfg.finetune == "top" else None}
    return backbone_model, facts


def split_at_top(backbone_model, name: str) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) sharing the backbone's layers. bottom: gray image -> the tensors that enter the top
    blocks, concatenated on channels (NASNet's last cell takes two); top: that -> features."""
    start = top_start(backbone_model, name)
    entering = [t for layer in backbone_model.layers[start:]
                for t in (layer.input if isinstance(layer.input, list) else [layer.input])]
    crossing = [layer.output for layer in backbone_model.layers[:start] if any(layer.output is t for t in entering)]
    size = backbone_model.input_shape[1]
    image = keras.Input((size, size, 1), name="image")
    cut = keras.Model(backbone_model.input, crossing)(GrayToBackbone(name)(image))
    bottom = keras.Model(image, keras.ops.concatenate(cut, axis=-1) if len(crossing) > 1 else cut[0],
                         name=f"{name}_bottom")
    channels = [int(t.shape[-1]) for t in crossing]
    inp = keras.Input(bottom.output_shape[1:], name="bottom_output")
    parts = keras.ops.split(inp, list(np.cumsum(channels)[:-1]), axis=-1) if len(crossing) > 1 else [inp]
    top = keras.Model(inp, keras.Model(crossing, backbone_model.output)(parts), name=f"{name}_top")
    return bottom, top


def head_layers(model) -> list:
    """The head's layers: everything after the image model or the slice encoder."""
    last = max(i for i, layer in enumerate(model.layers) if isinstance(layer, (keras.Model, SliceEncoder)))
    return model.layers[last + 1:]


def prepare_cached_top(name: str, head: str, cfg: TrainSettings, bn_paths: Sequence[str]):
    """`finetune: top` without augmentation: the frozen bottom's outputs are computed once (a cache, like
    extract's) and only the top blocks and the head train on them.

    Returns (final model gray -> level, training model bottom-output -> level, bottom model, facts); the two
    models share the top blocks' layers, and copy_head moves the head's weights after training."""
    backbone_model, facts = _backbone(name, cfg, bn_paths)
    bottom, top = split_at_top(backbone_model, name)
    if head == "dense":
        inp = keras.Input(bottom.output_shape[1:], name="bottom_output")
        train_model = keras.Model(inp, apply_head("dense", top(inp)), name=f"{name}-dense-top")
    else:
        stack = keras.Input((None, *bottom.output_shape[1:]), name="stack")
        encoder = SliceEncoder(top, name="slice_encoder")
        train_model = keras.Model(stack, apply_head(head, encoder(stack), mask=encoder.compute_mask(stack)),
                                  name=f"{name}-{head}-top")
    facts["bottom_cache"] = list(bottom.output_shape[1:])
    return build_model(name, head, backbone_model), train_model, bottom, facts


def copy_head(source, target) -> None:
    """Copy the head's weights layer by layer (same head architecture on both models)."""
    for a, b in zip(head_layers(source), head_layers(target), strict=True):
        b.set_weights(a.get_weights())


class Batches(keras.utils.PyDataset):
    """Training/validation batches of images (dense) or PAD-padded stacks (RNN heads), seeded.

    Each epoch reshuffles with its own seed and draws one augmentation per stack (RNN) or image (dense),
    so a run is reproducible whatever the order in which Keras asks for batches."""

    def __init__(self, images: np.ndarray, groups: list[np.ndarray], labels: np.ndarray, batch_size: int,
                 stacked: bool, augment_on: bool = False, shuffle: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.images, self.groups, self.labels = images, groups, labels
        self.batch_size, self.stacked, self.augment_on, self.shuffle, self.seed = (
            batch_size, stacked, augment_on, shuffle, seed)
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        n = len(self.groups)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __len__(self) -> int:
        return int(np.ceil(len(self.groups) / self.batch_size))

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()

    def __getitem__(self, i: int):
        picked = [self.groups[k] for k in self.order[i * self.batch_size:(i + 1) * self.batch_size]]
        rng = np.random.default_rng([self.seed, self.epoch, i, 1])
        if not self.stacked:
            rows = np.concatenate(picked)
            x = self.images[rows].astype(np.float32)
            if self.augment_on:
                x = augment.augment_images(x, rng)
            return with_channel(x, self.images), self.labels[rows]
        # One length for every batch of the dataset (tf.data fixes the shape from the first batch).
        x, y, w = pad_stacks(self.images, self.labels, picked, max(len(g) for g in self.groups))
        if self.augment_on:
            x = augment.augment_stacks(x, rng)
        return with_channel(x, self.images), y, w


def with_channel(x: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Gray images (N, S, S) get their channel axis; cached bottom outputs (N, h, w, c) have one."""
    return x[..., None] if source.ndim == 3 else x


def pad_stacks(images: np.ndarray, labels: np.ndarray | None, stacks: list[np.ndarray],
               length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S, T, ...) float slices padded with PAD, (S, T, 5) one-hot labels, (S, T) weights 1 = real slice."""
    t = length or max(len(s) for s in stacks)
    x = np.full((len(stacks), t, *images.shape[1:]), augment.PAD, np.float32)
    y = np.zeros((len(stacks), t, len(CLASSES)), np.float32)
    wt = np.zeros((len(stacks), t), np.float32)
    for i, rows in enumerate(stacks):
        x[i, : len(rows)] = images[rows]
        if labels is not None:
            y[i, : len(rows)] = labels[rows]
        wt[i, : len(rows)] = 1.0
    return x, y, wt


def batches(part: pd.DataFrame, images: np.ndarray, labels: np.ndarray, head: str, batch_size: int,
            max_slices: int, augment_on: bool, shuffle: bool, seed: int) -> Batches:
    """Batches over ``part``'s rows; its index gives positions in ``images`` and ``labels`` (one-hot)."""
    stacked = head in RNN_HEADS
    groups = stack_rows(part, max_slices) if stacked else [np.array([i]) for i in part.index.to_numpy()]
    return Batches(images, groups, labels, batch_size, stacked, augment_on, shuffle, seed)


def fit(name: str, head: str, data: pd.DataFrame, images: np.ndarray, cfg: TrainSettings, *, batch_size: int,
        bn_paths: Sequence[str] = (), callbacks: list | None = None, progress: str | None = None):
    """Fine-tune on the train split (augmented if cfg.augment), validate on val; keep the best epoch.

    ``images`` (N, S, S) uint8 is aligned with ``data``'s rows. Returns (model gray -> level, best-epoch
    callback, history, facts). `finetune: top` without augmentation trains on the frozen bottom's cache."""
    from saxlevel.learning.training import _best_weights_callback, _progress_callback

    data = data.reset_index(drop=True)
    cached_top = cfg.finetune == "top" and not cfg.augment
    if cached_top:
        final, model, bottom, facts = prepare_cached_top(name, head, cfg, bn_paths)
        inputs = np.asarray(bottom.predict(images.astype(np.float32)[..., None], batch_size=64, verbose=0))
    else:
        model, facts = prepare(name, head, cfg, bn_paths)
        final, inputs = model, images
    model.compile(optimizer=keras.optimizers.Adam(cfg.lr), loss="categorical_crossentropy",
                  weighted_metrics=["accuracy"])
    labels = one_hot(data.label)
    tr = batches(data[data.split == "train"], inputs, labels, head, batch_size, cfg.max_slices, cfg.augment, True,
                 cfg.seed)
    va = batches(data[data.split == "val"], inputs, labels, head, batch_size, cfg.max_slices, False, False, cfg.seed)
    best = _best_weights_callback(cfg.patience)
    cbs = [best] + list(callbacks or []) + ([_progress_callback(cfg.epochs, progress)] if progress else [])
    hist = model.fit(tr, validation_data=va, epochs=cfg.epochs, callbacks=cbs, verbose=0)
    if cached_top:
        copy_head(model, final)
    return final, best, hist, facts


def predict(model, head: str, data: pd.DataFrame, images: np.ndarray, max_slices: int = 25,
            batch_size: int = 32) -> np.ndarray:
    """Per-image probabilities (N, 5) for ``data``'s rows; ``images`` (N, S, S) aligned with those rows."""
    data = data.reset_index(drop=True)
    if head not in RNN_HEADS:
        x = with_channel(images.astype(np.float32), images)
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    out = np.zeros((len(data), len(CLASSES)), np.float32)
    for rows in stack_rows(data, max_slices):
        x, _, _ = pad_stacks(images, None, [rows])
        out[rows] = np.asarray(model.predict(with_channel(x, images), verbose=0))[0, : len(rows)]
    return out


def load_images(paths: Sequence[str], size: int) -> np.ndarray:
    """(N, size, size) uint8: the PNGs after the same square resize as extract."""
    return features.load_images(list(paths), size)
