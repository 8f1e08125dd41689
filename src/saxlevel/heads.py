"""Classifier heads on cached backbone features (paper section 2.3).

dense: FC256-ReLU-Dropout(0.5)-FC5-softmax per image (the "CNN" rows of Table 5).
lstm2 / gru2: two stacked 128-unit layers; bilstm / bigru: one bidirectional 128-unit layer
(the "CNN-RNN" rows). RNN heads are many-to-many over a stack ordered apex->base, padded to
the longest stack with zero vectors that a Masking layer hides; softmax per slice.
"""

from __future__ import annotations

from saxlevel import CLASSES
from saxlevel.catalog import HEADS, RNN_HEADS

UNITS = 128


def apply_head(head: str, x, mask=None):
    """The head's layers on a features tensor ((B, D) for dense, (B, T, D) for RNN heads; ``mask`` (B, T)
    marks real slices). Shared by the cached-feature heads and the fine-tuned models."""
    from keras import layers

    n = len(CLASSES)
    if head == "dense":
        x = layers.Dense(256, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
        return layers.Dense(n, activation="softmax", name="level")(x)
    if head not in RNN_HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {HEADS}")
    cell = layers.LSTM if "lstm" in head else layers.GRU
    if head.startswith("bi"):
        x = layers.Bidirectional(cell(UNITS, return_sequences=True))(x, mask=mask)
    else:
        x = cell(UNITS, return_sequences=True)(x, mask=mask)
        x = cell(UNITS, return_sequences=True)(x, mask=mask)
    return layers.Dense(n, activation="softmax", name="level")(x)


def build_head(head: str, dims: int):
    """An uncompiled Keras model for one head (RNN heads take stacks of any length, zero-padded)."""
    import keras
    from keras import layers

    if head == "dense":
        inp = keras.Input((dims,), name="features")
        return keras.Model(inp, apply_head(head, inp), name="dense")
    if head not in RNN_HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {HEADS}")
    inp = keras.Input((None, dims), name="stack")
    return keras.Model(inp, apply_head(head, layers.Masking(mask_value=0.0)(inp)), name=head)
