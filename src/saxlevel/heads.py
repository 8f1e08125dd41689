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


def _recurrence(layer, x, mask):
    """The outputs of a GRU or LSTM layer over x (B, T, D) as keras computes them (its masking, direction and
    zero_output_for_mask), but with the input projection x @ kernel (+ input bias) done once for all slices
    before the time loop. Inside the loop keras multiplies each slice by the kernel, and its backward pass then
    adds one rank-B update per slice into the (D, 3 or 4 x 128) kernel gradient, which at Table 4's 2 stacks a
    batch costs more than everything else; hoisted, it is one matrix product each way."""
    from keras import layers, ops
    from keras.src import backend

    cell = layer.cell
    batch = ops.shape(x)[0]
    if isinstance(layer, layers.GRU):
        input_bias, recurrent_bias = cell.bias[0], cell.bias[1]  # reset_after: two bias rows
        proj = ops.matmul(x, cell.kernel) + input_bias

        def step(p, states):
            h = states[0]
            x_z, x_r, x_h = ops.split(p, 3, axis=-1)
            r_z, r_r, r_h = ops.split(ops.matmul(h, cell.recurrent_kernel) + recurrent_bias, 3, axis=-1)
            z = cell.recurrent_activation(x_z + r_z)
            r = cell.recurrent_activation(x_r + r_r)
            h = z * h + (1 - z) * cell.activation(x_h + r * r_h)
            return h, [h]

        init = [ops.zeros((batch, cell.units), x.dtype)]
    else:
        proj = ops.matmul(x, cell.kernel) + cell.bias

        def step(p, states):
            h, c = states
            z = ops.split(p + ops.matmul(h, cell.recurrent_kernel), 4, axis=1)
            c, o = cell._compute_carry_and_output_fused(z, c)
            h = o * cell.activation(c)
            return h, [h, c]

        init = [ops.zeros((batch, cell.units), x.dtype), ops.zeros((batch, cell.units), x.dtype)]
    _, outputs, _ = backend.rnn(step, proj, init, go_backwards=layer.go_backwards, mask=mask,
                                input_length=x.shape[1], zero_output_for_mask=layer.zero_output_for_mask,
                                return_all_outputs=True)
    return outputs


def _plain_recurrent(layer) -> bool:
    """A GRU / LSTM layer that _recurrence computes exactly: biases, no dropout, GRU's reset_after form,
    sequences out, no state in or out."""
    from keras import layers

    if not isinstance(layer, (layers.GRU, layers.LSTM)):
        return False
    cell = layer.cell
    return (cell.use_bias and not cell.dropout and not cell.recurrent_dropout and layer.return_sequences
            and not layer.return_state and not layer.stateful and (isinstance(layer, layers.LSTM) or cell.reset_after))


def training_forward(model):
    """model(x, training=True) of an RNN head of build_head, computed with the input projections out of the
    time loop (_recurrence): the same function and the same gradients, ~2-3x cheaper a training step at
    batches of 2 stacks on a CPU. None where the model is not such a head (then call the model)."""
    from keras import layers, ops

    body = model.layers[1:]
    if not body or not isinstance(body[0], layers.Masking) or body[0].mask_value != 0.0:
        return None
    for layer in body[1:]:
        if isinstance(layer, layers.Bidirectional):
            if layer.merge_mode != "concat" or not (_plain_recurrent(layer.forward_layer)
                                                    and _plain_recurrent(layer.backward_layer)):
                return None
        elif not (_plain_recurrent(layer) or isinstance(layer, layers.Dense)):
            return None

    def forward(x):
        mask = ops.any(ops.not_equal(x, 0.0), axis=-1)  # Masking(0): a slice of all zeros is padding
        h = x  # Masking multiplies by that mask, which leaves zero-padded stacks as they are
        for layer in body[1:]:
            if isinstance(layer, layers.Bidirectional):
                backward = _recurrence(layer.backward_layer, h, mask)  # apex <- base, flipped back
                h = ops.concatenate([_recurrence(layer.forward_layer, h, mask), ops.flip(backward, axis=1)], axis=-1)
            elif isinstance(layer, layers.Dense):
                h = layer(h)
            else:
                h = _recurrence(layer, h, mask)
        return h

    return forward
