"""The hand-off of sibling models trained in one train stage to their own train@BACKBONE-HEAD stages."""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from saxlevel import params as P
from saxlevel.learning import handoff

from conftest import REPO


@pytest.fixture()
def cfg() -> P.TrainSettings:
    return P.train_settings(P.load(REPO / "params.yaml"), "train", "mobilenet")


def _inputs(tmp: Path) -> tuple[Path, Path, Path]:
    split, png, feats = tmp / "split.csv", tmp / "png", tmp / "features"
    png.mkdir(parents=True)
    feats.mkdir()
    split.write_text("row,split\n0,train\n")
    (png / "preprocessing.json").write_text("{}")
    np.save(feats / "mobilenet.npy", np.zeros((1, 4), np.float32))
    (feats / "mobilenet.json").write_text("{}")
    return split, png, feats


def test_the_fingerprint_follows_every_input(tmp_path: Path, cfg: P.TrainSettings) -> None:
    split, png, feats = _inputs(tmp_path)
    digest = handoff.inputs_digest(REPO, split, png, feats, "mobilenet")
    key = handoff.fingerprint(digest, "mobilenet", "bigru", cfg)
    assert key == handoff.fingerprint(handoff.inputs_digest(REPO, split, png, feats, "mobilenet"), "mobilenet",
                                      "bigru", cfg)
    assert key != handoff.fingerprint(digest, "mobilenet", "gru2", cfg)
    assert key != handoff.fingerprint(digest, "mobilenet", "bigru", dataclasses.replace(cfg, lr=cfg.lr / 2))
    np.save(feats / "mobilenet.npy", np.ones((1, 4), np.float32))  # new features: nothing old can be taken
    assert handoff.inputs_digest(REPO, split, png, feats, "mobilenet") != digest
    # the code that counts is the train stage's code deps in dvc.yaml
    code = {p.relative_to(REPO).as_posix() for p in handoff.code_files(REPO)}
    assert {"stages/train.py", "src/saxlevel/learning/training.py", "src/saxlevel/learning/handoff.py"} <= code
    assert "src/saxlevel/evaluation/report.py" not in code


def _result(folder: Path, epochs: int = 3, marker: str = "m") -> None:
    (folder / "model.keras").write_text(marker)
    (folder / "predictions.csv").write_text("split,true,pred\ntest,mid,mid\n")
    hist = {"loss": [1.0 - e / 10 for e in range(epochs)], "accuracy": [0.5] * epochs,
            "val_loss": [1.2 - e / 20 for e in range(epochs)], "val_accuracy": [0.4] * epochs}
    (folder / "result.json").write_text(json.dumps({"best_epoch": epochs, "best_val_loss": hist["val_loss"][-1],
                                                    "epochs_run": epochs, "accuracy": {"val": 0.4, "test": 1.0}}))
    handoff.write_curves(folder / "live", hist, epochs, hist["val_loss"][-1])


def test_put_replaces_older_results_and_discard_cleans_up(tmp_path: Path) -> None:
    box = handoff.HandOff(tmp_path / ".saxlevel" / "handoff")
    box.put("train@mobilenet-gru2", "old", _result)
    box.put("train@mobilenet-gru2", "new", lambda f: _result(f, marker="new"))
    assert box.has("train@mobilenet-gru2", "new") and not box.has("train@mobilenet-gru2", "old")
    assert (box.entry("train@mobilenet-gru2", "new") / "model.keras").read_text() == "new"
    with pytest.raises(RuntimeError, match="lacks"):  # an incomplete result is never left to be taken
        box.put("train@mobilenet-bigru", "k", lambda f: (f / "model.keras").write_text("x"))
    with pytest.raises(RuntimeError, match="live"):
        box.put("train@mobilenet-bigru", "k", lambda f: [_result(f), shutil.rmtree(f / "live")])
    assert not box.has("train@mobilenet-bigru", "k") and not list((box.root / "train@mobilenet-bigru").iterdir())
    box.discard("train@mobilenet-bigru")
    box.discard("train@mobilenet-gru2")
    assert not (tmp_path / ".saxlevel").exists()


def test_siblings_to_train_skip_what_is_waiting_or_already_trained(tmp_path: Path, cfg: P.TrainSettings) -> None:
    box = handoff.HandOff(tmp_path / "handoff")
    heads = ["dense", "lstm2", "bilstm", "gru2", "bigru"]
    models = tmp_path / "models"
    models.mkdir()
    key = {h: handoff.fingerprint("d", "mobilenet", h, cfg) for h in heads}
    box.put("train@mobilenet-lstm2", key["lstm2"], _result)
    for h, fp in (("bilstm", key["bilstm"]), ("gru2", "stale")):  # in the workspace: current and out of date
        with zipfile.ZipFile(models / f"mobilenet-{h}.keras", "w") as z:
            z.writestr("saxlevel.json", json.dumps({"fingerprint": fp}))
    (models / "mobilenet-bigru.keras").write_text("not a model")
    got = handoff.siblings_to_train(box, "d", "mobilenet", heads, cfg, models, skip=("dense",))
    assert got == ["gru2", "bigru"]
    assert handoff.siblings_to_train(box, "d", "mobilenet", heads, cfg, models) == ["dense", "gru2", "bigru"]


def test_a_feature_cache_is_trained_along_only_when_it_is_of_this_split(tmp_path: Path) -> None:
    np.save(tmp_path / "mobilenet.npy", np.zeros((2, 4), np.float32))
    assert not handoff.features_on_disk(tmp_path, "mobilenet", [0, 1])  # no record
    (tmp_path / "mobilenet.json").write_text(json.dumps({"row_ids": [0, 1]}))
    assert handoff.features_on_disk(tmp_path, "mobilenet", [0, 1])
    assert not handoff.features_on_disk(tmp_path, "mobilenet", [0, 2])  # extracted for another split.csv
    (tmp_path / "mobilenet.npy").unlink()
    assert not handoff.features_on_disk(tmp_path, "mobilenet", [0, 1])


def test_the_scope_of_the_hand_off_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAXLEVEL_HANDOFF", raising=False)
    assert handoff.scope() == "grid"
    for value, want in (("backbone", "backbone"), ("0", "off"), ("off", "off"), ("1", "grid"), ("Grid", "grid")):
        monkeypatch.setenv("SAXLEVEL_HANDOFF", value)
        assert handoff.scope() == want
    monkeypatch.setenv("SAXLEVEL_HANDOFF", "everything")
    with pytest.raises(ValueError, match="SAXLEVEL_HANDOFF"):
        handoff.scope()


def test_publish_writes_outputs_and_dvclive_curves(tmp_path: Path) -> None:
    folder = tmp_path / "entry"
    folder.mkdir()
    _result(folder, epochs=4)
    out = tmp_path / "out"
    (out / "live" / "plots" / "metrics" / "old").mkdir(parents=True)  # an earlier run's curves are replaced
    result = handoff.publish(folder, out / "m.keras", out / "p.csv", out / "live")
    assert not (out / "live" / "plots" / "metrics" / "old").exists()
    assert result["epochs_run"] == 4
    assert (out / "m.keras").read_text() == "m" and (out / "p.csv").read_text().startswith("split,")
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert summary["best_epoch"] == 4 and summary["best_val_loss"] == pytest.approx(1.05)
    curves = out / "live" / "plots" / "metrics"
    # the names dvclive's keras callback gives: train/loss, eval/loss, ...
    val = (curves / "eval" / "loss.tsv").read_text().split("\n")
    assert val[0] == "step\tloss" and len([r for r in val[1:] if r]) == 4
    assert (curves / "train" / "accuracy.tsv").exists()
