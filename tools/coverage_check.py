"""Coverage QC on stacks that really miss an end: the phantom's test subjects intact, with the apex cut off (every
slice out-of-apical at ED or ES and the first slice after them) and with the base cut off (every out-of-basal slice
and the last slice before them), each through `saxlevel predict`'s code; how often each end's verdict is right.

    python tools/coverage_check.py [--model MODEL (default: the selected model)] [--phantom data/phantom]
                                   [--split data/split.csv] [--work DIR]

Needs a `dvc repro` of the default (Kaggle-layout) phantom. Prints per variant and end the share of stacks whose
verdict is right, and per end the sensitivity and specificity of detecting a missing end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from saxlevel import io, predict
from saxlevel import params as P
from saxlevel.evaluation import coverage

VARIANTS = ("intact", "apex", "base")


def cut(order: list[str], levels: dict[int, dict[str, str]], variant: str) -> list[str]:
    """The series (apex -> base) left of a stack after cutting off ``variant``'s end in both phases."""
    if variant == "intact":
        return list(order)
    beyond = "oap" if variant == "apex" else "obs"
    inside = [s for s in order if all(per.get(s) != beyond for per in levels.values())]
    return inside[1:] if variant == "apex" else inside[:-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a trained model (default: the selected backbone/head in params.yaml)")
    ap.add_argument("--phantom", default="data/phantom")
    ap.add_argument("--split", default="data/split.csv")
    ap.add_argument("--work", help="where the cut studies and the results go (default: a temporary folder)")
    args = ap.parse_args()
    if args.model is None:
        args.model = "models/{}-{}.keras".format(*P.selected_model(P.load("params.yaml")))
    root = Path(args.phantom)
    truth = json.loads((root / "truth.json").read_text())["subjects"]
    labels = io.read_table(root / "labels.csv")
    split = io.read_table(args.split)
    model = predict.load_model(args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="coverage_check_"))
    rows = []
    for sid in sorted(split[split.split == "test"].subject.unique()):
        study = next(root.glob(f"*/*/{sid}/study"))
        t = truth[str(sid)]
        levels = {int(f): dict(zip(g.series, g.label)) for f, g in labels[labels.subject == sid].groupby("frame")}
        for variant in VARIANTS:
            keep = cut(t["apex_to_base"], levels, variant)
            folder = work / f"{sid}-{variant}"
            shutil.rmtree(folder, ignore_errors=True)
            for s in keep + [p.name for p in study.iterdir() if not p.name.startswith("sax")]:
                shutil.copytree(study / s, folder / "study" / s)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the cut studies' folder-number gaps only warn
                table = predict.predict_folder(folder, model)
            for r in coverage.coverage_table(table.drop(columns=["path", "file_frame", "image"])).itertuples():
                true = [levels[t["ed_frame"] if r.phase == "ED" else t["es_frame"]][s] for s in keep]
                rows.append({"subject": sid, "variant": variant, "phase": r.phase, "n_slices": len(keep),
                             "apex_missing": true[0] != "oap", "base_missing": true[-1] != "obs",
                             "apex_missing_said": not r.apex_covered, "base_missing_said": not r.base_covered})
    res = pd.DataFrame(rows)
    io.write_csv(work / "coverage_check.csv", res)
    print(f"{args.model}: {len(res)} stacks ({res.subject.nunique()} test subjects x {len(VARIANTS)} variants x "
          f"ED/ES); results in {work}/coverage_check.csv")
    for end in coverage.ENDS:
        right = res[f"{end}_missing"] == res[f"{end}_missing_said"]
        per = right.groupby(res.variant).mean().reindex(list(VARIANTS))
        d = coverage.detection(res[f"{end}_missing"].to_numpy(), res[f"{end}_missing_said"].to_numpy())
        print(f"{end}: verdict right for {right.mean():.1%} of stacks ({', '.join(f'{v} {p:.1%}' for v, p in per.items())}); "
              f"missing {d['missing']}: sensitivity {d['sensitivity']}, specificity {d['specificity']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
