"""DVC stage evaluate: Table 5 (both grids, both decodings, CIs), comparisons, the selected model's metrics, figures."""

import sys
from pathlib import Path

# This checkout's library first: a queued experiment (dvc queue) runs in a copy of the repository, where an
# editable install would otherwise import the main workspace's src/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import io
from saxlevel import params as P
from saxlevel.evaluation import report
from saxlevel.stageutil import parser, run_stage


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--predictions", required=True, help="folder of BACKBONE-HEAD.csv")
    ap.add_argument("--split", required=True, help="split.csv (image paths for Figure 3)")
    ap.add_argument("--features", required=True, help="features folder (Table 4 facts)")
    ap.add_argument("--live", required=True, help="dvclive root (Figure 2)")
    ap.add_argument("--metrics", required=True, help="metrics folder (table5.json, metrics.json)")
    ap.add_argument("--plots", required=True, help="plots folder")
    args = ap.parse_args()
    cfg = P.evaluate_settings(P.load(args.params))
    entries = report.model_entries(cfg, Path(args.predictions), Path(args.live))
    data = io.read_table(args.split)
    res = report.evaluate(entries, data, cfg)
    head = report.write(res, entries, data, cfg, Path(args.features), Path(args.metrics), Path(args.plots))
    print(f"evaluate: {len(res.models)} models; selected {'-'.join(cfg.selected)} ({cfg.decode}): accuracy "
          f"{head['accuracy']:.3f}, SOTD {head['sotd']}, weighted AUC {head['auc_weighted']:.3f}; image-free "
          f"position-only baseline accuracy {res.baseline['argmax']['test']['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("evaluate", main))
