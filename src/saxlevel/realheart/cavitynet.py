"""The real-heart model's network: a small 2.5-D U-Net that marks the LV cavity on each slice.

Input: one slice with its apical and basal neighbours as three channels (realdata.model_input, 2.5 mm pixels,
128 x 128); output: the probability of LV cavity per pixel. It is trained on the expert segmentations pixel by
pixel (binary cross-entropy plus soft Dice), which is how the levels are defined: a slice's level follows from
which slices of its stack hold LV cavity (seglevels). realheart turns the cavity maps into levels.

Augmentation (on the fly, one draw per image and the same for its three channels and its mask) is for the
scanners it has not seen: flips and quarter turns (image orientation differs by vendor and export), zoom 0.8-1.25
(pixel size and heart size), shifts, gamma 0.6-1.6, contrast and brightness, and Gaussian noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from saxlevel.realheart import realdata


@dataclass(frozen=True)
class NetSettings:
    base_filters: int = 16
    depth: int = 4
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    augment: bool = True
    seed: int = 0


def build(settings: NetSettings) -> Any:
    """The U-Net (Keras functional model, input 'slices' (S, S, 3), output 'cavity' (S, S, 1) in 0..1)."""
    import keras
    from keras import layers

    def block(x: Any, filters: int) -> Any:
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        return x

    inp = keras.Input((realdata.SIZE, realdata.SIZE, 3), name="slices")
    x, skips, f = inp, [], settings.base_filters
    for _ in range(settings.depth):
        x = block(x, f)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
        f *= 2
    x = block(x, f)
    for skip in reversed(skips):
        f //= 2
        x = layers.UpSampling2D()(x)
        x = layers.Concatenate()([x, skip])
        x = block(x, f)
    out = layers.Conv2D(1, 1, activation="sigmoid", name="cavity")(x)
    return keras.Model(inp, out, name="cavitynet")


def _loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy plus soft Dice over the batch (Dice keeps small apical cavities from vanishing)."""
    import keras.ops as K

    y_true = K.cast(y_true, y_pred.dtype)
    eps = 1e-6
    bce = -K.mean(y_true * K.log(y_pred + eps) + (1 - y_true) * K.log(1 - y_pred + eps))
    inter = K.sum(y_true * y_pred)
    dice = 1 - (2 * inter + 1) / (K.sum(y_true) + K.sum(y_pred) + 1)
    return bce + dice


def _augment(x: Any, y: Any, seed: Any) -> tuple[Any, Any]:
    """One random draw for an image (x: (S, S, 3)) and its mask (y: (S, S, 1)); stateless, so seeded."""
    import tensorflow as tf

    s = realdata.SIZE
    seeds = tf.random.experimental.stateless_split(seed, 9)
    both = tf.concat([x, tf.cast(y, tf.float32)], axis=-1)
    both = tf.image.stateless_random_flip_left_right(both, seeds[0])
    both = tf.image.stateless_random_flip_up_down(both, seeds[1])
    k = tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32)
    both = tf.image.rot90(both, k)
    zoom = tf.random.stateless_uniform([], seeds[3], 0.8, 1.25)
    size = tf.cast(tf.round(s * zoom), tf.int32)
    img = tf.image.resize(both[..., :3], [size, size], method="bilinear")
    msk = tf.image.resize(both[..., 3:], [size, size], method="nearest")
    both = tf.image.resize_with_crop_or_pad(tf.concat([img, msk], -1), s + 32, s + 32)
    both = tf.image.stateless_random_crop(both, [s, s, 4], seeds[4])
    x, y = both[..., :3], both[..., 3:]
    gamma = tf.exp(tf.random.stateless_uniform([], seeds[5], np.log(0.6), np.log(1.6)))
    x = tf.pow(tf.clip_by_value(x, 0.0, 1.0), gamma)
    contrast = tf.random.stateless_uniform([], seeds[6], 0.75, 1.25)
    shift = tf.random.stateless_uniform([], seeds[7], -0.1, 0.1)
    noise = tf.random.stateless_uniform([], seeds[8], 0.0, 0.05) * tf.random.stateless_normal(tf.shape(x), seeds[8])
    x = tf.clip_by_value(x * contrast + shift + noise, 0.0, 1.0)
    return x, y


def dataset(x: np.ndarray, y: np.ndarray, settings: NetSettings, shuffle: bool) -> Any:
    """A tf.data pipeline of (input, mask) batches: shuffled and augmented for training, as is for validation."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y[..., None].astype(np.uint8)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=settings.seed, reshuffle_each_iteration=True)
        if settings.augment:
            counter = tf.data.Dataset.random(seed=settings.seed).batch(2)
            ds = tf.data.Dataset.zip((ds, counter)).map(
                lambda xy, sd: _augment(xy[0], xy[1], tf.cast(sd, tf.int64)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(settings.batch_size).prefetch(tf.data.AUTOTUNE)


def train(x: np.ndarray, y: np.ndarray, settings: NetSettings, x_val: np.ndarray | None = None,
          y_val: np.ndarray | None = None, progress: bool = True) -> tuple[Any, list[dict]]:
    """Train the U-Net on (N, S, S, 3) inputs and (N, S, S) bool masks; the last epoch's weights are kept (no
    early stopping: validation is for reporting). Returns (model, per-epoch losses)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    model = build(settings)
    model.compile(optimizer=keras.optimizers.Adam(settings.lr), loss=_loss)
    val = dataset(x_val, y_val, settings, False) if x_val is not None and y_val is not None else None
    hist = model.fit(dataset(x, y, settings, True), validation_data=val, epochs=settings.epochs,
                     verbose=2 if progress else 0)
    curves = [{"epoch": i + 1, **{k: float(v[i]) for k, v in hist.history.items()}}
              for i in range(len(hist.history["loss"]))]
    return model, curves


def cavity_maps(model: Any, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, S, S) LV-cavity probabilities of (N, S, S, 3) inputs."""
    out = [np.asarray(model(x[i:i + batch_size], training=False))[..., 0] for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, realdata.SIZE, realdata.SIZE), np.float32)
