"""DVC stage extract@BACKBONE: frozen-backbone features for every image of the split (feature cache)."""

import sys
from pathlib import Path

import numpy as np

# This checkout's library first: a queued experiment (dvc queue) runs in a copy of the repository, where an
# editable install would otherwise import the main workspace's src/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import io
from saxlevel import params as P
from saxlevel.learning import features
from saxlevel.stageutil import parser, run_stage, seed_everything


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--split", required=True, help="split.csv (rows in feature order)")
    ap.add_argument("--out", required=True, help="features folder: BACKBONE.npy/.json/.keras go here")
    args = ap.parse_args()
    cfg = P.feature_settings(P.load(args.params), args.backbone)
    seed_everything(cfg.seed)
    feats, model, record = features.extract_split(args.backbone, io.read_table(args.split), cfg)
    out = Path(args.out)
    io.atomic_write(out / f"{args.backbone}.npy", lambda p: np.save(open(p, "wb"), feats))
    # The exact frozen extractor (BatchNorm statistics included) so predict can reproduce the features.
    io.save_keras(out / f"{args.backbone}.keras", model)
    io.write_json(out / f"{args.backbone}.json", record)
    print(f"extract@{args.backbone}: {len(feats)} images x {feats.shape[1]} features "
          f"({cfg.weights} weights, {cfg.image_size} px) at {record['images_per_second']:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("extract", main))
