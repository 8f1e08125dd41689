"""Benchmark: what pinning TensorFlow's CPU numerics costs, and whether it changes the features.

Extracts the same images with the same frozen backbone (seeded random weights, BatchNorm statistics
estimated as in extract) in fresh processes, side by side in one run, under:
  default          - what the pipeline does (op determinism on, TensorFlow's thread pools, oneDNN on)
  threads=1        - intra- and inter-op thread pools fixed to one thread
  onednn=off       - TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's own Eigen kernels instead of oneDNN's)
  threads=1 onednn=off
and prints images/s, the ratio to the default, and the largest feature difference to the default
(0 means bit-identical). Run after `dvc repro split`:

    python benchmarks/determinism_cost.py [--backbone mobilenet] [--images 96] [--size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CONFIGS = {
    "default": {},
    "threads=1": {"SAXLEVEL_BENCH_THREADS": "1"},
    "onednn=off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "threads=1 onednn=off": {"SAXLEVEL_BENCH_THREADS": "1", "TF_ENABLE_ONEDNN_OPTS": "0"},
}


def worker(args: argparse.Namespace) -> None:
    """One configuration: extract and save features plus images/s (runs in its own process)."""
    import pandas as pd

    from saxlevel.learning import features
    from saxlevel.stageutil import seed_everything

    seed_everything(0)
    threads = os.environ.get("SAXLEVEL_BENCH_THREADS")
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    data = pd.read_csv(args.split)
    paths = data.path.tolist()[: args.images]
    model, _ = features.prepare_backbone(args.backbone, args.size, "none", paths[:32])
    features.extract(model, args.backbone, paths[:32], args.size, 32, progress=False)  # warm-up
    feats, ips = features.extract(model, args.backbone, paths, args.size, 32, progress=False)
    np.save(args.out, feats)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"images_per_second": ips}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="data/split.csv")
    ap.add_argument("--backbone", default="mobilenet")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.out:
        worker(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in CONFIGS.items():
            out = Path(tmp) / f"{len(results)}.npy"
            cmd = [sys.executable, __file__, "--split", args.split, "--backbone", args.backbone,
                   "--images", str(args.images), "--size", str(args.size), "--out", str(out)]
            subprocess.run(cmd, check=True, env={**os.environ, **env})
            results[name] = (np.load(out), json.loads(out.with_suffix(".json").read_text())["images_per_second"])
    base, base_ips = results["default"]
    print(f"{args.backbone}, {args.images} images at {args.size} px, {os.cpu_count()} CPU cores:")
    print(f"{'configuration':<22} {'images/s':>9} {'vs default':>11} {'max |feature diff|':>19}")
    for name, (feats, ips) in results.items():
        print(f"{name:<22} {ips:9.1f} {ips / base_ips:10.2f}x {float(np.abs(feats - base).max()):19.3g}")


if __name__ == "__main__":
    main()
