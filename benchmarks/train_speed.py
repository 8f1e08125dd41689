"""Benchmark: the train stage on cached features, the previous implementation and the current one side by side in
one run, and the floor each model could reach.

Both run as the stages run in `dvc repro`: `python stages/train.py ...` in a fresh process per stage, on the same
split.csv and feature cache, with the same params.yaml; the previous one is the stage and library of commit PREVIOUS
(today's implementation before this change, read from the repository's history, no copy kept in the tree),
interleaved backbone by backbone so that a change in the machine's load hits both. The current stages of one
backbone run as a group: the first trains every head side by side and hands the others their models
(saxlevel.learning.handoff with SAXLEVEL_HANDOFF=backbone; in `dvc repro` the first stage trains the whole grid), so a
group's time is the sum of its stages. The RNN heads are also run as a
group of their own, for their ratio. The floor is each head's forward and backward passes and Adam steps on
batches already in memory, in one compiled loop, for as many epochs as the current stage ran. Needs a
`dvc repro`'s data/split.csv, data/png and data/features (or --data DIR, a checkout that has them):

    python benchmarks/train_speed.py [--backbones mobilenet ...] [--heads dense lstm2 ...] [--data DIR]
    python benchmarks/train_speed.py --synthetic 1012 --epochs 8 --backbones mobilenet --heads dense bigru
    python benchmarks/train_speed.py --current-only --grid --synthetic 1012 --epochs 27   # the paper-size grid

Default: the paper's grid (4 backbones x 5 heads, random-weight features of the default phantom). --synthetic N
writes a feature cache of the paper's size instead (N subjects split 58/22/20 %, ED and ES stacks of 8-25 slices
like the Kaggle-size phantom's, ~11 on average; features = level signal + noise) and trains a fixed number of
epochs (--epochs, no early stop), so the per-epoch cost at paper size is measured without 1,140 phantom subjects.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from saxlevel import catalog  # noqa: E402
from saxlevel import io as sio  # noqa: E402
from saxlevel import params as P  # noqa: E402
from saxlevel.learning import training  # noqa: E402

# The last commit whose train stage fit the heads with keras' Model.fit (per batch through fit's machinery,
# every stack padded to the split's longest).
PREVIOUS = "893fa98"
DONE = re.compile(r"best epoch (\d+)/(\d+) \(val loss ([0-9.]+)\); accuracy val ([0-9.]+) test ([0-9.]+)")


def previous_tree(dest: Path, commit: str = PREVIOUS) -> Path:
    """stages/ and src/ of ``commit``, unpacked at ``dest``."""
    try:
        blob = subprocess.run(["git", "archive", commit, "stages", "src"], cwd=REPO, check=True,
                              capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"cannot read commit {commit} from git history ({exc}): run in a full clone") from None
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_stage(tree: Path, data: Path, backbone: str, head: str, out: Path, handoff: Path | None = None,
              scope: str = "backbone", params: Path | None = None) -> dict:
    """One train@BACKBONE-HEAD run of the stage in ``tree``: wall seconds and what it printed. ``handoff``: the
    current stage's hand-off folder (the previous stage has none); ``scope``: what its first stage trains along
    (SAXLEVEL_HANDOFF: its backbone's heads, or the whole grid of ``params``)."""
    name = f"{backbone}-{head}"
    cmd = [sys.executable, str(tree / "stages" / "train.py"), "--params", str(params or data / "params.yaml"),
           "--backbone", backbone, "--head", head, "--split", "data/split.csv", "--png", "data/png",
           "--features", "data/features", "--model-out", str(out / f"{name}.keras"),
           "--predictions", str(out / f"{name}.csv"), "--live", str(out / "live" / name)]
    cmd += ["--handoff", str(handoff)] if handoff else []
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=data, capture_output=True, text=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "SAXLEVEL_HANDOFF": scope})
    seconds = time.perf_counter() - t0
    found = DONE.search(r.stdout)
    if r.returncode or not found:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    best, run, val_loss, val_acc, test_acc = found.groups()
    return {"seconds": seconds, "epochs": int(run), "best": int(best), "val_loss": float(val_loss),
            "test_accuracy": float(test_acc), "taken": "trained beside its siblings" in r.stdout}


def take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of ``a``; -1 (an empty slot of the last batch) gives an all-zero row, as the stage's step."""
    out = a[np.maximum(idx, 0)]
    out[idx < 0] = 0
    return out


def floor_seconds(data: Path, backbone: str, head: str, epochs: int, cfg: P.TrainSettings) -> float:
    """Forward, backward and Adam steps of the head on preloaded fixed-shape batches, ``epochs`` epochs in one
    compiled loop (no data preparation, no Python per batch): what the stage's training could cost at best."""
    import tensorflow as tf

    from saxlevel.learning.heads import build_head

    split = sio.read_table(data / "data/split.csv")
    feats = np.load(data / "data/features" / f"{backbone}.npy")
    bs = catalog.batch_size(backbone, head)
    arrays, _ = training._arrays(head, split.reset_index(drop=True), feats, cfg.max_slices)
    batches = training.fixed_batches(len(arrays[0]), bs, np.random.default_rng(0))
    x, y, w = (tf.constant(np.stack([take(a, b) for b in batches])) for a in arrays)
    loop = training.Loop(build_head(head, feats.shape[1]), cfg.lr, *arrays, batch_size=bs)

    @tf.function(jit_compile=True)
    def epoch() -> None:
        for i in tf.range(tf.shape(x)[0]):
            loop.step(x[i], y[i], w[i])

    epoch()  # compile
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch()
    return time.perf_counter() - t0


def synthetic_split(subjects: int, rng: np.random.Generator) -> pd.DataFrame:
    """A paper-size split.csv: ``subjects`` split 58/22/20 %, ED and ES stacks of 8-25 slices (~11 on average,
    like the Kaggle-size phantom's) whose levels rise apex to base; PNG paths relative, no images."""
    from saxlevel import CLASSES

    rows = []
    for s in range(1, subjects + 1):
        split = "train" if s % 50 < 29 else "val" if s % 50 < 40 else "test"
        n = int(np.clip(np.round(rng.gamma(9.0, 11.0 / 9.0)), 8, 25))  # Kaggle-size phantom: mean ~11
        for phase in ("ED", "ES"):
            bounds = np.sort(rng.integers(0, n + 1, 4))
            for k in range(n):
                rows.append({"subject": s, "split": split, "phase": phase, "frame": 1 if phase == "ED" else 9,
                             "series": f"sax_{k}", "order": k, "path": f"{s}_{phase}_{k}.png",
                             "label": CLASSES[int(np.searchsorted(bounds, k, side="right"))]})
    table = pd.DataFrame(rows)
    table.insert(0, "row", np.arange(len(table)))
    return table


def synthetic(dest: Path, subjects: int, backbones: list[str], epochs: int) -> Path:
    """A checkout-like folder with a paper-size split.csv, feature caches and params.yaml (see the docstring)."""
    import json

    import yaml

    from saxlevel import CLASSES

    rng = np.random.default_rng(0)
    table = synthetic_split(subjects, rng)
    (dest / "data" / "png").mkdir(parents=True)
    (dest / "data" / "features").mkdir()
    sio.write_csv(dest / "data" / "split.csv", table)
    (dest / "data" / "png" / "preprocessing.json").write_text(json.dumps(
        {"window_percentiles": [2.0, 98.0], "ed_frame": "auto", "es_frame": "auto", "bit_depth": 8}))
    level = table.label.map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    for b in backbones:
        dims = catalog.BACKBONES[b].features
        feats = rng.normal(0, 1, (len(table), dims)).astype(np.float32)
        feats[np.arange(len(table)), level] += 1.5
        np.save(dest / "data" / "features" / f"{b}.npy", feats)
        (dest / "data" / "features" / f"{b}.json").write_text(json.dumps(
            {"backbone": b, "weights": "none", "image_size": 224, "dims": dims, "row_ids": table.row.tolist(),
             "preprocess": catalog.BACKBONES[b].preprocess}))
    prm = P.load(REPO / "params.yaml")
    prm["train"].update(epochs=epochs, patience=0)
    (dest / "params.yaml").write_text(yaml.safe_dump(prm, sort_keys=False))
    return dest


def run_group(tree: Path, data: Path, backbone: str, heads: list[str], out: Path, current: bool) -> list[dict]:
    """The stages of ``heads`` one after the other, as `dvc repro` runs them, in one output folder (with the
    current stage, one fresh hand-off folder: the first stage trains the group, the others take their models)."""
    return [run_stage(tree, data, backbone, h, out, out / "handoff" if current else None) for h in heads]


def grid_params(data: Path, backbones: list[str], heads: list[str], dest: Path) -> Path:
    """``data``'s params.yaml with grid.backbones and grid.heads set to the models benchmarked."""
    import yaml

    prm = P.load(data / "params.yaml")
    prm["grid"] = {"backbones": backbones, "heads": heads}
    dest.write_text(yaml.safe_dump(prm, sort_keys=False))
    return dest


def current_only(args: argparse.Namespace) -> int:
    """The current stages of each backbone as a group, without the previous ones; with --grid, every stage of the
    grid as one group, as `dvc repro` runs them (the first stage trains all models)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic(Path(tmp) / "synthetic", args.synthetic, args.backbones, args.epochs) \
            if args.synthetic else Path(args.data).resolve()
        if args.grid:
            prm = grid_params(data, args.backbones, args.heads, Path(tmp) / "grid.yaml")
            out, t0, rows = Path(tmp) / "grid", time.perf_counter(), []
            for b in args.backbones:
                for h in args.heads:
                    r = run_stage(REPO, data, b, h, out, out / "handoff", scope="grid", params=prm)
                    rows.append(f"{b}-{h} {r['seconds']:.0f} s{' taken' if r['taken'] else ''}")
            print(f"grid: {len(rows)} stages {time.perf_counter() - t0:.0f} s ({', '.join(rows)})", flush=True)
            return 0
        for b in args.backbones:
            t0 = time.perf_counter()
            now = run_group(REPO, data, b, args.heads, Path(tmp) / f"current-{b}", current=True)
            print(f"{b}: {len(args.heads)} stages {time.perf_counter() - t0:.0f} s ("
                  + ", ".join(f"{h} {r['seconds']:.0f} s {r['epochs']} epochs test {r['test_accuracy']:.3f}"
                              for h, r in zip(args.heads, now)) + ")", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=list(catalog.PAPER_BACKBONES))
    ap.add_argument("--heads", nargs="+", default=list(catalog.HEADS))
    ap.add_argument("--data", default=str(REPO), help="a checkout with a dvc repro's data/ (default: this one)")
    ap.add_argument("--synthetic", type=int, metavar="N", help="a synthetic feature cache of N subjects instead")
    ap.add_argument("--epochs", type=int, default=8, help="with --synthetic: epochs per model (no early stop)")
    ap.add_argument("--current-only", action="store_true",
                    help="time the current stages alone (a projection; no previous run, no ratios)")
    ap.add_argument("--grid", action="store_true",
                    help="with --current-only: all stages as one group, the first training every model")
    args = ap.parse_args()
    if args.current_only:
        return current_only(args)
    scratch = tempfile.TemporaryDirectory()
    data = synthetic(Path(scratch.name) / "synthetic", args.synthetic, args.backbones, args.epochs) \
        if args.synthetic else Path(args.data).resolve()
    missing = [p for p in ["data/split.csv", "data/png/preprocessing.json",
                           *(f"data/features/{b}.npy" for b in args.backbones)] if not (data / p).exists()]
    if missing:
        raise SystemExit(f"{data} lacks {', '.join(missing)}: run `dvc repro` first (or pass --data)")
    cfg = P.train_settings(P.load(data / "params.yaml"), "train", args.backbones[0])
    rnn = [h for h in args.heads if h in catalog.RNN_HEADS]
    print(f"train stages, previous ({PREVIOUS}) vs current, on {data}/data/features; {os.cpu_count()} CPU(s).\n"
          f"Per backbone, as `dvc repro` runs them: the stages of {', '.join(args.heads)} (each a process); "
          f"the current stage's first one trains the backbone's heads side by side and the others take their "
          f"models ('taken').\nThen the current stages of the RNN heads alone ({', '.join(rnn)}) as a group of "
          f"their own. Floor: each head's steps on preloaded batches in one compiled loop.")
    print(f"{'stage':<26}{'previous s':>11}{'current s':>10}{'floor s':>9}{'epochs':>10}{'test acc':>14}")
    totals = {"all": [0.0, 0.0, 0.0], "rnn": [0.0, 0.0, 0.0]}
    with tempfile.TemporaryDirectory() as tmp:
        old = previous_tree(Path(tmp) / "previous")
        for b in args.backbones:
            before = run_group(old, data, b, args.heads, Path(tmp) / f"previous-{b}", current=False)
            now = run_group(REPO, data, b, args.heads, Path(tmp) / f"current-{b}", current=True)
            alone = run_group(REPO, data, b, rnn, Path(tmp) / f"current-rnn-{b}", current=True) if rnn else []
            floors = {h: floor_seconds(data, b, h, n["epochs"], cfg) for h, n in zip(args.heads, now)}
            for h, p, n in zip(args.heads, before, now):
                print(f"{b + '-' + h:<26}{p['seconds']:>11.1f}{n['seconds']:>10.1f}{floors[h]:>9.1f}"
                      f"{p['epochs']:>5}/{n['epochs']:<4}{p['test_accuracy']:>7.3f}/{n['test_accuracy']:.3f}"
                      f"{'  taken' if n['taken'] else ''}", flush=True)
            group = [sum(r["seconds"] for r in before), sum(r["seconds"] for r in now), sum(floors.values())]
            rnn_old = sum(p["seconds"] for h, p in zip(args.heads, before) if h in rnn)
            rnn_group = [rnn_old, sum(r["seconds"] for r in alone), sum(floors[h] for h in rnn)]
            print(f"{b}: all {len(args.heads)} stages {group[0]:.0f} s -> {group[1]:.0f} s "
                  f"({group[0] / group[1]:.2f}x); RNN stages as their own group {rnn_group[0]:.0f} s -> "
                  f"{rnn_group[1]:.0f} s ({rnn_group[0] / max(rnn_group[1], 1e-9):.2f}x)", flush=True)
            for k, v in (("all", group), ("rnn", rnn_group)):
                totals[k] = [t + x for t, x in zip(totals[k], v)]
    for label, (a, c, f) in (("RNN heads", totals["rnn"]), ("all models", totals["all"])):
        if c:
            print(f"{label}: previous {a:.0f} s, current {c:.0f} s: {a / c:.2f}x faster; floor {f:.0f} s "
                  f"(current stages = {c / f:.1f}x the floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
