"""DVC stage filter_dicom: index SAX DICOMs, apply the paper's exclusion rules, order apex->base."""

import sys
import time
from pathlib import Path

from saxlevel import dicom, io
from saxlevel import params as P
from saxlevel.stageutil import option, parser


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--raw", required=True, help="DICOM root (Kaggle layout)")
    ap.add_argument("--out", required=True, help="folder for index.csv and excluded.csv")
    ap.add_argument("--metrics", required=True, help="filter metrics JSON")
    ap.add_argument("--policy", choices=["paper", "repair"])
    ap.add_argument("--jobs", type=int)
    args = ap.parse_args()
    prm = P.load(args.params) if Path(args.params).exists() else {}
    policy = option(args.policy, prm, "filter.policy", "paper")
    jobs = option(args.jobs, prm, "filter.jobs", 2)
    t0 = time.perf_counter()
    try:
        index, excluded, counts = dicom.index_root(args.raw, policy=policy, jobs=jobs)
    except (ValueError, FileNotFoundError) as exc:
        print(f"filter_dicom: error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    io.write_csv(out / "index.csv", index)
    io.write_csv(out / "excluded.csv", excluded)
    metrics = {"policy": policy, **counts, "seconds": round(seconds, 2),
               "files_per_second": round(counts["files_read"] / max(seconds, 1e-9), 1)}
    io.write_json(args.metrics, metrics)
    rules = ", ".join(f"{k} {v}" for k, v in counts["excluded_by_rule"].items() if v)
    print(f"filter_dicom: {counts['subjects_found']} subjects -> {counts['subjects_kept']} kept "
          f"({counts['subjects_excluded']} excluded: {rules or 'none'}); {counts['files_read']} files "
          f"in {seconds:.1f} s ({metrics['files_per_second']} files/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
