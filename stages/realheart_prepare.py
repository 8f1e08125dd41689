"""Real-heart stage prepare: every labelled real stack as model input, LV-cavity masks and a slice table."""

import sys
from pathlib import Path

import numpy as np

# This checkout's library first (see stages/extract.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import io
from saxlevel import params as P
from saxlevel.realheart import realdata, realtrain
from saxlevel.stageutil import StageError, parser, run_stage


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", required=True, help="folder for x.npy (inputs, uint8), y.npy (masks) and slices.csv")
    args = ap.parse_args()
    roots, contours, _, _ = realtrain.settings(P.load(args.params))
    stacks = realdata.read_sources(roots, contours)
    if not stacks:
        raise StageError("no labelled stack in any source: check realheart/params.yaml's sources and contours")
    x, y, table = realtrain.arrays(stacks)
    out = io.check_output_dir(args.out)
    with io.staged_dir(out) as tmp:
        np.save(tmp / "x.npy", np.round(x * 255).astype(np.uint8))
        np.save(tmp / "y.npy", y)
        io.write_csv(tmp / "slices.csv", table)
    counts = table.groupby("source").agg(stacks=("stack", "nunique"), slices=("order", "size"))
    print(f"realheart prepare: {len(stacks)} stacks, {len(table)} slices\n{counts.to_string()}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("realheart prepare", main))
