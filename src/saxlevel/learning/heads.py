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


def _cell_step(layer, x):
    """(input projection of all slices (B, T, gates), step(projected slice, states) -> (output, states),
    initial states) of a GRU or LSTM layer: keras' cell arithmetic with x @ kernel (+ input bias) taken out."""
    import tensorflow as tf
    from keras import layers, ops

    cell = layer.cell
    zeros = tf.zeros(tf.stack([tf.shape(x)[0], cell.units]), x.dtype)
    if isinstance(layer, layers.GRU):
        input_bias, recurrent_bias = cell.bias[0], cell.bias[1]  # reset_after: two bias rows

        def gru(p, states):
            h = states[0]
            x_z, x_r, x_h = ops.split(p, 3, axis=-1)
            r_z, r_r, r_h = ops.split(ops.matmul(h, cell.recurrent_kernel) + recurrent_bias, 3, axis=-1)
            z = cell.recurrent_activation(x_z + r_z)
            r = cell.recurrent_activation(x_r + r_r)
            h = z * h + (1 - z) * cell.activation(x_h + r * r_h)
            return h, [h]

        return ops.matmul(x, cell.kernel) + input_bias, gru, [zeros]

    def lstm(p, states):
        h, c = states
        z = ops.split(p + ops.matmul(h, cell.recurrent_kernel), 4, axis=1)
        c, o = cell._compute_carry_and_output_fused(z, c)
        h = o * cell.activation(c)
        return h, [h, c]

    return ops.matmul(x, cell.kernel) + cell.bias, lstm, [zeros, zeros]


def _recurrence(directions: list, x, mask, steps) -> list:
    """The outputs of GRU or LSTM layers over the same x (B, T, D), each as keras computes it (its masking,
    direction and zero_output_for_mask), in one time loop: both directions of a Bidirectional layer advance
    together, the backward one from the last slice. Two savings for training. The input projection
    x @ kernel (+ input bias) is done once for all slices before the loop: inside it keras multiplies each
    slice by the kernel, and its backward pass then adds one rank-B update per slice into the (D, 3 or 4 x 128)
    kernel gradient, which at Table 4's 2 stacks a batch costs more than everything else. And the loop runs
    ``steps`` times, up to the batch's longest stack, not to the padded length T: past it every slice is masked,
    where keras keeps the state and outputs zeros, so those steps change nothing (going backwards they come
    first, from the zero initial state, and leave it zero). Outputs come in slice order for both directions."""
    import tensorflow as tf

    length = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
    keep = tf.TensorArray(tf.bool, size=length, element_shape=mask.shape[:1] + [1], clear_after_read=False).unstack(
        tf.transpose(mask)[..., None])
    plans, init, last0, outs = [], [], [], []
    for layer in directions:
        proj, step, states = _cell_step(layer, x)
        time_major = tf.transpose(proj, [1, 0, 2])
        plans.append((layer, step, tf.TensorArray(x.dtype, size=length, element_shape=time_major.shape[1:])
                      .unstack(time_major)))
        init.append(states)
        last0.append(states[0])
        outs.append(tf.TensorArray(x.dtype, size=length, element_shape=states[0].shape))

    def body(i, states, last, outputs):
        new_states, new_last, new_outputs = [], [], []
        for (layer, step, inputs), st, prev, ta in zip(plans, states, last, outputs):
            t = steps - 1 - i if layer.go_backwards else i
            h, new = step(inputs.read(t), st)
            real = keep.read(t)
            new_states.append([tf.where(real, n, s) for n, s in zip(new, st)])
            # a masked slice outputs zeros (zero_output_for_mask, as Bidirectional sets it) or the last output
            out = tf.where(real, h, tf.zeros_like(h) if layer.zero_output_for_mask else prev)
            new_last.append(out)
            new_outputs.append(ta.write(t, out))
        return [i + 1, new_states, new_last, new_outputs]

    _, _, last, outs = tf.while_loop(lambda i, *_: i < steps, body, [tf.constant(0), init, last0, outs],
                                     maximum_iterations=length)
    result = []
    for layer, final, ta in zip(directions, last, outs):
        out = ta.stack()  # time-major; slices never written (past ``steps``) are zeros
        if not layer.zero_output_for_mask and not layer.go_backwards:  # keras carries the last output past them
            out = tf.where(tf.range(length)[:, None, None] < steps, out, final[None])
        result.append(tf.transpose(out, [1, 0, 2]))
    return result


def _plain_recurrent(layer) -> bool:
    """A GRU / LSTM layer that _recurrence computes exactly: biases, no dropout, GRU's reset_after form,
    sequences out, no state in or out."""
    from keras import layers

    if not isinstance(layer, (layers.GRU, layers.LSTM)):
        return False
    cell = layer.cell
    return (cell.use_bias and not cell.dropout and not cell.recurrent_dropout and layer.return_sequences
            and not layer.return_state and not layer.stateful and (isinstance(layer, layers.LSTM) or cell.reset_after))


def _dropout(layer, h):
    """Dropout(rate) in training, as keras draws it (a fresh seed from the layer's seed generator each call,
    inverted scaling), but with the Philox generator named: keras leaves TensorFlow to pick one, and what it
    picks inside an XLA-compiled CPU step costs ~3 ms for a 32 x 256 mask, more than the dense head's step."""
    import tensorflow as tf

    seed = tf.cast(tf.math.floormod(layer.seed_generator.next(), tf.int32.max - 1), tf.int32)
    return tf.nn.experimental.stateless_dropout(h, rate=layer.rate, noise_shape=layer.noise_shape, seed=seed,
                                                rng_alg="philox")


def training_forward(model):
    """model(x, training=True) of a head of build_head, computed for training steps: for the RNN heads with
    the input projections out of the time loop and the loop cut at the batch's longest stack (_recurrence),
    the same function and the same gradients, several times cheaper a step at batches of 2 stacks on a CPU;
    for the dense head with a cheaper dropout generator (_dropout). None where the model is not such a head
    (then call the model)."""
    from keras import layers, ops

    body = model.layers[1:]
    if body and all(isinstance(layer, (layers.Dense, layers.Dropout)) for layer in body):
        def dense(x):
            for layer in body:
                if isinstance(layer, layers.Dropout):
                    x = _dropout(layer, x) if layer.rate else x
                else:
                    x = layer(x)
            return x

        return dense
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
        import tensorflow as tf

        mask = ops.any(ops.not_equal(x, 0.0), axis=-1)  # Masking(0): a slice of all zeros is padding
        # the time steps the batch needs: up to its last real slice
        steps = tf.reduce_max(tf.where(tf.reduce_any(mask, axis=0), tf.range(1, tf.shape(x)[1] + 1), 0))
        h = x  # Masking multiplies by that mask, which leaves zero-padded stacks as they are
        for layer in body[1:]:
            if isinstance(layer, layers.Bidirectional):  # the backward layer's outputs come in slice order
                h = ops.concatenate(_recurrence([layer.forward_layer, layer.backward_layer], h, mask, steps),
                                    axis=-1)
            elif isinstance(layer, layers.Dense):
                h = layer(h)
            else:
                h = _recurrence([layer], h, mask, steps)[0]
        return h

    return forward
