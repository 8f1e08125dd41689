"""The evaluate stage's library (saxlevel.evaluation.report), to_png's metrics (saxlevel.ingest.pngs) and the typed params of
every stage, on small synthetic inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from saxlevel import CLASSES
from saxlevel import params as P
from saxlevel.evaluation import report
from saxlevel.evaluation.table5 import predictions_frame
from saxlevel.ingest import images, pngs

from conftest import REPO


def _split(png_dir: Path, subjects: int = 12, slices: int = 6) -> pd.DataFrame:
    """A split.csv: subjects with ED/ES stacks whose levels rise with the slice order, and tiny PNGs."""
    rows = []
    for sid in range(1, subjects + 1):
        split = "train" if sid <= 6 else "val" if sid <= 9 else "test"
        for phase in ("ED", "ES"):
            for order in range(slices):
                path = png_dir / f"{sid}_{phase}_{order}.png"
                images.save_png(path, np.full((8, 8), 20 * order, np.uint8))
                rows.append({"subject": sid, "split": split, "phase": phase, "order": order,
                             "series": f"sax_{order}", "frame": 1, "path": str(path),
                             "label": CLASSES[min(order * len(CLASSES) // slices, len(CLASSES) - 1)]})
    return pd.DataFrame(rows)


def _live(folder: Path, epochs: int = 3) -> None:
    for part in ("train", "eval"):
        for metric in ("loss", "accuracy"):
            f = folder / "plots" / "metrics" / part / f"{metric}.tsv"
            f.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"step": range(epochs), metric: np.linspace(1, 0.5, epochs)}).to_csv(f, sep="\t", index=False)


def _params(**over: dict) -> dict:
    prm = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in over.items():
        prm[section] = {**prm[section], **values} if isinstance(prm.get(section), dict) else values
    return prm


def test_report_writes_table5_comparisons_and_plots(tmp_path: Path) -> None:
    data = _split(tmp_path / "png")
    prm = _params(grid={"backbones": ["mobilenet"], "heads": ["dense", "bigru"]},
                  finetune_grid={"backbones": ["mobilenet"], "heads": ["bigru"]},
                  evaluate={"bootstrap": 30, "figure3_subjects": 1})
    prm["backbone"], prm["head"] = "mobilenet", "bigru"
    cfg = P.evaluate_settings(prm)
    rows = data[data.split.isin(["val", "test"])]
    truth = np.eye(len(CLASSES))[[CLASSES.index(label) for label in rows.label]]
    rng = np.random.default_rng(0)
    quality = {"mobilenet-dense": 0.3, "mobilenet-bigru": 0.9, "finetuned/mobilenet-bigru": 0.95}
    for name, q in quality.items():
        probs = q * truth + (1 - q) * rng.dirichlet(np.ones(len(CLASSES)), len(rows))
        path = tmp_path / "pred" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        predictions_frame(rows, probs).to_csv(path, index=False)
        _live(tmp_path / "live" / name)
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "mobilenet.json").write_text(json.dumps(
        {"parameters": 3_228_864, "dims": 1024, "weights": "none", "images_per_second": 45.0}))

    entries = report.model_entries(cfg, tmp_path / "pred", tmp_path / "live")
    assert [e.name for e in entries] == ["mobilenet-dense", "mobilenet-bigru", "mobilenet-bigru-ft"]
    res = report.evaluate(entries, data, cfg)
    head = report.write(res, entries, data, cfg, tmp_path / "features", tmp_path / "metrics", tmp_path / "plots")

    table5 = json.loads((tmp_path / "metrics/table5.json").read_text())
    acc = table5["models"]["mobilenet-bigru"]["decode"]["argmax"]["test"]["accuracy"]
    pred = pd.read_csv(tmp_path / "pred/mobilenet-bigru.csv")
    test = pred[pred.split == "test"]
    assert acc == pytest.approx((test.true == test.pred).mean()) and head["accuracy"] == acc
    assert {"mobilenet-bigru vs mobilenet-dense", "mobilenet-bigru-ft vs mobilenet-bigru",
            "mobilenet-bigru-ft vs position-only"} <= set(table5["comparisons"])
    assert json.loads((tmp_path / "metrics/metrics.json").read_text())["model"] == "mobilenet-bigru"
    t4 = pd.read_csv(tmp_path / "plots/table4.csv")
    assert t4.batch_cnn.item() == 32 and t4.batch_cnn_rnn.item() == 2 and t4.imagenet_top1.item() == 0.706
    conf = pd.read_csv(tmp_path / "plots/confusion.csv")
    assert len(conf) == len(test) and set(conf.actual) <= {f"{i + 1}-{c}" for i, c in enumerate(CLASSES)}
    assert len(pd.read_csv(tmp_path / "plots/curves.csv")) == 3
    figs = {p.name for p in (tmp_path / "plots/figures").iterdir()}
    assert {"figure2_learning_curves.png", "figure4_confusion.png", "figure5_sotd.png"} <= figs
    assert sum(f.startswith("figure3_subject") for f in figs) == 1
    # Coverage detection for every model and the baseline; the 95 %-right model finds every missing end it is
    # shown, as its levels, taken straight from the predictions file, say.
    detect = pd.read_csv(tmp_path / "plots/coverage.csv").set_index(["model", "decode", "end"])
    assert set(detect.index.get_level_values("model")) == set(table5["models"]) | {"position-only"}
    ends = test.sort_values("order").groupby(["subject", "phase"])
    for end, col, beyond in (("apex", "true", "oap"), ("base", "true", "obs")):
        truth_missing = ends[col].agg(lambda s, b=beyond, e=end: (s.iloc[0] if e == "apex" else s.iloc[-1]) != b)
        pred_missing = ends["pred"].agg(lambda s, b=beyond, e=end: (s.iloc[0] if e == "apex" else s.iloc[-1]) != b)
        row = detect.loc[("mobilenet-bigru", "argmax", end)]
        assert row.missing == truth_missing.sum() and row.present == (~truth_missing).sum()
        if row.missing:
            assert row.sensitivity == pytest.approx((pred_missing & truth_missing).sum() / truth_missing.sum(), abs=1e-4)


def test_missing_predictions_name_the_stage(tmp_path: Path) -> None:
    cfg = P.evaluate_settings(_params(grid={"backbones": ["mobilenet"], "heads": ["dense"]},
                                      finetune_grid={"backbones": [], "heads": []}) | {"backbone": "mobilenet", "head": "dense"})
    entries = report.model_entries(cfg, tmp_path, tmp_path)
    with pytest.raises(FileNotFoundError, match="dvc repro train@mobilenet-dense"):
        report.evaluate(entries, _split(tmp_path / "png", subjects=9), cfg)


def test_frame_hit_rate_wraps_around_the_cycle(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"subjects": {"1": {"ed_frame": 1, "es_frame": 4}, "2": {"ed_frame": 2, "es_frame": 5}}}))
    index = pd.DataFrame({"subject": [1] * 10 + [2] * 10, "frame": list(range(1, 11)) * 2})
    chosen = {1: {"ed_frame": 10, "es_frame": 4}, 2: {"ed_frame": 5, "es_frame": 5}}  # 10 is next to 1
    assert pngs.frame_hit_rates(chosen, index, truth) == {"ed_frame_hit_rate_pm1": 0.5, "es_frame_hit_rate_pm1": 1.0}


@pytest.mark.parametrize("loader,section,key,bad", [
    (P.filter_settings, "filter", "jobs", "two"),
    (P.filter_settings, "filter", "policy", "lenient"),
    (P.png_settings, "to_png", "window", "2-98"),
    (P.png_settings, "to_png", "ed_frame", "first"),
    (P.split_settings, "split", "ratios", [1, 2]),
    (P.feature_settings, "features", "image_size", "big"),
    (P.evaluate_settings, "evaluate", "decode", "viterbi"),
    (P.evaluate_settings, "evaluate", "bootstrap", -1),
])
def test_typed_params_name_the_bad_key(loader, section: str, key: str, bad) -> None:
    prm = _params()
    loader(prm)  # params.yaml itself is valid
    prm[section] = {**prm[section], key: bad}
    with pytest.raises(P.ParamError, match=f"{section}.{key}"):
        loader(prm)
    del prm[section][key]
    with pytest.raises(P.ParamError, match=f"missing key '{section}.{key}'"):
        loader(prm)


def test_phantom_defaults_come_from_params_yaml() -> None:
    from saxlevel.phantom import PhantomParams

    prm = _params()
    got = PhantomParams.from_params(prm)
    assert (got.subjects, got.frames, got.format) == (prm["phantom"]["subjects"], prm["phantom"]["frames"], "classic")
    assert PhantomParams.from_params(prm, subjects=5, defect_rates={"black": 0.5}).defect_rates["black"] == 0.5
    del prm["phantom"]["frames"]
    with pytest.raises(P.ParamError, match="phantom.frames"):
        PhantomParams.from_params(prm)
