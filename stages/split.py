"""DVC stage split: subject-wise split, join labels, write split.csv and Tables 1-3."""

import sys
from pathlib import Path

# This checkout's library first: a queued experiment (dvc queue) runs in a copy of the repository, where an
# editable install would otherwise import the main workspace's src/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import io
from saxlevel import params as P
from saxlevel.ingest import splits
from saxlevel.stageutil import parser, run_stage


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--index", required=True, help="to_png's index.csv")
    ap.add_argument("--labels", help="labels CSV (default: data.labels)")
    ap.add_argument("--out", required=True, help="split CSV")
    ap.add_argument("--metrics", required=True, help="Tables 1-3 JSON")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()
    cfg = P.split_settings(P.load(args.params), args.labels, args.seed)
    data = splits.make_split(io.read_table(args.index), cfg.labels, cfg.ratios, cfg.seed)
    io.write_csv(args.out, data)
    t = splits.tables(data)
    io.write_json(args.metrics, t)
    s = t["table1_subjects"]
    print(f"split: {s['total']['count']} subjects -> train {s['train']['count']} / val {s['val']['count']} "
          f"/ test {s['test']['count']}; {len(data)} images")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("split", main))
