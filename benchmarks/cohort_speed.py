"""Cohort-scale predict, side by side in one run on one phantom cohort: a loop of one-study `saxlevel predict`
calls, one `saxlevel predict ROOT` (the cohort run), and a floor.

- loop: `python -m saxlevel.cli predict STUDY --figures none` per study, a fresh process each (what a shell loop
  does). Each call pays TensorFlow's import and the model's loading, ~10 s on 2 cores, so the loop is timed on
  ``--loop-sample`` studies and reported per study.
- cohort: `python -m saxlevel.cli predict ROOT --figures none` over every study, one process (its start-up,
  TensorFlow's import and the model's loading included).
- floor: in this process, with the model already loaded: read the pixel data of exactly the images the cohort
  run predicted (the files named in its levels, found untimed beforehand) and run the network and the head (for
  the real-heart model: the U-Net, presence and decoding) on them, nothing else: no header scan, no ED/ES choice,
  no windowing, no files written.

Prints seconds per study, the ratios, and a projection for 100,000 studies on these 2 cores and per added worker
machine of the same kind (the cohort's per-study time divided among machines; Dask's own overhead not included).

    python benchmarks/cohort_speed.py [--subjects 100] [--loop-sample 8] [--model PATH] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from saxlevel import params as P  # noqa: E402
from saxlevel import predict  # noqa: E402
from saxlevel.cohort import roots  # noqa: E402
from saxlevel.phantom import PhantomParams, make_phantom  # noqa: E402


def cli(*args: str, cwd: Path) -> float:
    """Seconds of one `saxlevel` command in a fresh process."""
    t0 = time.perf_counter()
    # a study predict refuses (exit 2: the phantom's damaged subjects) is timed like the others
    subprocess.run([sys.executable, "-m", "saxlevel.cli", *args], check=False, cwd=cwd, capture_output=True)
    return time.perf_counter() - t0


def floor_seconds(model_path: str, studies: list, prep: dict) -> float:
    """Pixel reads plus the network and head on the images the cohort run predicted, model already loaded."""
    from saxlevel.ingest import pngs

    model = predict.load_model(model_path)
    how = predict.default_decoding(model.info)
    # untimed: which files (and frames in them) the cohort's stacks hold
    plans = []
    for st in studies:
        try:
            plans.append([(s.phase, s.frame, s.rows) for s in predict.prepare_stacks(st.path, prep)])
        except predict.PredictError:
            pass  # a study the cohort run records as an error costs the floor nothing
    warm = next(st for st in studies if st.path)
    try:
        predict.infer_stacks(model, predict.prepare_stacks(warm.path, prep), how)  # warm-up, untimed
    except predict.PredictError:
        pass
    t0 = time.perf_counter()
    stacks = []
    for plan in plans:
        for phase, frame, rows in plan:
            raw = [pngs.read_image(p, k) for p, k in zip(rows.path, rows.file_frame)]
            # the real-heart model takes the stored images; the paper's models take windowed ones (their share of
            # the floor's time then includes the percentile window, the cheapest step of all)
            stacks.append(predict.Stack(phase, frame, rows, raw, [r.astype(np.uint8) for r in raw]))
    predict.infer_stacks(model, stacks, how)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=100)
    ap.add_argument("--loop-sample", type=int, default=8, help="studies the one-call-per-study loop is timed on")
    ap.add_argument("--model", default=str(predict.SHIPPED_MODEL))
    ap.add_argument("--work", help="folder for the phantom and the outputs (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="cohort_speed_"))
    root = work / "cohort"
    if not root.is_dir():
        prm = PhantomParams.from_params(P.load(REPO / "params.yaml"), subjects=args.subjects, seed=7, frames=10,
                                        format="clinical", jobs=2)
        print(f"writing a {args.subjects}-subject clinical-export phantom to {root} ...", flush=True)
        make_phantom(root, prm, progress=False)
    studies = roots.find_cohort(root)
    assert studies is not None and len(studies) >= 2, f"{root} is not a root of studies"
    n = len(studies)
    for old in ("loop", "run"):  # a previous run's outputs would be skipped as done
        shutil.rmtree(work / old, ignore_errors=True)
    sample = studies[:: max(1, n // args.loop_sample)][: args.loop_sample]
    loop = sum(cli("predict", str(s.path), "--model", args.model, "--figures", "none", "--out",
                   str(work / "loop" / str(s.subject)), cwd=work) for s in sample) / len(sample)
    cohort_total = cli("predict", str(root), "--model", args.model, "--figures", "none", "--out",
                       str(work / "run"), cwd=work)
    prep = predict.preprocessing(predict.model_info(args.model))
    floor = floor_seconds(args.model, studies, prep) / n
    cohort = cohort_total / n
    errors = (pd.read_csv(work / "run" / "cohort.csv").status == "error").sum()
    print(f"\n{n} phantom studies (clinical export, 10 frames, the default defect rates: {errors} of them errors), "
          f"model {Path(args.model).name}, figures none, 2 reading processes")
    print(f"{'':34s}{'s/study':>9s}")
    print(f"{'loop of one-study predict calls':34s}{loop:9.3f}   (timed on {len(sample)} studies)")
    print(f"{'cohort run (one process)':34s}{cohort:9.3f}   ({cohort_total:.1f} s for all, start-up included)")
    print(f"{'floor (pixels + network + head)':34s}{floor:9.3f}")
    print(f"\ncohort vs loop: {loop / cohort:.1f}x faster; cohort vs floor: {cohort / floor:.2f}x the floor's time")
    for machines in (1, 2, 4, 8):
        days = 100_000 * cohort / machines / 86400
        print(f"100,000 studies on {machines} machine(s) of 2 cores: {days:.2f} days "
              f"(the loop: {100_000 * loop / machines / 86400:.1f} days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
