"""DVC stage to_png: choose the ED and ES frames and write each stack as 8-bit PNGs."""

import json
import sys
from pathlib import Path

import pandas as pd

from saxlevel import dicom, images, io, parallel
from saxlevel import params as P
from saxlevel.stageutil import StageError, parser, run_stage


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--index", required=True, help="filter_dicom's index.csv")
    ap.add_argument("--out", required=True, help="PNG folder (index.csv and excluded.csv go inside)")
    ap.add_argument("--metrics", help="to_png metrics JSON (frame hit rate when --truth is given)")
    ap.add_argument("--truth", help="phantom truth.json, to report the ED/ES hit rate (skipped if absent)")
    ap.add_argument("--ed-frame")
    ap.add_argument("--es-frame")
    ap.add_argument("--jobs", type=int)
    args = ap.parse_args()
    prm = P.load(args.params) if Path(args.params).exists() else {}
    cfg = P.png_settings(prm, args.ed_frame, args.es_frame, args.jobs)
    index = images.read_index(args.index)
    out = io.check_output_dir(args.out)
    with io.staged_dir(out) as tmp:
        tasks = [(g, tmp, cfg.ed_frame, cfg.es_frame, cfg.window) for _, g in index.groupby("subject", sort=True)]
        results = parallel.map_isolated(images.safe_subject_to_png, tasks, cfg.jobs, on_crash=images.crash_result,
                                        desc="to_png", unit="subject")
        rows = [r for res in results for r in res[0]]
        for r in rows:  # paths point to the final folder, not the temporary one
            r["path"] = str(out / Path(r["path"]).relative_to(tmp))
        excluded = pd.DataFrame([p for res in results for p in res[1]], columns=dicom.EXCLUDED_COLUMNS)
        if not rows:
            first = excluded.detail.iloc[0] if len(excluded) else "no subjects in the index"
            raise StageError(f"all {len(tasks)} subjects excluded, nothing to write; first reason: {first}")
        io.write_csv(tmp / "index.csv", pd.DataFrame(rows, columns=images.PNG_COLUMNS))
        io.write_csv(tmp / "excluded.csv", excluded)

    chosen = {res[2]["subject"]: res[2] for res in results if "ed_frame" in res[2]}
    metrics: dict = {"subjects": len(tasks), "subjects_written": len(chosen), "images": len(rows),
                     "excluded_by_rule": excluded.rule.value_counts().to_dict(),
                     "ed_frame": str(cfg.ed_frame), "es_frame": str(cfg.es_frame)}
    if args.truth and Path(args.truth).exists():
        truth = json.loads(Path(args.truth).read_text())["subjects"]
        n_frames = {sid: int(g.frame.max()) for sid, g in index.groupby("subject")}

        def hit(sid: int, key: str) -> bool:
            d = abs(chosen[sid][key] - truth[str(sid)][key])
            return min(d, n_frames[sid] - d) <= 1  # the cycle wraps around

        for key in ("ed_frame", "es_frame"):
            metrics[f"{key}_hit_rate_pm1"] = round(sum(hit(s, key) for s in chosen) / max(len(chosen), 1), 4)
    if args.metrics:
        io.write_json(args.metrics, metrics)
    hits = ", ".join(f"{k} {v:.1%}" for k, v in metrics.items() if k.endswith("hit_rate_pm1"))
    print(f"to_png: {len(chosen)}/{len(tasks)} subjects, {len(rows)} images"
          f"{'; ED/ES within +/-1 frame: ' + hits if hits else ''}; excluded {metrics['excluded_by_rule'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("to_png", main))
