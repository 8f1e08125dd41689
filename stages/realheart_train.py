"""Real-heart stages validate and train: the cavity U-Net on the development patients, scored on the held-out
patients and scanners (validate), or on every labelled stack, shipped with its calibration and model card (final)."""

import json
import sys
from pathlib import Path

import numpy as np

# This checkout's library first (see stages/extract.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import io
from saxlevel import params as P
from saxlevel.realheart import modelcard, realtrain
from saxlevel.stageutil import parser, run_stage, seed_everything


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--slices", required=True, help="prepare's folder (x.npy, y.npy, slices.csv)")
    ap.add_argument("--mode", required=True, choices=["validate", "final"])
    ap.add_argument("--out", required=True, help="validate: a folder; final: the model file")
    ap.add_argument("--metrics", help="validate: metrics JSON")
    ap.add_argument("--scores", help="validate: per-slice scores CSV")
    ap.add_argument("--maps", help="validate: the held-out cavity maps (npz, one array per stack variant)")
    ap.add_argument("--calibration", help="final: validate's calibration.json")
    ap.add_argument("--validation", help="final: validate's metrics JSON (for the model card)")
    ap.add_argument("--card", help="final: the model card (Markdown) to write")
    args = ap.parse_args()
    roots, contours, net, seen = realtrain.settings(P.load(args.params))
    seed_everything(net.seed)
    x, y, table = realtrain.load_slices(args.slices)
    if args.mode == "validate":
        result = realtrain.run_validation(x, y, table, net, seen, realtrain.fold_count(P.load(args.params)),
                                          keep_maps=bool(args.maps))
        if args.maps:
            maps = {f"{sid}-{cut or 'intact'}": m for (sid, cut), m in result["maps"].items()}
            io.atomic_write(args.maps, lambda p: np.savez_compressed(open(p, "wb"), **maps))
        out = io.check_output_dir(args.out)
        io.write_json(out / "calibration.json", result["calibration"])
        io.write_json(out / "curves.json", result["metrics"].pop("curves"))
        io.write_csv(Path(args.scores), result["scores"])
        io.write_json(args.metrics, result["metrics"])
        print(modelcard.summary_lines(result["metrics"]))
        return 0
    calibration = json.loads(Path(args.calibration).read_text())
    validation = json.loads(Path(args.validation).read_text())
    model, curves = realtrain.train_final(x, y, net)
    info = realtrain.model_info(net.__dict__, calibration, validation,
                                {"nifti": roots, "contours": {k: list(v) for k, v in contours.items()},
                                 "stacks": int(table["stack"].nunique()), "slices": len(table),
                                 "by_source": table.groupby("source")["stack"].nunique().to_dict()})
    info["curves"] = curves
    realtrain.save(model, args.out, info)
    io.atomic_write(args.card, lambda p: Path(p).write_text(modelcard.render(info)))
    size = Path(args.out).stat().st_size / 1e6
    print(f"realheart train: {len(table)} slices of {table['stack'].nunique()} stacks -> {args.out} ({size:.1f} MB), "
          f"card {args.card}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("realheart train", main))
