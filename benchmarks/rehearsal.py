"""Paper-size rehearsal: the pipeline's stages on a phantom of any size, timed one by one.

    saxlevel phantom --out /big/phantom1140 --subjects 1140 --frames 10      # ~16 GB, ~35 min on 2 cores
    python benchmarks/rehearsal.py --raw /big/phantom1140 --work /big/run1140 [--backbone mobilenet]
    python benchmarks/rehearsal.py --raw data/phantom --work /tmp/run80 --compare /big/run1140/rehearsal.json

Runs filter_dicom, to_png, split, extract@BACKBONE and train@BACKBONE-HEAD for the grid's heads exactly as
DVC does (the stage scripts, params.yaml with data.raw pointed at --raw; the first train stage trains every
head side by side and the others take their models), one after another, and records per stage: wall seconds,
items and items/s, peak resident memory of the stage's whole process tree (sampled every 0.1 s, workers
included), and the disk its outputs take. ``--compare`` prints both runs side by side with the time per
subject ratio (linear scaling: close to 1). Writes WORK/rehearsal.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]


def disk_bytes(path: Path) -> int:
    """Bytes of the files under path (a file or a folder)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_measured(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak summed RSS bytes of the process and all its descendants) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    print(out.strip().splitlines()[-1] if out.strip() else "", flush=True)
    return seconds, peak


def stages(raw: Path, work: Path, params: Path, backbone: str) -> list[tuple[str, list[str], list[Path], str]]:
    """(name, command, outputs, unit) of each rehearsed stage, in pipeline order."""
    py = [sys.executable]
    p = ["--params", str(params)]
    train = []
    # every head of the grid, as DVC runs them: the first stage trains them all side by side (saxlevel.learning.handoff)
    for head in yaml.safe_load(params.read_text())["grid"]["heads"]:
        key = f"{backbone}-{head}"
        train.append((f"train@{key}", py + ["stages/train.py", "--backbone", backbone, "--head", head,
                                            "--split", str(work / "split.csv"), "--png", str(work / "png"),
                                            "--features", str(work / "features"),
                                            "--model-out", str(work / f"models/{key}.keras"),
                                            "--predictions", str(work / f"predictions/{key}.csv"),
                                            "--live", str(work / f"dvclive/{key}"),
                                            "--handoff", str(work / "handoff")] + p,
                      [work / f"models/{key}.keras"], "images"))
    return [
        ("filter_dicom", py + ["stages/filter_dicom.py", "--raw", str(raw), "--out", str(work / "interim"),
                               "--metrics", str(work / "metrics/filter.json")] + p, [work / "interim"], "files"),
        ("to_png", py + ["stages/to_png.py", "--index", str(work / "interim/index.csv"), "--out", str(work / "png"),
                         "--metrics", str(work / "metrics/png.json"), "--truth", str(raw / "truth.json")] + p,
         [work / "png"], "images"),
        ("split", py + ["stages/split.py", "--index", str(work / "png/index.csv"), "--labels", str(raw / "labels.csv"),
                        "--out", str(work / "split.csv"), "--metrics", str(work / "metrics/data.json")] + p,
         [work / "split.csv"], "images"),
        (f"extract@{backbone}", py + ["stages/extract.py", "--backbone", backbone, "--split", str(work / "split.csv"),
                                      "--out", str(work / "features")] + p, [work / "features"], "images"),
    ] + train


def items(name: str, work: Path) -> int:
    """What the stage processed: DICOM files read (filter_dicom), else images (PNGs, split rows, features)."""
    if name == "filter_dicom":
        return int(json.loads((work / "metrics/filter.json").read_text())["files_read"])
    if name == "to_png":
        return len(pd.read_csv(work / "png/index.csv"))
    return len(pd.read_csv(work / "split.csv"))


def rehearse(raw: Path, work: Path, backbone: str) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"raw": str(raw), "labels": str(raw / "labels.csv")}
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    subjects = len(json.loads((raw / "truth.json").read_text())["subjects"])
    record = {"raw": str(raw), "subjects": subjects, "raw_files": sum(1 for f in raw.rglob("*.dcm")),
              "raw_bytes": disk_bytes(raw), "cpus": psutil.cpu_count(), "stages": []}
    for name, cmd, outs, unit in stages(raw, work, params_file, backbone):
        seconds, peak = run_measured(cmd)
        n = items(name, work)
        record["stages"].append({"stage": name, "seconds": round(seconds, 1), "items": n, "unit": unit,
                                 "items_per_s": round(n / seconds, 1), "peak_rss_mb": round(peak / 2**20),
                                 "disk_mb": round(sum(disk_bytes(o) for o in outs) / 2**20, 1)})
        print(record["stages"][-1], flush=True)
    (work / "rehearsal.json").write_text(json.dumps(record, indent=1))
    return record


def table(record: dict) -> pd.DataFrame:
    t = pd.DataFrame(record["stages"]).set_index("stage")
    t["s_per_subject"] = t.seconds / record["subjects"]
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True, type=Path, help="phantom (or Kaggle) DICOM root")
    ap.add_argument("--work", required=True, type=Path, help="folder for the stages' outputs")
    ap.add_argument("--backbone", default="mobilenet")
    ap.add_argument("--compare", type=Path, help="another run's rehearsal.json to print beside this one")
    ap.add_argument("--reuse", action="store_true", help="read WORK/rehearsal.json instead of running")
    args = ap.parse_args()
    record = (json.loads((args.work / "rehearsal.json").read_text()) if args.reuse
              else rehearse(args.raw.resolve(), args.work.resolve(), args.backbone))
    mine = table(record)
    print(f"\n{record['subjects']} subjects, {record['raw_files']} DICOM files, "
          f"{record['raw_bytes'] / 2**30:.1f} GiB, {record['cpus']} CPUs")
    print(mine.to_markdown())
    if args.compare:
        other = json.loads(args.compare.read_text())
        small, large = sorted([record, other], key=lambda r: r["subjects"])
        a, b = table(small), table(large)
        both = pd.DataFrame({f"s ({small['subjects']})": a.seconds, f"s ({large['subjects']})": b.seconds,
                             f"items/s ({small['subjects']})": a.items_per_s,
                             f"items/s ({large['subjects']})": b.items_per_s,
                             f"peak RSS MB ({small['subjects']})": a.peak_rss_mb,
                             f"peak RSS MB ({large['subjects']})": b.peak_rss_mb,
                             f"disk MB ({large['subjects']})": b.disk_mb,
                             "s/subject ratio": (b.s_per_subject / a.s_per_subject).round(2)})
        print(f"\n{small['subjects']} vs {large['subjects']} subjects (ratio of seconds per subject; 1 = linear)")
        print(both.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
