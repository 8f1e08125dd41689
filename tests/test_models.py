"""Backbones, heads, training and the feature cache (small inputs, weights none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saxlevel import CLASSES
from saxlevel.evaluation import table5
from saxlevel.ingest import images
from saxlevel.learning import backbones, features, heads, training


@pytest.mark.parametrize("name", list(backbones.SPECS))
def test_feature_dims(name: str) -> None:
    model = backbones.build(name, 32, "none")
    x = backbones.to_backbone_input(np.random.default_rng(0).integers(0, 255, (2, 32, 32)).astype(np.uint8), name)
    assert model(x).shape == (2, backbones.SPECS[name].features)
    assert not model.trainable


def test_batchnorm_estimation_makes_features_vary() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (16, 64, 64)).astype(np.uint8)
    model = backbones.build("mobilenet", 64, "none")
    x = backbones.to_backbone_input(imgs, "mobilenet")
    before = np.asarray(model(x)).std(axis=0).mean()
    n = backbones.estimate_batchnorm(model, x)
    after = np.asarray(model(x)).std(axis=0).mean()
    assert n > 10 and before < 1e-6 < after  # random MobileNet: constant features until BN is estimated
    assert not model.trainable


def test_extraction_overlaps_decoding_and_matches_the_eager_model(tmp_path: Path) -> None:
    """Prefetched batches come in order (a short last batch included), and the features equal a plain
    decode-then-call loop exactly."""
    rng = np.random.default_rng(1)
    paths = []
    for k in range(11):
        img = rng.integers(0, 255, (20 + k, 16)).astype(np.uint8)  # portrait, varying heights
        paths.append(str(tmp_path / f"{k}.png"))
        images.save_png(paths[-1], img)
    batches = list(features.preprocessed_batches(paths, "mobilenet", 32, 4))
    assert [len(b) for b in batches] == [4, 4, 3]
    want = backbones.to_backbone_input(features.load_images(paths, 32), "mobilenet")
    assert np.array_equal(np.concatenate(batches), want)
    model = backbones.build("mobilenet", 32, "none")
    backbones.estimate_batchnorm(model, want)
    feats, ips = features.extract(model, "mobilenet", paths, 32, batch_size=4, progress=False)
    eager = np.concatenate([np.asarray(model(want[i:i + 4], training=False)) for i in range(0, 11, 4)])
    assert feats.shape == (11, backbones.SPECS["mobilenet"].features) and ips > 0
    assert np.array_equal(feats, eager)
    assert features.compute_device() == "CPU" or features.compute_device().startswith("/device:GPU")


def test_imagenet_offline_message(monkeypatch, tmp_path) -> None:
    import keras.src.utils.file_utils as fu

    def no_network(*a, **k):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x/mobilenet_1_0_224_tf_no_top.h5: "
                        "None -- [Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(fu, "urlretrieve", no_network)
    with pytest.raises(backbones.WeightsUnavailable) as exc:
        backbones.build("mobilenet", 224, "imagenet")
    msg = str(exc.value)
    assert "mobilenet_1_0_224_tf_no_top.h5" in msg and str(tmp_path / "models") in msg
    assert "features.weights: none" in msg
    with pytest.raises(FileNotFoundError, match="features.weights"):
        backbones.build("mobilenet", 32, str(tmp_path / "missing.h5"))


def test_square_resize_keeps_aspect() -> None:
    img = np.full((40, 20), 200, np.uint8)
    out = features.square_resize(img, 20)
    assert out.shape == (20, 20) and out[:, :4].max() == 0 and out[10, 10] == 200


def test_head_architectures() -> None:
    import keras

    def kinds(m):
        return [type(layer).__name__ for layer in m.layers]

    d = heads.build_head("dense", 8)
    assert kinds(d) == ["InputLayer", "Dense", "Dropout", "Dense"]
    assert d.layers[1].units == 256 and d.layers[2].rate == 0.5 and d.layers[3].units == 5
    for name, cell, n in (("lstm2", keras.layers.LSTM, 2), ("gru2", keras.layers.GRU, 2)):
        m = heads.build_head(name, 8)
        cells = [layer for layer in m.layers if isinstance(layer, cell)]
        assert len(cells) == n and all(c.units == 128 and c.return_sequences for c in cells)
    for name, cell in (("bilstm", keras.layers.LSTM), ("bigru", keras.layers.GRU)):
        m = heads.build_head(name, 8)
        bi = [layer for layer in m.layers if isinstance(layer, keras.layers.Bidirectional)]
        assert len(bi) == 1 and isinstance(bi[0].forward_layer, cell) and bi[0].forward_layer.units == 128
        assert m.output_shape == (None, None, len(CLASSES))


@pytest.mark.parametrize("name", heads.RNN_HEADS)
def test_masking_padding_changes_nothing(name: str) -> None:
    m = heads.build_head(name, 6)
    x = np.random.default_rng(1).normal(size=(1, 7, 6)).astype(np.float32)
    padded = np.zeros((1, 25, 6), np.float32)
    padded[:, :7] = x
    np.testing.assert_allclose(m.predict(x, verbose=0)[0], m.predict(padded, verbose=0)[0, :7], atol=1e-5)


def _toy(n_subjects: int = 8, dims: int = 6, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Stacks whose features encode the level (plus noise), split train/val/test."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for s in range(n_subjects):
        split = "train" if s < 4 else ("val" if s < 6 else "test")
        for phase in ("ED", "ES"):
            n = int(rng.integers(5, 9))
            levels = np.sort(rng.integers(0, 5, n))
            for k, lvl in enumerate(levels):
                rows.append({"split": split, "subject": s, "phase": phase, "order": k, "series": f"sax_{k}",
                             "frame": 1, "label": CLASSES[lvl]})
                feats.append(np.eye(dims)[lvl] + rng.normal(0, 0.3, dims))
    return pd.DataFrame(rows), np.asarray(feats, np.float32)


def test_stacks_too_long_is_clear() -> None:
    data, feats = _toy()
    with pytest.raises(ValueError, match="train.max_slices"):
        training.make_stacks(data, feats, max_slices=3)


@pytest.mark.parametrize("head", ["dense", "bigru"])
def test_training_deterministic_and_keeps_best_epoch(head: str) -> None:
    from saxlevel.stageutil import seed_everything

    data, feats = _toy()
    outs = []
    for _ in range(2):
        seed_everything(3)
        model, best, hist = training.fit(head, data, feats, epochs=6, lr=0.01, batch_size=2)
        test = data[data.split == "test"]
        outs.append(training.predict(model, head, test, feats[test.index.to_numpy()]))
        # the kept weights are those of the epoch with the lowest validation loss
        assert best.best_epoch == int(np.argmin(hist.history["val_loss"]))
        # ... and the validation loss is the cross-entropy averaged over the real validation slices
        val = data[data.split == "val"]
        p = training.predict(model, head, val, feats[val.index.to_numpy()])
        got = -np.log(np.clip(p[np.arange(len(val)), [CLASSES.index(x) for x in val.label]], 1e-7, 1)).mean()
        assert got == pytest.approx(min(hist.history["val_loss"]), rel=1e-4, abs=1e-5)
    np.testing.assert_array_equal(outs[0], outs[1])
    frame = table5.predictions_frame(test.reset_index(drop=True), outs[0])
    assert list(frame.columns) == ["split", "subject", "phase", "order", "series", "frame", "true",
                                   "p_oap", "p_ap", "p_mid", "p_bs", "p_obs", "pred"]


def test_fixed_batches_cover_every_row_once_in_a_seeded_order() -> None:
    got = training.fixed_batches(7, 2, np.random.default_rng([0, 3]))
    assert got.shape == (4, 2) and sorted(got.ravel().tolist()) == [-1, 0, 1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(got, training.fixed_batches(7, 2, np.random.default_rng([0, 3])))
    assert not np.array_equal(got, training.fixed_batches(7, 2, np.random.default_rng([0, 4])))
    assert training.fixed_batches(4, 2, None).tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize("jit", [True, False])
def test_padding_and_empty_slots_count_in_neither_loss_nor_accuracy(jit: bool) -> None:
    """The same stacks padded to their longest or 6 slices more, 5 stacks in batches of 2 (one empty slot):
    identical losses, accuracies and weights after an epoch (the time loop stops at each batch's longest)."""
    import keras

    from saxlevel.learning.heads import build_head

    data, feats = _toy()
    train = data[data.split == "train"].reset_index(drop=True).iloc[:40]
    st = training.make_stacks(train, feats[data.index[data.split == "train"][:40]], 25)
    runs = []
    for pad in (0, 6):
        keras.utils.set_random_seed(1)
        model = build_head("bigru", feats.shape[1])
        x, y, w = (np.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)) for a in (st.x, st.y, st.weight))
        loop = training.Loop(model, 0.01, x[:5], y[:5], w[:5], batch_size=2, jit=jit)
        loss, acc = loop.epoch(np.random.default_rng(0))
        runs.append((loss, acc, loop.evaluate(x, y, w), model.get_weights()))
    l0, a0, e0, w0 = runs[0]
    for l1, a1, e1, w1 in runs[1:]:
        assert l0 == pytest.approx(l1, rel=1e-5) and a0 == a1 and e0 == pytest.approx(e1, rel=1e-5)
        for u, v in zip(w0, w1):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


def test_compiled_and_plain_graph_steps_train_alike() -> None:
    from saxlevel.stageutil import seed_everything

    data, feats = _toy()
    probs = []
    for jit in (True, False):
        seed_everything(2)
        model, _, hist = training.fit("lstm2", data, feats, epochs=3, lr=0.01, batch_size=2, seed=5, jit=jit)
        probs.append(training.predict(model, "lstm2", data, feats))
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-4)


def test_heads_trained_side_by_side_train_exactly_as_alone() -> None:
    """fit_many in two threads gives every head the numbers it gets when trained alone."""
    from saxlevel.stageutil import seed_everything

    data, feats = _toy()
    names = ["dense", "gru2", "bilstm"]
    kw = dict(epochs=3, lr=0.01, max_slices=25, seed=4)
    seed_everything(0)
    together = training.fit_many(names, data, feats, batch_sizes={h: 2 for h in names}, workers=2, **kw)
    for head in names:
        seed_everything(1)  # the seed that counts is fit's, whatever ran before
        model, best, hist = training.fit(head, data, feats, batch_size=2, **kw)
        assert hist.history == together[head][2].history and best.best_epoch == together[head][1].best_epoch
        np.testing.assert_array_equal(training.predict(model, head, data, feats),
                                      training.predict(together[head][0], head, data, feats))


def test_models_on_different_features_trained_together_train_exactly_as_alone() -> None:
    """iter_fit over two feature matrices of different widths (two backbones): each model gets the numbers it
    gets alone, and the models come back in the order asked for."""
    data, narrow = _toy()
    wide = np.concatenate([narrow, np.random.default_rng(9).normal(size=(len(narrow), 3)).astype(np.float32)], 1)
    feats = {"a": narrow, "b": wide}
    models = [("b", "gru2"), ("a", "dense"), ("b", "dense")]
    kw = dict(epochs=3, lr=0.01, max_slices=25, seed=4)
    together = list(training.iter_fit(models, data, feats, batch_sizes={m: 2 for m in models}, workers=2, **kw))
    assert [key for key, _ in together] == models
    for (name, head), (model, _, hist) in together:
        alone, _, alone_hist = training.fit(head, data, feats[name], batch_size=2, **kw)
        assert hist.history == alone_hist.history
        np.testing.assert_array_equal(training.predict(model, head, data, feats[name]),
                                      training.predict(alone, head, data, feats[name]))


@pytest.mark.parametrize("head", ["lstm2", "bilstm", "gru2", "bigru"])
def test_training_forward_is_the_model_with_its_gradients(head: str) -> None:
    """The hoisted input projection computes model(x, training=True) and its gradients, padding included."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    model = heads.build_head(head, 16)
    x = np.random.default_rng(0).normal(size=(3, 7, 16)).astype(np.float32)
    x[1, 4:] = 0  # a shorter stack
    x[2, 1:] = 0
    fast = heads.training_forward(model)
    assert fast is not None
    grads = []
    for forward in (fast, lambda a: model(a, training=True)):
        with tf.GradientTape() as tape:
            p = forward(tf.constant(x))
            loss = tf.reduce_sum(p[..., 0] * (x[..., 0] != 0))
        grads.append((np.asarray(p), [np.asarray(g) for g in tape.gradient(loss, model.trainable_variables)]))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_dense_training_forward_is_the_model_with_its_dropout() -> None:
    """The dense head's training forward is the model's: its layers, and a dropout that zeroes about `rate` of
    the units, scales the rest by 1 / (1 - rate), draws a new mask each call and repeats under the same seed."""
    import keras
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32))
    keras.utils.set_random_seed(3)
    model = heads.build_head("dense", 16)
    drop = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dropout))
    fast = heads.training_forward(model)
    assert fast is not None
    h = tf.ones((64, 256))
    masks = [heads._dropout(drop, h).numpy() for _ in range(2)]
    for m in masks:
        assert set(np.unique(m)) == {0.0, 1 / (1 - drop.rate)} and abs((m == 0).mean() - drop.rate) < 0.03
    assert not np.array_equal(masks[0], masks[1])
    keras.utils.set_random_seed(3)
    again = heads.build_head("dense", 16)
    drop_again = next(layer for layer in again.layers if isinstance(layer, keras.layers.Dropout))
    np.testing.assert_array_equal(heads._dropout(drop_again, h).numpy(), masks[0])
    drop.rate = 0.0  # without dropout the training forward is model(x, training=True) to the last digit
    np.testing.assert_array_equal(np.asarray(fast(x)), np.asarray(model(x, training=True)))
