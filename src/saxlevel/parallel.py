"""Per-subject work in worker processes, where no single subject can stop the run.

A task fails in one of two ways: its function raises (a problem no check foresaw), or its worker
process dies (e.g. a native decoder crashing on a damaged file), which breaks the pool and fails every
unfinished task with it. ``map_isolated`` turns both into ``on_failure(task, reason)`` results: an
exception directly, a dead worker by rerunning the unfinished tasks one at a time, so the task that kills
its worker is found and the rest go on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from tqdm import tqdm

R = TypeVar("R")


def worker_count(jobs: int) -> int:
    """``jobs`` limited to 1..CPU count."""
    return max(1, min(int(jobs), os.cpu_count() or 1))


def _star(fn: Callable[..., R], args: tuple) -> R:
    return fn(*args)


def _reason(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"


def map_isolated(fn: Callable[..., R], tasks: Sequence[tuple], jobs: int,
                 on_failure: Callable[[tuple, str], R], desc: str, unit: str = "subject",
                 progress: bool = True) -> list[R]:
    """``[fn(*task) for task in tasks]`` in ``jobs`` processes (in order); a task that raises or whose worker
    process dies gives ``on_failure(task, reason)`` instead of stopping the others. ``jobs == 1`` runs in
    this process."""
    jobs = worker_count(jobs)
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    results: dict[int, Any] = {}
    if jobs == 1:
        for i, task in enumerate(tasks):
            try:
                results[i] = fn(*task)
            except Exception as exc:  # noqa: BLE001  one task must not stop the others
                results[i] = on_failure(task, _reason(exc))
            bar.update()
        bar.close()
        return [results[i] for i in range(len(tasks))]
    pending = list(range(len(tasks)))
    workers = jobs
    while pending:
        broken = False
        with ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(_star, fn, tasks[i]): i for i in pending}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                except Exception as exc:  # noqa: BLE001  raised by fn in the worker
                    results[i] = on_failure(tasks[i], _reason(exc))
                bar.update()
        pending = [i for i in pending if i not in results]
        if broken and pending:
            if workers == 1:
                # One worker runs tasks in submission order: the first unfinished one killed it.
                culprit = pending.pop(0)
                results[culprit] = on_failure(tasks[culprit], "its worker process died (e.g. a decoder crashed)")
                bar.update()
                workers = jobs
            else:
                workers = 1
    bar.close()
    return [results[i] for i in range(len(tasks))]
