"""Feature cache: one frozen-backbone feature vector per PNG image (computed once per backbone)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

from saxlevel.ingest.images import load_png
from saxlevel.learning import backbones


def square_resize(gray: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a (H, W) image to a centred square, then resize to size x size (bilinear).

    Padding keeps the anatomy's aspect ratio for portrait and landscape acquisitions alike.
    """
    h, w = gray.shape
    side = max(h, w)
    canvas = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = gray
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.BILINEAR))


def load_images(paths: Sequence[str], size: int) -> np.ndarray:
    """(N, size, size) uint8 images from PNG paths."""
    return np.stack([square_resize(load_png(p), size) for p in paths]) if len(paths) else np.zeros((0, size, size), np.uint8)


PREFETCH = 2  # batches decoded ahead of the one the network runs on


def preprocessed_batches(paths: Sequence[str], name: str, size: int, batch_size: int) -> Iterator[np.ndarray]:
    """Backbone-ready batches of the PNGs at ``paths``, in order. A worker thread decodes, pads, resizes and
    preprocesses the next ``PREFETCH`` batches while the caller runs the network on the current one (PIL and
    numpy release the GIL), so extraction runs at the network's pace."""
    def load(start: int) -> np.ndarray:
        return backbones.to_backbone_input(load_images(paths[start:start + batch_size], size), name)

    starts = list(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(1, thread_name_prefix="saxlevel-png") as pool:
        ahead = deque(pool.submit(load, s) for s in starts[:PREFETCH])
        for start in starts[PREFETCH:]:
            batch = ahead.popleft().result()
            ahead.append(pool.submit(load, start))
            yield batch
        while ahead:
            yield ahead.popleft().result()


def extract(model, name: str, paths: Sequence[str], size: int, batch_size: int = 32,
            progress: bool = True) -> tuple[np.ndarray, float]:
    """(features (N, dims) float32, images per second) for the images at ``paths``. Each batch runs through
    Keras' compiled predict function (``predict_on_batch``), the one ``model.predict`` uses: faster than an
    eager call on CPU (benchmarks/extract_speed.py), and on a GPU when TensorFlow sees one. Graph
    optimisations make EfficientNetB0 and NASNetMobile features differ from an eager call by < 2e-5."""
    out = []
    t0 = time.perf_counter()
    batches = preprocessed_batches(paths, name, size, batch_size)
    for x in tqdm(batches, total=-(-len(paths) // batch_size), desc=f"extract {name}", unit="batch",
                  disable=not progress):
        out.append(np.asarray(model.predict_on_batch(x), dtype=np.float32))
    seconds = time.perf_counter() - t0
    feats = np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)
    return feats, len(paths) / max(seconds, 1e-9)


def prepare_backbone(name: str, size: int, weights: str, bn_paths: Sequence[str]):
    """Build the frozen backbone; with random weights, estimate BatchNorm statistics on bn_paths."""
    model = backbones.build(name, size, weights)
    n_bn = 0
    if weights == "none" and len(bn_paths):
        n_bn = backbones.estimate_batchnorm(model, backbones.to_backbone_input(load_images(bn_paths, size), name))
    return model, n_bn


def compute_device() -> str:
    """Where TensorFlow runs the network: the first GPU it sees (used with no change), else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else "CPU"


def extract_split(name: str, data, cfg) -> tuple[np.ndarray, object, dict]:
    """The extract stage: (features in split.csv row order, the frozen extractor, its record for
    BACKBONE.json). ``cfg`` is params.FeatureSettings; BatchNorm statistics (random weights) come from
    ``cfg.bn_images`` training images drawn with ``cfg.seed``."""
    train = data[data.split == "train"]
    bn_paths = train.sample(n=min(cfg.bn_images, len(train)), random_state=cfg.seed).path.tolist()
    model, n_layers = prepare_backbone(name, cfg.image_size, cfg.weights, bn_paths)
    feats, ips = extract(model, name, data.path.tolist(), cfg.image_size, cfg.batch_size)
    record = {
        "backbone": name, "weights": cfg.weights, "image_size": cfg.image_size, "dims": int(feats.shape[1]),
        "n_images": int(len(feats)), "row_ids": data.row.tolist(), "images_per_second": round(ips, 1),
        "parameters": int(model.count_params()),
        "batchnorm_estimated_on": len(bn_paths) if cfg.weights == "none" else 0, "batchnorm_layers": n_layers,
        "preprocess": backbones.spec(name).preprocess,
        "seed": cfg.seed, "device": compute_device(),
    }
    return feats, model, record
