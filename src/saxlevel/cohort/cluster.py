"""The cohort run on Dask distributed: a running cluster (``--scheduler ADDRESS``) or a local one of N worker
processes (``--workers N``).

Each task is a chunk of studies: its worker reads them, runs the network over all their slices at once and writes
their outputs, exactly as the one-machine run does (run.prepare, run.predict_prepared). Each worker process loads
the model once and keeps it for every later chunk. Workers write into the output folder themselves, so on several
machines it must be one shared filesystem (as the studies must be). A chunk whose worker dies is retried by Dask;
one that fails for good becomes error rows for its studies, and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from saxlevel import predict
from saxlevel.cohort import run, summary
from saxlevel.sources import contract

# Studies per task: enough slices for full batches of the network, small enough to spread over the workers.
CHUNK = 4
_MODELS: dict[tuple[str, str | None], predict.LoadedModel] = {}


def worker_model(settings: run.Settings) -> predict.LoadedModel:
    """The model of ``settings``, loaded once per worker process."""
    key = (settings.model, settings.backbone_model)
    if key not in _MODELS:
        _MODELS[key] = predict.load_model(settings.model, settings.backbone_model)
    return _MODELS[key]


def process_chunk(studies: list[contract.Study], settings: run.Settings, out: str,
                  keys: dict) -> list[tuple[int | str, dict]]:
    """One task on a worker: (subject, cohort row) of each study of the chunk, its outputs written."""
    model = worker_model(settings)
    how = settings.how or predict.default_decoding(model.info)
    prep = predict.preprocessing(model.info)
    prepared = [run.prepare(s, prep, settings.frames) for s in studies]
    return [row for _, row in run.predict_prepared(prepared, model, how, settings, Path(out), keys)]


def run_on_cluster(todo: list[contract.Study], settings: run.Settings, out: Path, keys: dict,
                   on_row: Callable[[int | str, dict], None], scheduler: str | None = None, workers: int = 2,
                   progress: bool = True) -> None:
    """Every study of ``todo`` in chunks on the cluster at ``scheduler`` (or a local cluster of ``workers``
    processes, one thread each), ``on_row`` called as chunks finish."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise predict.PredictError("--workers and --scheduler run on Dask distributed, which is not installed: "
                                   "pip install -r requirements.txt (or pip install 'saxlevel[cluster]')") from None

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    try:
        with Client(scheduler or cluster) as client:
            chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
            futures = {client.submit(process_chunk, c, settings, str(out), {s.subject: keys[s.subject] for s in c},
                                     pure=False, retries=1): c for c in chunks}
            bar = tqdm(total=len(todo), desc=f"cohort on {len(client.scheduler_info()['workers'])} Dask workers",
                       unit="subject", disable=not progress)
            for future in as_completed(futures):
                try:
                    got = future.result()
                except Exception as exc:  # noqa: BLE001  a chunk that fails for good costs only its studies
                    got = [(s.subject, summary.error_row(str(s.subject), run.layout_of(s),
                                                         f"its Dask task failed: {exc.__class__.__name__}: {exc}",
                                                         [], Path(settings.model).stem, 0.0)) for s in futures[future]]
                for subject, row in got:
                    on_row(subject, row)
                bar.update(len(got))
            bar.close()
    finally:
        if cluster is not None:
            cluster.close()
