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

from dataclasses import dataclass, field
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
    slice_loss: float = 0.0  # weight of the per-slice term (loss): does the slice hold cavity at all?
    myocardium: bool = False  # a second output channel: the LV myocardium (runs' ring feature reads it)
    flips: bool = False  # maps averaged over the image and its three flips (cavity_maps), in validation and predict
    end_dropout: float = 0.0  # chance, per neighbour channel, that training shows it as a stack end (_augment)
    beyond_repeat: int = 1  # slices without LV cavity shown this many times an epoch (realtrain.training_rows)
    repeat_sources: dict[str, int] = field(default_factory=dict)  # a source's slices shown this many times an epoch


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
    out = layers.Conv2D(2 if settings.myocardium else 1, 1, activation="sigmoid", name="cavity")(x)
    return keras.Model(inp, out, name="cavitynet")


TOP_PIXELS = 8  # a slice's cavity score: the mean of its 8 most confident pixels (50 mm^2, an apical cavity)


def loss(slice_weight: float = 0.0) -> Any:
    """Binary cross-entropy plus soft Dice over the batch (Dice keeps small apical cavities from vanishing), plus,
    with ``slice_weight``, a per-slice cross-entropy of the slice's score (the mean of its TOP_PIXELS most
    confident pixels) against whether the slice holds cavity. Pixel terms barely notice a blob of a few dozen
    pixels on a slice beyond the LV (the outflow tract or the atrium above the base, which the development data
    rarely show); the slice term weighs it as much as a whole missed slice, which is what the levels turn on.

    The masks carry realdata's bits; a model with a second output channel learns the myocardium there by the same
    pixel terms, on the slices whose source segments it."""
    import keras.ops as K

    eps = 1e-6

    def pixel_terms(truth: Any, pred: Any, weight: Any) -> Any:
        bce = -K.sum(weight * (truth * K.log(pred + eps) + (1 - truth) * K.log(1 - pred + eps)))
        bce = bce / K.maximum(K.sum(weight), 1.0)
        inter = K.sum(weight * truth * pred)
        return bce + 1 - (2 * inter + 1) / (K.sum(weight * truth) + K.sum(weight * pred) + 1)

    def fn(y_true: Any, y_pred: Any) -> Any:
        bits = K.cast(y_true[..., 0], "int32")
        cavity = K.cast(bits % 2, y_pred.dtype)
        out = pixel_terms(cavity, y_pred[..., 0], K.ones_like(cavity))
        if slice_weight:
            n = K.shape(y_pred)[0]
            score = K.mean(K.top_k(K.reshape(y_pred[..., 0], (n, -1)), TOP_PIXELS)[0], axis=-1)
            holds = K.max(K.reshape(cavity, (n, -1)), axis=-1)
            out = out + slice_weight * -K.mean(holds * K.log(score + eps) + (1 - holds) * K.log(1 - score + eps))
        if y_pred.shape[-1] > 1:
            myocardium = K.cast((bits // 2) % 2, y_pred.dtype)
            known = K.cast(bits // 4, y_pred.dtype)
            out = out + pixel_terms(myocardium, y_pred[..., 1], known)
        return out

    return fn


def as_stack_end(x: Any, apical: Any, basal: Any) -> Any:
    """An input (S, S, 3) as it looks at the apical and/or basal end of a stack: that neighbour channel repeats the
    slice (realdata.with_neighbours). ``apical``, ``basal``: booleans (tensors or Python)."""
    import tensorflow as tf

    return tf.stack([tf.where(apical, x[..., 1], x[..., 0]), x[..., 1], tf.where(basal, x[..., 1], x[..., 2])],
                    axis=-1)


def _augment(x: Any, y: Any, seed: Any, end_dropout: float = 0.0) -> tuple[Any, Any]:
    """One random draw for an image (x: (S, S, 3)) and its mask (y: (S, S, 1)); stateless, so seeded.

    With ``end_dropout``, each neighbour channel is, with that chance, replaced by the slice itself, which is how
    the input shows a stack's end slice (realdata.with_neighbours). The development stacks (ACDC) nearly always
    start at the base with an LV slice at ED, so without this an end slice's look would itself say "LV cavity";
    other scanners' stacks often end above the base, in the outflow tract or the atria."""
    import tensorflow as tf

    s = realdata.SIZE
    if end_dropout:
        drop = tf.random.stateless_uniform([2], tf.random.experimental.stateless_fold_in(seed, 9)) < end_dropout
        x = as_stack_end(x, drop[0], drop[1])
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
                lambda xy, sd: _augment(xy[0], xy[1], tf.cast(sd, tf.int64), settings.end_dropout),
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
    model.compile(optimizer=keras.optimizers.Adam(settings.lr), loss=loss(settings.slice_loss))
    val = dataset(x_val, y_val, settings, False) if x_val is not None and y_val is not None else None
    hist = model.fit(dataset(x, y, settings, True), validation_data=val, epochs=settings.epochs,
                     verbose=2 if progress else 0)
    curves = [{"epoch": i + 1, **{k: float(v[i]) for k, v in hist.history.items()}}
              for i in range(len(hist.history["loss"]))]
    return model, curves


FLIPS = ((), (1,), (2,), (1, 2))  # the image, flipped up-down, left-right, and both (axes of (N, S, S, ...))


def cavity_maps(model: Any, x: np.ndarray, batch_size: int = 32, flips: bool = False) -> np.ndarray:
    """(N, S, S) LV-cavity probabilities of (N, S, S, 3) inputs; (N, S, S, 2) with the myocardium's where the
    model has that channel (runs.presence_features takes either). With ``flips``, the mean of the maps of the
    image and its three flips, each flipped back: orientation differs by vendor and export (training augments it),
    and the mean steadies the maps where the network is unsure, at the ends of the LV."""
    channels = int(model.output.shape[-1])
    total = np.zeros((len(x), realdata.SIZE, realdata.SIZE, channels), np.float32)
    for axes in FLIPS if flips else FLIPS[:1]:
        xf = np.flip(x, axis=axes) if axes else x
        out = [np.asarray(model(np.ascontiguousarray(xf[i:i + batch_size]), training=False))
               for i in range(0, len(x), batch_size)]
        if out:
            total += np.flip(np.concatenate(out), axis=axes) if axes else np.concatenate(out)
    maps = total / (len(FLIPS) if flips else 1)
    return maps[..., 0] if channels == 1 else maps
