"""DVC stage filter_dicom: index SAX DICOMs (or NIfTI volumes), apply the paper's exclusion rules, order apex->base."""

import sys
import time
from pathlib import Path

# This checkout's library first: a queued experiment (dvc queue) runs in a copy of the repository, where an
# editable install would otherwise import the main workspace's src/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import io, sources
from saxlevel import params as P
from saxlevel.sources import nifti
from saxlevel.stageutil import StageError, parser, run_stage


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--raw", required=True, help="DICOM root: the Kaggle layout, or one folder per subject (DICOM or NIfTI)")
    ap.add_argument("--out", required=True, help="folder for index.csv and excluded.csv")
    ap.add_argument("--metrics", required=True, help="filter metrics JSON")
    ap.add_argument("--policy", choices=["paper", "repair"])
    ap.add_argument("--jobs", type=int)
    args = ap.parse_args()
    prm = P.load(args.params)
    cfg = P.filter_settings(prm, args.policy, args.jobs)
    lv_cavity = nifti.cavity_label_setting(P.get(prm, "filter.lv_cavity_label", "auto"))
    io.check_output_dir(args.out)
    t0 = time.perf_counter()
    index, excluded, counts = sources.index_root(args.raw, policy=cfg.policy, jobs=cfg.jobs,
                                                 lv_cavity=lv_cavity)
    seconds = time.perf_counter() - t0
    rules = ", ".join(f"{k} {v}" for k, v in counts["excluded_by_rule"].items() if v)
    if counts["subjects_kept"] == 0:
        first = excluded[excluded.action == "excluded"].detail.iloc[0] if len(excluded) else "no images"
        raise StageError(f"all {counts['subjects_found']} subjects excluded ({rules}); first reason: {first}")
    with io.staged_dir(args.out) as tmp:
        io.write_csv(tmp / "index.csv", index)
        io.write_csv(tmp / "excluded.csv", excluded)
    metrics = {"policy": cfg.policy, **counts, "seconds": round(seconds, 2),
               "files_per_second": round(counts["files_read"] / max(seconds, 1e-9), 1)}
    io.write_json(args.metrics, metrics)
    left_out = excluded[excluded.action == "ignored"]
    note = f"; {len(left_out)} series/files left out as not SAX cine (excluded.csv)" if len(left_out) else ""
    print(f"filter_dicom ({counts['layout']} layout): {counts['subjects_found']} subjects -> "
          f"{counts['subjects_kept']} kept ({counts['subjects_excluded']} excluded: {rules or 'none'}){note}; "
          f"{counts['files_read']} files in {seconds:.1f} s ({metrics['files_per_second']} files/s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("filter_dicom", main))
