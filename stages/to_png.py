"""DVC stage to_png: choose the ED and ES frames and write each stack as 8-bit PNGs."""

import json
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from saxlevel import io
from saxlevel import params as P
from saxlevel.images import PNG_COLUMNS, subject_to_png
from saxlevel.stageutil import option, parser


def _frame(value: str) -> int | str:
    if str(value) == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"to_png: error: frame must be a number or 'auto', got {value!r}") from None


def _one(args):
    return subject_to_png(*args)


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
    ed = _frame(option(args.ed_frame, prm, "to_png.ed_frame", "auto"))
    es = _frame(option(args.es_frame, prm, "to_png.es_frame", "auto"))
    pct = tuple(float(x) for x in P.get(prm, "to_png.window", [2, 98]))
    if len(pct) != 2 or not 0 <= pct[0] < pct[1] <= 100:
        print(f"to_png: error: to_png.window must be [low, high] percentiles, got {list(pct)}", file=sys.stderr)
        return 2
    jobs = int(option(args.jobs, prm, "to_png.jobs", 2))
    index = pd.read_csv(args.index)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tasks = [(g, tmp, ed, es, pct) for _, g in index.groupby("subject", sort=True)]
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        results = list(tqdm(pool.map(_one, tasks), total=len(tasks), desc="to_png", unit="subject"))
    rows = [r for res in results for r in res[0]]
    for r in rows:  # paths point to the final folder, not the temporary one
        r["path"] = str(out / Path(r["path"]).relative_to(tmp))
    excluded = pd.DataFrame([p for res in results for p in res[1]], columns=["subject", "rule", "detail", "action"])
    tmp.mkdir(parents=True, exist_ok=True)
    io.write_csv(tmp / "index.csv", pd.DataFrame(rows, columns=PNG_COLUMNS))
    io.write_csv(tmp / "excluded.csv", excluded)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)

    chosen = {res[2]["subject"]: res[2] for res in results if "ed_frame" in res[2]}
    metrics: dict = {"subjects": len(tasks), "subjects_written": len(chosen), "images": len(rows),
                     "excluded_by_rule": excluded.rule.value_counts().to_dict(),
                     "ed_frame": str(ed), "es_frame": str(es)}
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
    sys.exit(main())
