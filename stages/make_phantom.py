"""DVC stage make_phantom: write the synthetic DICOM tree (params: phantom.*)."""

import argparse
import sys

from saxlevel import params as P
from saxlevel.phantom import PhantomParams, make_phantom


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    prm = P.load(args.params)
    cfg = PhantomParams(
        subjects=int(P.get(prm, "phantom.subjects")),
        seed=int(P.get(prm, "phantom.seed")),
        frames=int(P.get(prm, "phantom.frames")),
        jobs=int(P.get(prm, "phantom.jobs", 2)),
        format=str(P.get(prm, "phantom.format", "classic")),
        transfer_syntax=str(P.get(prm, "phantom.transfer_syntax", "explicit")),
        defect_rates={k: float(v) for k, v in P.get(prm, "phantom.defect_rates").items()},
    )
    truth = make_phantom(args.out, cfg)
    n_def = sum(1 for s in truth["subjects"].values() if s["defects"])
    print(f"make_phantom: {len(truth['subjects'])} subjects, {n_def} with defects -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
