"""Backbones, heads, training and the feature cache (small inputs, weights none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saxlevel import CLASSES, backbones, features, heads, images, training


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
        val = data[data.split == "val"]
        if head == "dense":
            got = model.evaluate(feats[val.index.to_numpy()], training.one_hot(val.label), batch_size=2, verbose=0)
        else:
            st = training.make_stacks(val.reset_index(drop=True), feats[val.index.to_numpy()], 25)
            got = model.evaluate(st.x, st.y, sample_weight=st.weight, batch_size=2, verbose=0)
        assert got[0] == pytest.approx(min(hist.history["val_loss"]), rel=1e-4, abs=1e-5)
    np.testing.assert_array_equal(outs[0], outs[1])
    frame = training.predictions_frame(test.reset_index(drop=True), outs[0])
    assert list(frame.columns) == ["split", "subject", "phase", "order", "series", "frame", "true",
                                   "p_oap", "p_ap", "p_mid", "p_bs", "p_obs", "pred"]
