"""filter_dicom against its floor: a bare ``pydicom.dcmread(stop_before_pixels=True)`` loop over the same files.

Both run side by side in this one process tree, on the same files, with the same number of processes:
- stage: ``python stages/filter_dicom.py`` as DVC runs it, whole process timed (start-up, imports, writing);
- floor: a process pool of the same size reading every file the stage reads, headers only, nothing else.

    python benchmarks/filter_speed.py --raw data/phantom [--jobs 2] [--repeats 3]

Prints files/s for both and their ratio (the best of ``--repeats`` runs each, interleaved).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from saxlevel.sources import kaggle

ROOT = Path(__file__).resolve().parents[1]


def stage_files(raw: Path) -> list[str]:
    """Every file filter_dicom reads: the image files of each study's sax_N folders."""
    return [str(f) for study in kaggle.find_studies(raw) for _, _, f in kaggle.sax_entries(study.path)]


def _read_headers(paths: list[str]) -> int:
    for p in paths:
        pydicom.dcmread(p, stop_before_pixels=True)
    return len(paths)


def bare_loop(files: list[str], jobs: int) -> float:
    """Seconds for ``jobs`` processes to dcmread every file's header (files dealt out in 64-file chunks)."""
    chunks = [files[i:i + 64] for i in range(0, len(files), 64)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        n = sum(pool.map(_read_headers, chunks))
    assert n == len(files)
    return time.perf_counter() - t0


def stage(raw: Path, jobs: int) -> tuple[float, int]:
    """(seconds for the whole filter_dicom stage process, files it read)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "stages/filter_dicom.py"), "--raw", str(raw),
                        "--out", f"{tmp}/interim", "--metrics", f"{tmp}/filter.json", "--jobs", str(jobs)],
                       check=True, cwd=ROOT, capture_output=True, env={"PYTHONPATH": str(ROOT / "src"),
                                                                        "PATH": "/usr/bin:/bin"})
        seconds = time.perf_counter() - t0
        read = json.loads(Path(f"{tmp}/filter.json").read_text())["files_read"]
    return seconds, read


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default="data/phantom")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    raw = Path(args.raw)
    files = stage_files(raw)
    floor, whole = [], []
    for _ in range(args.repeats):
        floor.append(bare_loop(files, args.jobs))
        seconds, read = stage(raw, args.jobs)
        whole.append(seconds)
        assert read == len(files), (read, len(files))
    f, s = min(floor), min(whole)
    print(f"{len(files)} files, {args.jobs} processes, best of {args.repeats}")
    print(f"  bare dcmread(stop_before_pixels) loop: {f:7.2f} s  {len(files) / f:8.0f} files/s")
    print(f"  filter_dicom stage (whole process):    {s:7.2f} s  {len(files) / s:8.0f} files/s")
    print(f"  ratio stage/floor: {f / s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
