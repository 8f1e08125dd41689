"""The extract stage against its floor, per backbone, side by side in one run.

- floor: the same Keras model's ``predict`` on preloaded, preprocessed arrays (decoding, resizing and
  preprocessing not timed);
- network: the same compiled predict function the stage uses (``predict_on_batch``), looped over the
  preloaded, preprocessed batches: the network alone, a stricter floor than ``predict`` (which adds its own
  input pipeline);
- stage: ``features.extract`` from PNG paths, as extract@BACKBONE runs it (decode, square-pad, resize and
  preprocess overlapped with inference);
- serial: decode and infer in turn, calling the model eagerly, as the stage did before (for the record);
- decode-only: the stage's PNG pipeline alone (one worker thread), the ceiling of extraction on a GPU.

    python benchmarks/extract_speed.py [--images 256] [--size 224] [--batch-sizes 16,32,64] [--repeats 2] [--backbones ...]

max |diff| is the largest feature difference between the stage and the floor or the serial loop.
Prints images/s and stage/floor for every backbone and batch size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from saxlevel import catalog  # noqa: E402
from saxlevel.learning import backbones, features
from saxlevel.tfquiet import import_tensorflow  # noqa: E402


def serial(model, name: str, paths: list[str], size: int, batch: int) -> np.ndarray:
    """Decode a batch, then run it: the stage before decoding was overlapped."""
    out = [np.asarray(model(backbones.to_backbone_input(features.load_images(paths[i:i + batch], size), name),
                            training=False)) for i in range(0, len(paths), batch)]
    return np.concatenate(out)


def decode_only(paths: list[str], name: str, size: int, batch: int) -> np.ndarray:
    """The stage's input pipeline without the network."""
    return np.concatenate(list(features.preprocessed_batches(paths, name, size, batch)))


def network_only(model, x: np.ndarray, batch: int) -> np.ndarray:
    """The compiled predict function over preloaded batches: no decoding, no input pipeline."""
    return np.concatenate([model.predict_on_batch(x[i:i + batch]) for i in range(0, len(x), batch)])


def timed(fn, *args, **kwargs) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, np.asarray(out[0] if isinstance(out, tuple) else out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="data/split.csv")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-sizes", default="32")
    ap.add_argument("--backbones", default=",".join(catalog.BACKBONES))
    ap.add_argument("--repeats", type=int, default=2, help="floor, network and stage: best of this many runs")
    args = ap.parse_args()
    import_tensorflow()
    paths = pd.read_csv(args.split).path.tolist()[:args.images]
    gray = features.load_images(paths, args.size)
    rows = []
    for name in args.backbones.split(","):
        model = backbones.build(name, args.size, "none")
        x = backbones.to_backbone_input(gray, name)
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            model.predict(x[:batch], batch_size=batch, verbose=0)  # build and warm up every path once
            features.extract(model, name, paths[:batch], args.size, batch, progress=False)
            t_floor = t_net = t_stage = np.inf
            for _ in range(args.repeats):  # interleaved, best of each: this VM's speed drifts between runs
                t, f_floor = timed(model.predict, x, batch_size=batch, verbose=0)
                t_floor = min(t_floor, t)
                t_net = min(t_net, timed(network_only, model, x, batch)[0])
                t, f_stage = timed(features.extract, model, name, paths, args.size, batch, progress=False)
                t_stage = min(t_stage, t)
            t_serial, f_serial = timed(serial, model, name, paths, args.size, batch)
            t_decode, _ = timed(decode_only, paths, name, args.size, batch)
            diff = float(max(np.abs(f_stage - f_floor).max(), np.abs(f_serial - f_stage).max()))
            rows.append({"backbone": name, "batch": batch, "floor img/s": len(paths) / t_floor,
                         "network img/s": len(paths) / t_net, "stage img/s": len(paths) / t_stage, "serial img/s": len(paths) / t_serial,
                         "stage/floor": t_floor / t_stage, "stage/network": t_net / t_stage,
                         "serial/floor": t_floor / t_serial, "max |diff|": diff,
                         "decode-only img/s": len(paths) / t_decode})
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    print(f"\n{len(paths)} images at {args.size} px, random weights, best of {args.repeats}")
    print(pd.DataFrame(rows).round(3).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
