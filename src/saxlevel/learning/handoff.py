"""Models of the grid trained in one process, handed over to their own train@BACKBONE-HEAD stages.

DVC runs one process per train stage, and each process would pay TensorFlow's start-up and train on two
cores one small model at a time. So the first train stage to run trains its own model and every sibling
model of the grid that is not already trained for the same inputs and whose backbone's feature cache is
on disk for the same split.csv, side by side (trainer.train_cached), and leaves each sibling's result in a
hand-off folder under the sibling's name and the fingerprint of its inputs. (DVC runs every extract stage
before the first train stage, so in a `dvc repro` those caches are the current ones; a cache that is not,
say extracted before a parameter changed, gives results whose fingerprint no stage asks for.) When DVC
then runs the sibling's stage, the stage finds its result there, copies it to its own outputs and removes
it, without importing TensorFlow, pandas or dvclive. A result is only ever taken by the stage whose inputs
have the same fingerprint (code, data, features, settings, library versions), so what a stage writes is
what it would have trained itself: training.iter_fit trains every model exactly as it trains alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import yaml

from saxlevel import catalog
from saxlevel.params import TrainSettings, train_settings

ROOT = ".saxlevel/handoff"  # in the repository (git-ignored); SAXLEVEL_HANDOFF: grid (default), backbone, 0 (off)
SCOPES = {"grid": ("", "1", "true", "yes", "on", "grid"), "backbone": ("backbone",), "off": ("0", "false", "no", "off")}
LIBRARIES = ("tensorflow", "keras", "numpy")
FILES = ("model.keras", "predictions.csv", "result.json", "live")


def scope() -> str:
    """Which siblings the first train stage trains along, from SAXLEVEL_HANDOFF: the whole grid's (grid, the
    default), only its own backbone's (backbone), or none (0 / off: every stage trains its own model)."""
    value = os.environ.get("SAXLEVEL_HANDOFF", "grid").strip().lower()
    for name, spellings in SCOPES.items():
        if value in spellings:
            return name
    raise ValueError(f"SAXLEVEL_HANDOFF={value!r}: use grid (the default), backbone or 0 (off)")


def _md5_files(paths: list[Path], h: hashlib._Hash) -> None:
    for p in paths:
        h.update(str(p.name).encode())
        with open(p, "rb") as f:
            h.update(hashlib.file_digest(f, "md5").digest())


def code_files(repo: Path) -> list[Path]:
    """The train stage's code: its code deps in dvc.yaml (what makes DVC rerun it; a package folder stands for its
    modules), or, without a dvc.yaml, stages/train.py and the whole saxlevel package."""
    try:
        deps = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["deps"]
        code = [repo / d for d in deps if isinstance(d, str) and (d.endswith(".py") or d.startswith("src/"))]
        return [f for p in code for f in ([p] if p.suffix == ".py" else sorted(p.rglob("*.py")))]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return [repo / "stages" / "train.py", *sorted((repo / "src" / "saxlevel").rglob("*.py"))]


def inputs_digest(repo: Path, split: Path, png: Path, features: Path, backbone: str) -> str:
    """What every head of ``backbone`` trains from: code, split.csv, to_png's preprocessing record, the
    feature cache and the versions of the libraries that do the arithmetic."""
    h = hashlib.md5()
    _md5_files([p for p in code_files(repo) if p.exists()], h)
    _md5_files([split, png / "preprocessing.json", features / f"{backbone}.npy", features / f"{backbone}.json"], h)
    for lib in LIBRARIES:
        try:
            h.update(f"{lib}={metadata.version(lib)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{lib}=absent".encode())
    return h.hexdigest()


def fingerprint(digest: str, backbone: str, head: str, cfg: TrainSettings) -> str:
    """One model's fingerprint: the shared inputs, its name, its settings and its Table 4 batch size."""
    record = {"inputs": digest, "backbone": backbone, "head": head, "settings": asdict(cfg),
              "batch_size": catalog.batch_size(backbone, head)}
    return hashlib.md5(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]


def trained_fingerprint(model_path: Path) -> str | None:
    """The fingerprint recorded in a trained model's saxlevel.json (None: no model, or none recorded)."""
    try:
        with zipfile.ZipFile(model_path) as z:
            return json.loads(z.read("saxlevel.json")).get("fingerprint")
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return None


class HandOff:
    """Results left for sibling stages: ROOT/NAME/FINGERPRINT/{model.keras, predictions.csv, result.json, live/}."""

    def __init__(self, root: str | Path = ROOT) -> None:
        self.root = Path(root)

    def entry(self, name: str, key: str) -> Path:
        return self.root / name / key

    def has(self, name: str, key: str) -> bool:
        return all((self.entry(name, key) / f).exists() for f in FILES)

    def put(self, name: str, key: str, write) -> Path:
        """Leave a result for stage ``name``: ``write(folder)`` fills a temporary folder with FILES, which then
        replaces any earlier result of that stage at once (older fingerprints can no longer be taken)."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            write(tmp)
            missing = [f for f in FILES if not (tmp / f).exists()]
            if missing:
                raise RuntimeError(f"hand-off of {name} lacks {missing}")
            for old in folder.iterdir():
                if old != tmp:
                    shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, self.entry(name, key))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.entry(name, key)

    def discard(self, name: str) -> None:
        """Remove what was left for ``name`` (taken, or no longer wanted)."""
        shutil.rmtree(self.root / name, ignore_errors=True)
        for d in (self.root, self.root.parent):
            try:
                d.rmdir()  # only when empty
            except OSError:
                break


def stage_name(backbone: str, head: str) -> str:
    return f"train@{backbone}-{head}"


def siblings_to_train(box: HandOff, digest: str, backbone: str, heads: list[str], cfg: TrainSettings,
                      models_dir: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """The ``heads`` of ``backbone`` (less ``skip``) that neither wait in the hand-off nor sit in the workspace
    already trained for the same fingerprint (their models lie in ``models_dir`` as BACKBONE-HEAD.keras)."""
    todo = []
    for h in heads:
        key = fingerprint(digest, backbone, h, cfg)
        if h in skip or box.has(stage_name(backbone, h), key):
            continue
        if trained_fingerprint(models_dir / f"{backbone}-{h}.keras") != key:
            todo.append(h)
    return todo


def features_on_disk(features: Path, backbone: str, row_ids: list) -> bool:
    """extract's cache of ``backbone`` is there and of these split.csv rows (else, not trained along: its own
    stage trains it after its extract stage)."""
    try:
        meta = json.loads((features / f"{backbone}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (features / f"{backbone}.npy").exists() and meta.get("row_ids") == row_ids


def write_result(folder: Path, trained) -> None:
    """FILES of one trained model (a trainer.Trained) in ``folder``."""
    from saxlevel import io

    io.save_keras(folder / "model.keras", trained.model, extra=trained.info)
    io.write_csv(folder / "predictions.csv", trained.predictions)
    pred = trained.predictions
    accuracy = {s: float((pred.true == pred.pred)[pred.split == s].mean()) for s in ("val", "test")}
    io.write_json(folder / "result.json", {"best_epoch": trained.best_epoch, "best_val_loss": trained.best_val_loss,
                                           "epochs_run": trained.info["epochs_run"], "accuracy": accuracy})
    write_curves(folder / "live", trained.history, trained.best_epoch, trained.best_val_loss)


def write_curves(live_dir: Path, history: dict[str, list[float]], best_epoch: int, best_val_loss: float) -> None:
    """The learning curves in dvclive's folder layout, logged as its keras callback logs them (train/...,
    eval/... per epoch, then the best epoch in the summary). Written with the model, so that the stage that
    takes a model from the hand-off copies them and imports neither dvclive nor pandas."""
    from dvclive import Live
    from dvclive.utils import standardize_metric_name

    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        for epoch in range(len(history["loss"])):
            for metric, values in history.items():
                live.log_metric(standardize_metric_name(metric, "dvclive.keras"), values[epoch])
            live.next_step()
        live.summary["best_epoch"] = best_epoch
        live.summary["best_val_loss"] = round(best_val_loss, 5)


def publish(folder: Path, model_out: Path, predictions_out: Path, live_dir: Path) -> dict:
    """A stage's outputs from FILES in ``folder``, each replaced atomically: the model, the predictions and the
    dvclive folder of learning curves. Returns result.json."""
    from saxlevel import io

    result = json.loads((folder / "result.json").read_text())
    for src, dst in ((folder / "model.keras", model_out), (folder / "predictions.csv", predictions_out)):
        io.atomic_write(dst, functools.partial(shutil.copyfile, src))
    with io.staged_dir(live_dir) as tmp:
        shutil.copytree(folder / "live", tmp, dirs_exist_ok=True)
    return result


def train_model(backbone: str, head: str, section: str, prm: dict, paths: tuple[Path, Path, Path | None],
                outs: tuple[Path, Path, Path], handoff_root: str | Path, repo: Path, name: str) -> dict:
    """Train one model and publish it to ``outs`` (model, predictions, dvclive folder); its result.json.

    ``paths``: split.csv, to_png's folder, the features folder (None for models that run the backbone). A cached
    paper model (section train) with the hand-off on (``scope``) is taken from the hand-off where an earlier
    train stage trained it along (same fingerprint), else trained here with its waiting siblings (train_along);
    any other model trains alone."""
    from saxlevel.stageutil import seed_everything

    cfg = train_settings(prm, section, backbone)
    how = scope()
    split, png, features = paths
    if section == "train" and cfg.cached and how != "off" and features is not None:
        box = HandOff(handoff_root)
        digest = inputs_digest(repo, split, png, features, backbone)
        key = fingerprint(digest, backbone, head, cfg)
        if box.has(name, key):
            print(f"{name}: trained beside its siblings by an earlier train stage (same fingerprint {key}); "
                  f"taken from {box.entry(name, key)}")
        else:
            train_along(backbone, head, prm, cfg, digest, (split, png, features), outs[0].parent, box,
                        how == "grid", repo)
        result = publish(box.entry(name, key), *outs)
        box.discard(name)
        return result
    from saxlevel import io
    from saxlevel.ingest import images
    from saxlevel.learning import trainer

    seed_everything(cfg.seed)
    trained = trainer.train(backbone, head, io.read_table(split), cfg, images.read_preprocessing(png),
                            None if features is None else str(features), progress=name)
    with tempfile.TemporaryDirectory(dir=outs[0].parent if outs[0].parent.exists() else None) as tmp:
        write_result(Path(tmp), trained)
        return publish(Path(tmp), *outs)


def train_along(backbone: str, head: str, prm: dict, cfg: TrainSettings, digest: str, paths: tuple[Path, ...],
                 models_dir: Path, box: HandOff, whole_grid: bool, repo: Path) -> None:
    """Train ``backbone``-``head`` and the siblings that wait for it (its backbone's other heads; with
    ``whole_grid``, every grid model whose backbone's feature cache is on disk for this split), side by side,
    and leave each in the hand-off under its fingerprint."""
    from saxlevel import io
    from saxlevel.ingest import images
    from saxlevel.learning import trainer
    from saxlevel.stageutil import seed_everything

    split, png, features = paths
    data = io.read_table(split)
    heads, row_ids = list(prm["grid"]["heads"]), data.row.tolist()
    plan = {backbone: (cfg, digest, [head] + siblings_to_train(box, digest, backbone, heads, cfg, models_dir,
                                                                       skip=(head,)))}
    for other in prm["grid"]["backbones"] if whole_grid else []:
        other_cfg = train_settings(prm, "train", other)
        if other in plan or not other_cfg.cached or not features_on_disk(features, other, row_ids):
            continue
        other_digest = inputs_digest(repo, split, png, features, other)
        todo = siblings_to_train(box, other_digest, other, heads, other_cfg, models_dir)
        if todo:
            plan[other] = (other_cfg, other_digest, todo)
    models = [(b, h) for b, (_, _, hs) in plan.items() for h in hs]
    names = {(b, h): stage_name(b, h) for b, h in models}
    if len(models) > 1:
        print(f"{names[models[0]]}: training {', '.join(f'{b}-{h}' for b, h in models[1:])} along "
              f"(their stages take them from {box.root})")

    def leave(model: tuple[str, str], trained) -> None:
        b, h = model
        trained.info["fingerprint"] = fingerprint(plan[b][1], b, h, plan[b][0])
        box.put(names[model], trained.info["fingerprint"], lambda folder: write_result(folder, trained))

    seed_everything(cfg.seed)
    trainer.train_cached(models, data, {b: c for b, (c, _, _) in plan.items()}, images.read_preprocessing(png),
                         features, progress=names, done=leave)
