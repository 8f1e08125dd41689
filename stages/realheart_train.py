"""Real-heart stages validate, calibrate and train: the cavity U-Net trained on all but each fold of held-out
patients and scanners, mapping that fold (validate); the maps' presence features scored and calibrated
(calibrate); the network on every labelled stack, shipped with that calibration and its model card (final)."""

import json
import sys
from pathlib import Path

# This checkout's library first (see stages/extract.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import io
from saxlevel import params as P
from saxlevel.realheart import modelcard, realtrain, runs
from saxlevel.stageutil import parser, run_stage, seed_everything


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--slices", required=True, help="prepare's folder (x.npy, y.npy, slices.csv)")
    ap.add_argument("--mode", required=True, choices=["validate", "calibrate", "final"])
    ap.add_argument("--out", required=True, help="validate, calibrate: a folder; final: the model file")
    ap.add_argument("--maps", help="validate (writes), calibrate (reads): the held-out maps, one array per stack")
    ap.add_argument("--metrics", help="calibrate: metrics JSON")
    ap.add_argument("--scores", help="calibrate: per-slice scores CSV")
    ap.add_argument("--calibration", help="final: calibrate's calibration.json")
    ap.add_argument("--validation", help="final: calibrate's metrics JSON (for the model card)")
    ap.add_argument("--card", help="final: the model card (Markdown) to write")
    args = ap.parse_args()
    prm = P.load(args.params)
    roots, contours, net, seen = realtrain.settings(prm)
    seed_everything(net.seed)
    if args.mode == "calibrate":
        table = realtrain.load_table(args.slices)
        result = realtrain.calibrate(table, realtrain.load_maps(args.maps), seen, realtrain.fold_count(prm),
                                     realtrain.presence_names(prm))
        io.write_json(io.check_output_dir(args.out) / "calibration.json", result["calibration"])
        io.write_csv(Path(args.scores), result["scores"])
        io.write_json(args.metrics, result["metrics"] | {"settings": net.__dict__})
        print(modelcard.summary_lines(result["metrics"]))
        return 0
    x, y, table = realtrain.load_slices(args.slices)
    if args.mode == "validate":
        maps, curves = realtrain.held_out_maps(x, y, table, net, seen, realtrain.fold_count(prm))
        realtrain.save_maps(args.maps, maps)
        io.write_json(io.check_output_dir(args.out) / "curves.json", curves)
        print(f"realheart validate: {len(maps)} held-out stack variants mapped -> {args.maps}")
        return 0
    calibration = json.loads(Path(args.calibration).read_text())
    realtrain.check_ring(runs.feature_names(calibration), net.myocardium)
    validation = json.loads(Path(args.validation).read_text())
    model, curves = realtrain.train_rows(x, y, table, net)
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
