"""DVC stage make_phantom: write the synthetic DICOM tree (params: phantom.*)."""

import sys
from pathlib import Path

# This checkout's library first: a queued experiment (dvc queue) runs in a copy of the repository, where an
# editable install would otherwise import the main workspace's src/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from saxlevel import params as P
from saxlevel.phantom import PhantomParams, make_phantom
from saxlevel.stageutil import parser, run_stage


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    truth = make_phantom(args.out, PhantomParams.from_params(P.load(args.params)))
    n_def = sum(1 for s in truth["subjects"].values() if s["defects"])
    n_cut = sum(1 for s in truth["subjects"].values() if s.get("truncated"))
    print(f"make_phantom: {len(truth['subjects'])} subjects, {n_def} with defects, {n_cut} stopping short of the "
          f"apex or base -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("make_phantom", main))
