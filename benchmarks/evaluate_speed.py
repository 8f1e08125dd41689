"""Benchmark: the evaluate stage at the paper's size, the previous implementation and the current one side by side
in one run.

Both run as `dvc repro` runs the stage: `python stages/evaluate.py ...` in a fresh process, on the same synthetic
checkout (start-up, reading, Table 5 with its bootstrap intervals, comparisons, figures and writing all timed). The
previous one is the stage and library of commit PREVIOUS (read from the repository's history, no copy kept in the
tree); the two alternate, best of --repeats each, and their outputs (OUTPUTS) must be identical.

The synthetic checkout has the paper's size: N subjects split 58/22/20 % with ED and ES stacks of 8-25 slices
(benchmarks/train_speed.py's synthetic split.csv, 1,012 subjects -> ~22,900 images, ~9,700 of them in val and test),
prediction files for every model of the grid (probabilities between the truth and noise, a different quality
per model), dvclive curves, feature metadata and tiny PNGs for the test images (Figure 3):

    python benchmarks/evaluate_speed.py [--subjects 1012] [--grid paper|default] [--repeats 2]

--grid paper: the paper's 20 models (4 backbones x 5 heads); default: params.yaml's grids as they stand
(EfficientNet-Lite0 and the fine-tuned models too).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from train_speed import previous_tree, synthetic_split  # noqa: E402

from saxlevel import CLASSES, catalog  # noqa: E402
from saxlevel import io as sio  # noqa: E402
from saxlevel import params as P  # noqa: E402
from saxlevel.evaluation import table5  # noqa: E402
from saxlevel.ingest import images  # noqa: E402

# The last commit whose evaluate stage decoded, bootstrapped and compared as it did before this benchmark.
PREVIOUS = "48a72ea"
# What must come out the same: Table 5 with its intervals, the comparisons, the coverage QC, the DVC plot data.
OUTPUTS = ("metrics/table5.json", "metrics/metrics.json", "plots/table5.csv", "plots/claims.csv", "plots/coverage.csv",
           "plots/confusion.csv", "plots/sotd.csv", "plots/curves.csv")


def write_checkout(dest: Path, subjects: int, grid: str) -> tuple[Path, int]:
    """A checkout-like folder with everything evaluate reads; returns it and how many models it holds."""
    rng = np.random.default_rng(0)
    table = synthetic_split(subjects, rng)
    prm = P.load(REPO / "params.yaml")
    if grid == "paper":
        prm["grid"] = {"backbones": list(catalog.PAPER_BACKBONES), "heads": list(catalog.HEADS)}
        prm["finetune_grid"]["backbones"] = []
        prm["backbone"], prm["head"] = catalog.PAPER_BACKBONES[0], "lstm2"  # the paper's selected model
    cfg = P.evaluate_settings(prm)
    # Tiny PNGs for the test images only: Figure 3 draws test stacks; nothing else opens an image.
    test = (table.split == "test").to_numpy()
    table.loc[test, "path"] = [str(dest / "data" / "png" / p) for p in table.path[test]]
    for p, order in zip(table.path[test], table.order[test]):
        images.save_png(Path(p), np.full((16, 16), 10 * order, np.uint8))
    sio.write_csv(dest / "data" / "split.csv", table)
    rows = table[table.split.isin(["val", "test"])]
    truth = np.eye(len(CLASSES))[[CLASSES.index(label) for label in rows.label]]
    names = [f"{b}-{h}" for b in cfg.backbones for h in cfg.heads]
    names += [f"finetuned/{b}-{h}" for b in cfg.finetune_backbones for h in cfg.finetune_heads] if cfg.finetuned else []
    for k, name in enumerate(names):
        q = 0.2 + 0.7 * k / max(len(names) - 1, 1)  # a different accuracy per model
        probs = q * truth + (1 - q) * rng.dirichlet(np.ones(len(CLASSES)), len(rows))
        sio.write_csv(dest / "data" / "predictions" / f"{name}.csv", table5.predictions_frame(rows, probs))
        for part in ("train", "eval"):
            for metric in ("loss", "accuracy"):
                values = np.linspace(1.2, 0.4, 27) + rng.normal(0, 0.02, 27)
                sio.write_text(dest / "dvclive" / name / "plots" / "metrics" / part / f"{metric}.tsv",
                               "step\t" + metric + "\n" + "".join(f"{i}\t{v:.4f}\n" for i, v in enumerate(values)))
    for b in dict.fromkeys(cfg.backbones + cfg.finetune_backbones):
        sio.write_json(dest / "data" / "features" / f"{b}.json", {
            "backbone": b, "weights": "none", "image_size": 224, "dims": catalog.BACKBONES[b].features,
            "parameters": 1, "images_per_second": 1.0})
    (dest / "params.yaml").write_text(yaml.safe_dump(prm, sort_keys=False))
    return dest, len(names)


def run_evaluate(tree: Path, data: Path, out: Path) -> float:
    """One run of ``tree``'s evaluate stage on ``data``, writing under ``out``: wall seconds."""
    cmd = [sys.executable, str(tree / "stages" / "evaluate.py"), "--params", "params.yaml",
           "--predictions", "data/predictions", "--split", "data/split.csv", "--features", "data/features",
           "--live", "dvclive", "--metrics", str(out / "metrics"), "--plots", str(out / "plots")]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=data, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=1012, help="subjects (1,012: the paper's 1,140 after exclusions)")
    ap.add_argument("--grid", choices=("paper", "default"), default="paper")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, models = write_checkout(Path(tmp) / "checkout", args.subjects, args.grid)
        old = previous_tree(Path(tmp) / "previous", PREVIOUS)
        split = sio.read_table(data / "data" / "split.csv")
        scored = split.split.isin(["val", "test"]).sum()
        print(f"evaluate, previous ({PREVIOUS}) vs current: {models} models, {args.subjects} subjects, "
              f"{len(split)} images ({scored} in val and test); {os.cpu_count()} CPU(s); best of {args.repeats}")
        times: dict[str, list[float]] = {"previous": [], "current": []}
        for i in range(args.repeats):
            for label, tree in (("previous", old), ("current", REPO)):
                times[label].append(run_evaluate(tree, data, Path(tmp) / label))
                print(f"  run {i + 1} {label}: {times[label][-1]:.1f} s", flush=True)
        same = all((Path(tmp) / "previous" / f).read_text() == (Path(tmp) / "current" / f).read_text()
                   for f in OUTPUTS)
        before, now = min(times["previous"]), min(times["current"])
        print(f"evaluate: previous {before:.1f} s, current {now:.1f} s: {before / now:.2f}x faster; "
              f"{', '.join(Path(f).name for f in OUTPUTS)} {'identical' if same else 'DIFFER'}")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
