"""The cohort run: every study of a root through one loaded model, resumable, bad studies recorded and skipped.

Per study the work is predict's, split where the model is needed: ``predict.prepare_stacks`` (index, ED/ES,
reading and windowing; worker processes), ``predict.infer_stacks`` (the network over batches of slices drawn from
several studies, each slice's output independent of its batch; the main process, model loaded once) and
``predict.write_outputs``. So a study's levels are the ones a one-study ``saxlevel predict`` writes. Each subject's
folder ends with ``fingerprint.json`` (the model file's digest, the settings and every input file's name, size and
modification time) and its cohort row; a rerun skips a subject whose fingerprint matches, so an interrupted cohort
goes on where it stopped and a changed model or input redoes what it touches.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from saxlevel import io, parallel, predict
from saxlevel.cohort import summary
from saxlevel.evaluation import coverage
from saxlevel.sources import contract, kaggle, nifti

FIGURES = ("none", "incomplete", "all")
FINGERPRINT = "fingerprint.json"
# Slices gathered from finished reads before the network runs over them: large enough for full batches, small
# enough that results (and the progress bar) follow the reads closely.
BATCH_SLICES = 256


@dataclass(frozen=True)
class Settings:
    """What decides a study's outputs besides its files (the model by its digest)."""

    model: str
    backbone_model: str | None = None
    frames: str = "ed-es"
    how: str | None = None  # decoding; None: the model's own
    figures: str = "incomplete"  # none, incomplete (only where coverage fails), all


@dataclass
class Prepared:
    """One study read and windowed (``stacks``), or why it could not be (``error``), with its warnings."""

    study: contract.Study
    stacks: list[predict.Stack] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


def folder_name(subject: int | str) -> str:
    """A subject's output folder name: its id with anything but letters, digits, dot, dash and underscore
    replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(subject)) or "_"


def layout_of(study: contract.Study) -> str:
    """The layout one study was read in: kaggle, a NIfTI layout (acdc, mnms, mnms2, ukbb) or dicom folder."""
    if kaggle.sax_folders(study.path) or (study.path / "study").is_dir():
        return "kaggle"
    return nifti.subject_layout(study.path) or "dicom folder"


def model_digest(settings: Settings) -> str:
    """MD5 of the model file (and of the frozen backbone file where one is named)."""
    h = hashlib.md5()
    for path in (settings.model, settings.backbone_model):
        if path:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def fingerprint(study: contract.Study, settings: Settings, digest: str) -> str:
    """What one subject's outputs follow from: the model's digest, the settings and each input file (path inside
    the study, size, modification time)."""
    root = study.path
    files = [(str(p.relative_to(root)), st.st_size, st.st_mtime_ns)
             for p in sorted(root.rglob("*")) if p.is_file() and (st := p.stat())]
    record = {"model": digest, "settings": {**asdict(settings), "model": "", "backbone_model": ""}, "files": files}
    return hashlib.md5(json.dumps(record, sort_keys=True).encode()).hexdigest()


def done_row(out: Path, study: contract.Study, key: str) -> dict | None:
    """The cohort row stored beside a subject's outputs when they were made with fingerprint ``key``, else None."""
    try:
        stored = json.loads((out / folder_name(study.subject) / FINGERPRINT).read_text())
    except (OSError, ValueError):
        return None
    return stored.get("row") if stored.get("fingerprint") == key else None


def prepare(study: contract.Study, prep: dict, frames: str) -> Prepared:
    """Read one study for the model (predict.prepare_stacks); any failure is this study's error, never the run's."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            stacks = predict.prepare_stacks(study.path, prep, frames)
            error = ""
        except (predict.PredictError, OSError, ValueError) as exc:
            stacks, error = [], str(exc)
        except Exception as exc:  # noqa: BLE001  a file no check foresaw must not stop the cohort
            stacks, error = [], f"{exc.__class__.__name__}: {exc}"
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return Prepared(study, stacks, notes, error, time.perf_counter() - t0)


def _failed(task: tuple, why: str) -> Prepared:
    return Prepared(task[0], error=why)


def finish(p: Prepared, result: list, info: dict, how: str, settings: Settings, out: Path, key: str,
           seconds: float) -> tuple[int | str, dict]:
    """Write one subject's outputs (levels, coverage, AHA, figures as ``settings.figures`` says) and its
    fingerprint; (subject, cohort row). No model needed: it runs in the reading workers beside the network."""
    folder = out / folder_name(p.study.subject)
    name = Path(settings.model).stem
    layout = layout_of(p.study)
    if p.error:
        row = summary.error_row(str(p.study.subject), layout, p.error, p.warnings, name, seconds)
    else:
        table = predict.stack_table(p.stacks, result)
        _, cover = predict.write_outputs(table, info, how, folder, figures=settings.figures == "all")
        if settings.figures == "incomplete" and not coverage.verdict(cover).startswith("complete"):
            predict.write_outputs(table, info, how, folder, figures=True)
        row = summary.ok_row(str(p.study.subject), layout, cover, p.warnings, name, seconds)
    io.write_json(folder / FINGERPRINT, {"fingerprint": key, "row": row})
    return p.study.subject, row


def predict_prepared(batch: list[Prepared], model: predict.LoadedModel, how: str, settings: Settings, out: Path,
                     keys: dict, write: Callable[..., Any] | None = None) -> list:
    """The network over every stack of ``batch`` at once, then each subject's outputs (finish): here, or handed to
    ``write`` (a pool's submit: the figures are drawn beside the next batch's network); (study, (subject, row) or
    the future of one) each."""
    stacks = [s for p in batch for s in p.stacks]
    t0 = time.perf_counter()
    results = predict.infer_stacks(model, stacks, how)
    per_slice = (time.perf_counter() - t0) / max(1, sum(len(s.rows) for s in stacks))
    done = []
    k = 0
    for p in batch:
        mine = results[k:k + len(p.stacks)]
        k += len(p.stacks)
        # its reading, plus its share of the network's time (the outputs' writing is not counted)
        seconds = p.seconds + per_slice * sum(len(s.rows) for s in p.stacks)
        for s in p.stacks:
            s.raw = []  # the network is done with the stored images; the outputs need the windowed ones only
        args = (p, mine, model.info, how, settings, out, keys[p.study.subject], seconds)
        done.append((p.study, finish(*args) if write is None else write(finish, *args)))
    return done


def _writer(reading: Reading) -> Callable[..., Any] | None:
    """The reading pool's submit while it has a pool, else None (finish runs here)."""
    return reading.submit if reading.pool is not None else None


def _collect(writing: list, record: Callable[[int | str, dict], None], bar: tqdm, model: str,
             wait: bool = False) -> list:
    """Record the finished outputs ((study, row or future) pairs); return the unfinished, unless ``wait``. A write
    that failed (its worker died, or a check no one foresaw) is the study's error row."""
    left = []
    for study, w in writing:
        if isinstance(w, Future) and not (wait or w.done()):
            left.append((study, w))
            continue
        try:
            subject, row = w.result() if isinstance(w, Future) else w
        except Exception as exc:  # noqa: BLE001  one study's outputs must not stop the cohort
            subject, row = study.subject, summary.error_row(str(study.subject), layout_of(study),
                                                            f"writing its outputs failed: {exc.__class__.__name__}: "
                                                            f"{exc}", [], model, 0.0)
        record(subject, row)
        bar.update()
    return left


def batches(prepared: Iterable[Prepared], slices: int = BATCH_SLICES) -> Iterator[list[Prepared]]:
    """Prepared studies grouped until they hold ``slices`` slices."""
    batch: list[Prepared] = []
    for p in prepared:
        batch.append(p)
        if sum(len(s.rows) for q in batch for s in q.stacks) >= slices:
            yield batch
            batch = []
    if batch:
        yield batch


class Reading:
    """Studies prepared in ``jobs`` worker processes, from the moment it is made (so the workers read while the model
    loads), yielded in order and at most a few studies ahead of the model (memory stays flat over any cohort). The
    same workers write the outputs (``submit``). They start clean (forkserver: TensorFlow is loaded in this
    process). A worker that dies (a native decoder crashing) costs only its study, found by rerunning the rest apart
    (parallel.map_isolated). Use it as a context manager: the pool lives until the last output is written."""

    def __init__(self, studies: list[contract.Study], prep: dict, frames: str, jobs: int) -> None:
        self.studies, self.prep, self.frames, self.jobs = studies, prep, frames, jobs
        self.workers = parallel.worker_count(jobs)
        self.pending: deque[Future] = deque()
        self.submitted = 0
        self.pool: ProcessPoolExecutor | None = None
        if self.workers > 1 and len(studies) > 1:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["saxlevel.cohort.run"])  # each worker starts with the readers imported
            self.pool = ProcessPoolExecutor(self.workers, mp_context=context)
            self._fill()

    def __enter__(self) -> Reading:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self) -> None:
        assert self.pool is not None
        while self.submitted < len(self.studies) and len(self.pending) < 4 * self.workers:
            self.pending.append(self.pool.submit(prepare, self.studies[self.submitted], self.prep, self.frames))
            self.submitted += 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future | None:
        """``fn(*args)`` in a worker (None where there is no pool: the caller runs it)."""
        return None if self.pool is None else self.pool.submit(fn, *args)

    def __iter__(self) -> Iterator[Prepared]:
        if self.pool is None:
            yield from (prepare(s, self.prep, self.frames) for s in self.studies)
            return
        done = 0
        try:
            while self.pending:
                p = self.pending.popleft().result()
                done += 1
                self._fill()
                yield p
        except BrokenProcessPool:
            self.pool = None  # broken: the rest is read apart and written here
            yield from parallel.map_isolated(prepare, [(s, self.prep, self.frames) for s in self.studies[done:]],
                                             self.jobs, on_failure=_failed, desc="reading (isolated)", progress=False)


def run_cohort(studies: list[contract.Study], settings: Settings, out: str | Path, jobs: int = 2,
               progress: bool = True, title: str = "", scheduler: str | None = None,
               workers: int = 0) -> pd.DataFrame:
    """Predict every study into OUT/<subject>/ and write OUT/cohort.csv and OUT/cohort.html; the cohort table.
    Subjects whose outputs carry the same fingerprint are taken as they are. ``scheduler`` (a Dask scheduler's
    address) or ``workers`` > 0 (a local Dask cluster of that many processes) run it on Dask (cluster.py); else
    this process holds the model and ``jobs`` processes read the studies."""
    if settings.figures not in FIGURES:
        raise predict.PredictError(f"--figures must be one of {', '.join(FIGURES)}, got {settings.figures!r}")
    out = io.check_output_dir(out)
    digest = model_digest(settings)
    keys = {s.subject: fingerprint(s, settings, digest) for s in studies}
    rows = {s.subject: row for s in studies if (row := done_row(out, s, keys[s.subject])) is not None}
    todo = [s for s in studies if s.subject not in rows]

    def record(subject: int | str, row: dict) -> None:
        rows[subject] = row

    if todo and (scheduler or workers > 0):
        from saxlevel.cohort import cluster

        cluster.run_on_cluster(todo, settings, out, keys, record, scheduler, workers, progress)
    elif todo:
        bar = tqdm(total=len(studies), initial=len(rows), desc="cohort", unit="subject", disable=not progress)
        with Reading(todo, predict.preprocessing(predict.model_info(settings.model)), settings.frames, jobs) as reading:
            model = predict.load_model(settings.model, settings.backbone_model)  # while the workers read
            how = settings.how or predict.default_decoding(model.info)
            writing: list = []
            for batch in batches(reading):
                writing += predict_prepared(batch, model, how, settings, out, keys, _writer(reading))
                writing = _collect(writing, record, bar, Path(settings.model).stem)
            _collect(writing, record, bar, Path(settings.model).stem, wait=True)
        bar.close()
    table = summary.cohort_table([rows[s.subject] for s in studies])
    summary.write(table, out, title or f"saxlevel cohort: {len(studies)} subjects, model {Path(settings.model).stem}")
    return table
