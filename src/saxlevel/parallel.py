"""Per-subject work in worker processes, where no single subject can stop the run.

Python exceptions are the worker function's own business (it turns them into exclusion records). What
it cannot catch is a worker process dying, e.g. a native decoder crashing on a damaged file: the pool
breaks and every unfinished task fails with it. ``map_isolated`` then reruns the unfinished tasks one
at a time, so the task that kills its worker is found, recorded through ``on_crash``, and the rest go on.
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


def map_isolated(fn: Callable[..., R], tasks: Sequence[tuple], jobs: int,
                 on_crash: Callable[[tuple, str], R], desc: str, unit: str = "subject",
                 progress: bool = True) -> list[R]:
    """``[fn(*task) for task in tasks]`` in ``jobs`` processes (in order); a task whose worker process dies
    gives ``on_crash(task, reason)`` instead of stopping the others. ``jobs == 1`` runs in this process."""
    jobs = worker_count(jobs)
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    results: dict[int, Any] = {}
    if jobs == 1:
        for i, task in enumerate(tasks):
            results[i] = fn(*task)
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
                try:
                    results[futures[future]] = future.result()
                    bar.update()
                except BrokenProcessPool:
                    broken = True
        pending = [i for i in pending if i not in results]
        if broken and pending:
            if workers == 1:
                # One worker runs tasks in submission order: the first unfinished one killed it.
                culprit = pending.pop(0)
                results[culprit] = on_crash(tasks[culprit], "its worker process died (e.g. a decoder crashed)")
                bar.update()
                workers = jobs
            else:
                workers = 1
    bar.close()
    return [results[i] for i in range(len(tasks))]
