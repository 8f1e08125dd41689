"""DVC stage extract@BACKBONE: frozen-backbone features for every image of the split (feature cache)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel import backbones, features, io
from saxlevel import params as P
from saxlevel.stageutil import parser, seed_everything


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--split", required=True, help="split.csv (rows in feature order)")
    ap.add_argument("--out", required=True, help="features folder: BACKBONE.npy/.json/.keras go here")
    args = ap.parse_args()
    prm = P.load(args.params)
    size = int(P.get(prm, "features.image_size"))
    weights = str(P.get(prm, "features.weights"))
    batch = int(P.get(prm, "features.batch_size", 32))
    n_bn = int(P.get(prm, "features.bn_images", 64))
    seed = int(P.get(prm, "features.seed", 0))
    seed_everything(seed)
    data = pd.read_csv(args.split)
    train = data[data.split == "train"]
    bn_paths = train.sample(n=min(n_bn, len(train)), random_state=seed).path.tolist()
    try:
        model, n_layers = features.prepare_backbone(args.backbone, size, weights, bn_paths)
    except (backbones.WeightsUnavailable, ValueError, FileNotFoundError) as exc:
        print(f"extract@{args.backbone}: error: {exc}", file=sys.stderr)
        return 2
    feats, ips = features.extract(model, args.backbone, data.path.tolist(), size, batch)
    out = Path(args.out)
    io.atomic_write(out / f"{args.backbone}.npy", lambda p: np.save(open(p, "wb"), feats))
    # The exact frozen extractor (BatchNorm statistics included) so predict can reproduce the features.
    io.save_keras(out / f"{args.backbone}.keras", model)
    io.write_json(out / f"{args.backbone}.json", {
        "backbone": args.backbone, "weights": weights, "image_size": size, "dims": int(feats.shape[1]),
        "n_images": int(len(feats)), "row_ids": data.row.tolist(), "images_per_second": round(ips, 1),
        "parameters": int(model.count_params()),
        "batchnorm_estimated_on": len(bn_paths) if weights == "none" else 0, "batchnorm_layers": n_layers,
        "preprocess": f"keras.applications.{backbones.spec(args.backbone).module}.preprocess_input",
        "seed": seed,
    })
    print(f"extract@{args.backbone}: {len(feats)} images x {feats.shape[1]} features "
          f"({weights} weights, {size} px) at {ips:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
