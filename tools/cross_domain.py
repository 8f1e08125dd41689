"""Score a run's trained models on another source's labelled images (cross-domain rows of the README).

    # phantom-trained models on the test split of an ACDC run (labels from its segmentations)
    python tools/cross_domain.py nifti --models RUN/models --split ACDC_RUN/data/split.csv --out FILE.csv
    # ACDC-trained models on a DICOM study with expert contours (the shared Sunnybrook study)
    python tools/cross_domain.py dicom --models ACDC_RUN/models --study ../shared/data/sunnybrook/dicoms/SCD0000101 \\
        --contours ../shared/data/sunnybrook/contourfiles/SC-HF-I-1 --out FILE.csv

One row per model: accuracy (with a subject-bootstrap 95 % interval when the images come from several
subjects), SOTD, F1 per class. See saxlevel.crossdomain."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pandas as pd  # noqa: E402

from saxlevel import crossdomain, io  # noqa: E402
from saxlevel.ingest import contours


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", choices=["nifti", "dicom"])
    ap.add_argument("--models", required=True, type=Path, help="a run's models/ folder")
    ap.add_argument("--split", type=Path, help="nifti: the other run's data/split.csv (its test rows are scored)")
    ap.add_argument("--study", type=Path, help="dicom: the study folder")
    ap.add_argument("--contours", type=Path, help="dicom: the expert's contour folder")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--baseline-split", type=Path, help="the models' run's data/split.csv: also score the "
                    "position-only baseline fitted on its train split")
    args = ap.parse_args()
    if args.source == "nifti":
        rows = io.read_table(args.split)
        rows = rows[rows.split == "test"].reset_index(drop=True)
        run = args.split.resolve().parent.parent  # split.csv's PNG paths are relative to its run's root
        rows["path"] = [p if Path(p).is_absolute() else str(run / p) for p in rows.path]
    else:
        from saxlevel import predict

        index = predict.index_folder(args.study)
        labels = contours.contour_levels(index, args.contours)
        rows = crossdomain.dicom_rows(index, labels)
        print(f"{args.study}: {len(rows)} contour-labelled images, levels {rows.label.value_counts().to_dict()}")
    cache: dict = {}
    out = []
    for path in crossdomain.model_files(args.models):
        t0 = time.perf_counter()
        pred = crossdomain.model_predictions(path, rows, args.source == "dicom", cache)
        name = path.stem + ("-ft" if path.parent.name == "finetuned" else "")
        out.append({"model": name, **crossdomain.score(pred, args.bootstrap, 0)})
        print(f"{name}: accuracy {out[-1]['accuracy']:.3f} {out[-1].get('accuracy_ci95', '')} SOTD {out[-1]['sotd']} "
              f"({time.perf_counter() - t0:.1f} s)")
    if args.baseline_split:
        out.append({"model": "position-only", **crossdomain.score(
            crossdomain.baseline_predictions(io.read_table(args.baseline_split), rows), args.bootstrap, 0)})
        print(f"position-only: accuracy {out[-1]['accuracy']:.3f} {out[-1].get('accuracy_ci95', '')}")
    io.write_csv(args.out, pd.DataFrame(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
