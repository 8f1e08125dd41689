"""DVC stage split: subject-wise split, join labels, write split.csv and Tables 1-3."""

import sys
from pathlib import Path

import pandas as pd

from saxlevel import io, splits
from saxlevel import params as P
from saxlevel.stageutil import option, parser


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--index", required=True, help="to_png's index.csv")
    ap.add_argument("--labels", help="labels CSV (default: data.labels)")
    ap.add_argument("--out", required=True, help="split CSV")
    ap.add_argument("--metrics", required=True, help="Tables 1-3 JSON")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()
    prm = P.load(args.params) if Path(args.params).exists() else {}
    labels_path = option(args.labels, prm, "data.labels")
    seed = int(option(args.seed, prm, "split.seed", 0))
    ratios = tuple(float(r) for r in P.get(prm, "split.ratios", list(splits.PAPER_RATIOS)))
    images = pd.read_csv(args.index)
    if images.empty:
        print(f"split: error: {args.index} lists no images (did every subject get excluded?)", file=sys.stderr)
        return 2
    try:
        labels = splits.read_labels(labels_path)
        data = splits.join_labels(images, labels, str(labels_path))
        assignment = splits.assign_splits(sorted(images.subject.unique()), ratios, seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"split: error: {exc}", file=sys.stderr)
        return 2
    data.insert(1, "kaggle_split", data.pop("split"))
    data.insert(1, "split", data.subject.map(assignment))
    data = data.sort_values(["subject", "phase", "order"]).reset_index(drop=True)
    data.insert(0, "row", range(len(data)))
    io.write_csv(args.out, data)
    t = splits.tables(data)
    io.write_json(args.metrics, t)
    s = t["table1_subjects"]
    print(f"split: {s['total']['count']} subjects -> train {s['train']['count']} / val {s['val']['count']} "
          f"/ test {s['test']['count']}; {len(data)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
