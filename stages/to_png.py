"""DVC stage to_png: choose the ED and ES frames and write each stack as 8-bit PNGs."""

import sys
from pathlib import Path

# This checkout's library first: a queued experiment (dvc queue) runs in a copy of the repository, where an
# editable install would otherwise import the main workspace's src/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pandas as pd

from saxlevel import io
from saxlevel import params as P
from saxlevel.ingest import images, pngs
from saxlevel.stageutil import StageError, parser, run_stage


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--index", required=True, help="filter_dicom's index.csv")
    ap.add_argument("--out", required=True,
                    help="PNG folder (index.csv, excluded.csv, frames.csv, preprocessing.json inside)")
    ap.add_argument("--metrics", help="to_png metrics JSON (frame hit rate when --truth is given)")
    ap.add_argument("--truth", help="phantom truth.json, to report the ED/ES hit rate (skipped if absent)")
    ap.add_argument("--ed-frame")
    ap.add_argument("--es-frame")
    ap.add_argument("--jobs", type=int)
    args = ap.parse_args()
    cfg = P.png_settings(P.load(args.params), args.ed_frame, args.es_frame, args.jobs)
    index = pngs.read_index(args.index)
    out = io.check_output_dir(args.out)
    with io.staged_dir(out) as tmp:
        result = pngs.write_pngs(index, tmp, cfg, final=out)
        if not result.rows:
            first = result.excluded.detail.iloc[0] if len(result.excluded) else "no subjects in the index"
            raise StageError(f"all {index.subject.nunique()} subjects excluded, nothing to write; first reason: {first}")
        io.write_csv(tmp / "index.csv", result.index)
        io.write_csv(tmp / "excluded.csv", result.excluded)
        io.write_csv(tmp / pngs.FRAMES_FILE, result.frames)
        if result.labels:  # a segmented source: levels from the contours (-S data.labels=data/png/labels.csv)
            io.write_csv(tmp / pngs.LABELS_FILE, pd.DataFrame(result.labels))
        io.write_json(tmp / images.PREPROCESSING_FILE, images.preprocessing(cfg))
    metrics = pngs.png_metrics(result, index.subject.nunique(), cfg, index, args.truth)
    if args.metrics:
        io.write_json(args.metrics, metrics)
    hits = ", ".join(f"{k} {v:.1%}" for k, v in metrics.items() if k.endswith("hit_rate_pm1"))
    derived = f"; levels from the segmentations -> {out / pngs.LABELS_FILE}" if result.labels else ""
    print(f"to_png: {len(result.chosen)}/{metrics['subjects']} subjects, {len(result.rows)} images{derived}"
          f"{'; ED/ES within +/-1 frame: ' + hits if hits else ''}; excluded {metrics['excluded_by_rule'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("to_png", main))
