"""Fine-tuning and stack-consistent augmentation: transforms, padding, masking, BatchNorm, saving, params."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saxlevel import CLASSES, catalog
from saxlevel import params as P
from saxlevel.learning import augment, backbones

PARAMS = {
    "features": {"weights": "none", "image_size": 224, "bn_images": 8},
    "train": {"epochs": 50, "patience": 10, "lr": 0.001, "seed": 0, "max_slices": 25, "finetune": "none",
              "augment": False, "batchnorm": "auto", "bn_momentum": 0.9},
    "finetune_grid": {"backbones": ["mobilenet"], "heads": ["dense", "bigru"], "finetune": "all", "augment": True,
                      "image_size": 32, "epochs": 2},
}


def settings(**over) -> P.TrainSettings:
    prm = {k: dict(v) for k, v in PARAMS.items()}
    prm["finetune_grid"].update(over)
    return P.train_settings(prm, P.FINETUNE_SECTION)


def _stack(rng: np.random.Generator, real: int, pad: int, size: int = 24) -> np.ndarray:
    imgs = rng.integers(0, 256, (real, size, size)).astype(np.float32)
    return np.concatenate([imgs, np.full((pad, size, size), augment.PAD, np.float32)])


def test_one_transform_per_stack_and_padding_stays_padding() -> None:
    rng = np.random.default_rng(0)
    stacks = np.stack([_stack(rng, 4, 2), _stack(rng, 5, 1)])
    stacks[0, 1] = stacks[0, 0]  # two identical slices in one stack
    out = augment.augment_stacks(stacks, np.random.default_rng(7))
    again = np.random.default_rng(7)
    for s in range(2):
        t = augment.draw(again, stacks.shape[-1])  # the one transform drawn for stack s
        np.testing.assert_array_equal(out[s], augment.apply(stacks[s], t))
    np.testing.assert_array_equal(out[0, 0], out[0, 1])  # identical slices stay identical: same transform
    assert not np.allclose(out[0, 0], stacks[0, 0])  # and it did change them
    assert np.isnan(out[0, 4:]).all() and np.isnan(out[1, 5:]).all()
    real = np.concatenate([out[0, :4], out[1, :5]])
    assert real.min() >= 0 and real.max() <= 255


def test_dense_draws_one_transform_per_image() -> None:
    img = np.random.default_rng(1).integers(0, 256, (24, 24)).astype(np.float32)
    out = augment.augment_images(np.stack([img, img]), np.random.default_rng(3))
    assert not np.allclose(out[0], out[1])


def test_transform_geometry() -> None:
    """Zero rotation, unit zoom, a flip and no intensity change mirror the columns exactly."""
    ranges = augment.Ranges(rotation_deg=0, translation=0, zoom=(1, 1), flip=1.0, gamma=(1, 1), contrast=(1, 1),
                            brightness=0)
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    t = augment.draw(np.random.default_rng(0), 6, ranges)
    np.testing.assert_allclose(augment.apply(img[None], t)[0], img[:, ::-1], atol=1e-4)


def test_batches_pad_mask_labels_and_are_seeded() -> None:
    from saxlevel.learning import finetune

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9, 16, 16)).astype(np.uint8)
    labels = np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3, 4]]
    groups = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7, 8])]
    b = finetune.Batches(images, groups, labels, 2, stacked=True, augment_on=True, shuffle=True, seed=3)
    x, y, w = b[0]
    assert x.shape == (2, 5, 16, 16, 1) and y.shape == (2, 5, 5) and w.shape == (2, 5)
    short = int(np.argmin(w.sum(1)))
    assert w[short].tolist() == [1, 1, 1, 1, 0] and np.isnan(x[short, 4]).all()
    assert np.isfinite(x[short, :4]).all() and not y[short, 4].any()
    np.testing.assert_array_equal(b[0][0], x)  # (NaN == NaN here) same epoch, same batch: same augmentation
    b.on_epoch_end()
    assert not np.array_equal(b[0][0], x, equal_nan=True)  # a new epoch draws new transforms


def test_settings_override_and_validate() -> None:
    s = settings()
    assert (s.finetune, s.augment, s.image_size, s.epochs, s.lr, s.suffix) == ("all", True, 32, 2, 0.001, "-ft")
    paper = P.train_settings(PARAMS, "train")
    assert paper.cached and paper.suffix == "" and paper.image_size == 224
    with pytest.raises(P.ParamError, match="finetune_grid.finetune"):
        settings(finetune="some")
    with pytest.raises(P.ParamError, match="'finetune_grid.augment' must be true or false"):
        settings(augment="yes")
    with pytest.raises(P.ParamError, match="finetune_grid.epochs"):
        settings(epochs="many")
    assert P.finetune_grid(PARAMS) == (["mobilenet"], ["dense", "bigru"])
    with pytest.raises(P.ParamError, match=r"finetune_grid.heads=\[bigru\]"):
        P.finetune_grid({"finetune_grid": {"backbones": ["mobilenet"], "heads": "bigru"}})


@pytest.mark.parametrize(("weights", "mode", "policy", "trains"), [
    ("none", "all", "auto", True), ("imagenet", "all", "auto", False), ("w.h5", "top", "auto", False),
    ("imagenet", "all", "train", True), ("none", "all", "frozen", False), ("none", "none", "auto", False)])
def test_batchnorm_choice_per_weights(weights: str, mode: str, policy: str, trains: bool) -> None:
    prm = {k: dict(v) for k, v in PARAMS.items()}
    prm["features"]["weights"] = weights
    prm["finetune_grid"].update(finetune=mode, batchnorm=policy)
    assert P.train_settings(prm, P.FINETUNE_SECTION).batchnorm_trains is trains


@pytest.mark.parametrize("name", list(backbones.SPECS))
def test_finetune_modes_per_backbone(name: str) -> None:
    import keras

    from saxlevel.learning import finetune

    counts = {}
    for mode in catalog.FINETUNE_MODES:
        model = backbones.build(name, 32, "none")
        counts[mode] = finetune.set_trainable(model, name, mode, bn_train=False, bn_momentum=0.9)
        bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert not any(layer.trainable for layer in bns)  # frozen statistics when bn_train is False
    assert counts["none"] == 0 < counts["top"] < counts["all"]
    model = backbones.build(name, 32, "none")
    finetune.set_trainable(model, name, "top", bn_train=True, bn_momentum=0.8)
    start = finetune.top_start(model, name)
    assert not any(layer.trainable_weights for layer in model.layers[:start])
    top_bns = [layer for layer in model.layers[start:] if isinstance(layer, keras.layers.BatchNormalization)]
    assert top_bns and all(layer.trainable and layer.momentum == 0.8 for layer in top_bns)


@pytest.mark.parametrize("name", list(backbones.SPECS))
def test_gray_preprocessing_layer_matches_preprocess_input(name: str) -> None:
    from saxlevel.learning import finetune

    gray = np.random.default_rng(0).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    got = np.asarray(finetune.GrayToBackbone(name)(gray.astype(np.float32)[..., None]))
    np.testing.assert_allclose(got, backbones.to_backbone_input(gray, name), atol=1e-5)


def test_padded_slices_change_nothing_even_in_training_mode(tmp_path) -> None:
    """Padding is cut out before the backbone (no BatchNorm batch statistics) and masked for the RNN."""
    import keras

    from saxlevel import io
    from saxlevel.learning import finetune

    model, facts = finetune.prepare("mobilenet", "bigru", settings(), [])
    assert facts["batchnorm_trains"] and facts["backbone_trainable_parameters"] > 0
    x = _stack(np.random.default_rng(2), 5, 4, 32)[None, ..., None]
    for training in (False, True):
        short = np.asarray(model(x[:, :5], training=training))[0]
        long = np.asarray(model(x, training=training))[0, :5]
        np.testing.assert_allclose(short, long, atol=1e-5)
    io.save_keras(tmp_path / "m.keras", model, extra={"input": "gray"})
    loaded = keras.models.load_model(tmp_path / "m.keras")  # registered layers: no unsafe deserialisation
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def _toy_images(n_subjects: int = 6, size: int = 32) -> tuple[pd.DataFrame, np.ndarray]:
    """Stacks whose images encode the level as brightness."""
    rng = np.random.default_rng(0)
    rows, imgs = [], []
    for s in range(n_subjects):
        split = "train" if s < 3 else ("val" if s < 5 else "test")
        for phase in ("ED", "ES"):
            levels = np.sort(rng.integers(0, 5, 5))
            for k, lvl in enumerate(levels):
                rows.append({"split": split, "subject": s, "phase": phase, "order": k, "series": f"sax_{k}",
                             "frame": 1, "label": CLASSES[lvl]})
                imgs.append(np.clip(rng.normal(40 + 45 * lvl, 20, (size, size)), 0, 255))
    return pd.DataFrame(rows), np.asarray(imgs, np.uint8)


@pytest.mark.parametrize("name", list(backbones.SPECS))
def test_split_at_top_shares_the_backbone(name: str) -> None:
    """bottom then top = the whole backbone, and training top trains the backbone's own layers."""
    from saxlevel.learning import finetune

    model = backbones.build(name, 32, "none")
    finetune.set_trainable(model, name, "top", bn_train=False, bn_momentum=0.9)
    bottom, top = finetune.split_at_top(model, name)
    gray = np.random.default_rng(0).integers(0, 256, (2, 32, 32)).astype(np.float32)[..., None]
    whole = np.asarray(model(finetune.GrayToBackbone(name)(gray)))
    np.testing.assert_allclose(np.asarray(top(bottom(gray))), whole, atol=1e-4)
    assert len(top.trainable_weights) == len(model.trainable_weights) > 0
    assert not bottom.trainable_weights  # the cached part is frozen
    var = model.trainable_weights[-1]
    var.assign(var + 1.0)
    np.testing.assert_allclose(np.asarray(top(bottom(gray))), np.asarray(model(finetune.GrayToBackbone(name)(gray))),
                               atol=1e-4)


@pytest.mark.parametrize(("head", "mode", "augment_on"), [("dense", "all", True), ("bigru", "all", True),
                                                          ("bigru", "top", False), ("dense", "top", False)])
def test_finetune_fit_is_deterministic_and_keeps_best_epoch(head: str, mode: str, augment_on: bool) -> None:
    from saxlevel.learning import finetune
    from saxlevel.stageutil import seed_everything

    data, images = _toy_images()
    cfg = settings(epochs=3, patience=0, finetune=mode, augment=augment_on)
    outs = []
    for _ in range(2):
        seed_everything(1)
        model, best, hist, _ = finetune.fit("mobilenet", head, data, images, cfg, batch_size=8 if head == "dense" else 2,
                                            bn_paths=[])
        assert best.best_epoch == int(np.argmin(hist.history["val_loss"]))
        test = data[data.split == "test"]
        outs.append(finetune.predict(model, head, test, images[test.index.to_numpy()]))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].shape == (len(data[data.split == "test"]), 5)
    assert model.input_shape[-3:] == (32, 32, 1)  # the returned model takes gray images, whatever trained
    np.testing.assert_allclose(outs[0].sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("weights", ["none", "imagenet"])
def test_batchnorm_statistics_train_only_for_random_weights(weights: str) -> None:
    """auto: one training step moves BatchNorm moving statistics with random weights, never with pretrained."""
    import keras

    from saxlevel.learning import finetune

    cfg = settings()
    cfg = P.TrainSettings(**{**cfg.__dict__, "weights": weights})
    backbone = backbones.build("mobilenet", 32, "none")  # offline stand-in for the pretrained network
    finetune.set_trainable(backbone, "mobilenet", cfg.finetune, cfg.batchnorm_trains, cfg.bn_momentum)
    model = finetune.build_model("mobilenet", "dense", backbone)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    bn = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    before = np.asarray(bn.moving_mean).copy()
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1)).astype(np.float32)
    model.train_on_batch(x, np.eye(5, dtype=np.float32)[np.arange(8) % 5])
    moved = not np.allclose(np.asarray(bn.moving_mean), before)
    assert moved is (weights == "none")
    assert any(w.name == "kernel" for w in backbone.trainable_weights)  # convolutions train either way
