"""The real-heart model: anatomical decoding of cavity presence into levels, its calibration, the held-out
scoring, the stage scripts on data the phantom writes, and the shipped model on the phantom's NIfTI and DICOM."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from saxlevel import CLASSES, predict
from saxlevel import params as P
from saxlevel.ingest import seglevels
from saxlevel.phantom import generate, plan
from saxlevel.realheart import modelcard, realdata, realtrain, runs

from conftest import REPO


def test_most_likely_run_gives_monotone_thirds_and_calibrated_ends() -> None:
    pos = np.arange(10) * 10.0
    q = np.array([0.05, 0.9, 0.95, 0.99, 0.2, 0.99, 0.99, 0.97, 0.6, 0.02])  # one doubtful slice mid-stack
    levels, probs = runs.stack_levels(q, pos)
    # the LV is one run: slice 4's low presence cannot split it; its ends lie where presence falls away
    want = seglevels.levels_from_cavity(pos, [False] + [True] * 8 + [False])
    assert levels == want
    assert [CLASSES.index(lv) for lv in levels] == sorted(CLASSES.index(lv) for lv in levels)
    assert np.allclose(probs.sum(axis=1), 1.0) and probs.shape == (10, 5)
    assert probs[0, 0] > 0.9 and probs[-1, -1] > 0.9  # end slices: confidently beyond the LV
    # a stack whose ends both hold cavity: no end covered, with the probability saying so
    levels, probs = runs.stack_levels(np.full(6, 0.99), pos[:6])
    assert runs.end_verdicts(levels) == (False, False) and probs[0, 0] < 0.05
    # brute force: the run likelihood matrix matches a direct product
    ll = runs.run_log_likelihood(q)
    a, b = 2, 6
    direct = sum(np.log(q[a:b + 1])) + sum(np.log(1 - np.r_[q[:a], q[b + 1:]]))
    assert ll[a, b] == pytest.approx(direct) and np.isneginf(ll[3, 1])


def test_presence_features_and_calibration() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.7
    area = np.where(truth, rng.uniform(200, 2000, 200), rng.uniform(0, 60, 200))
    feats = np.c_[np.log1p(area), np.where(truth, 0.95, 0.3), area / 2000, np.zeros(200)]
    cal = runs.fit_presence(feats, truth, runs.LEGACY_FEATURES)
    p = runs.presence(feats, cal)
    assert ((p > 0.5) == truth).mean() > 0.95
    assert runs.feature_names(cal) == list(runs.LEGACY_FEATURES)
    assert runs.feature_names({"coef": [0.0] * 4, "intercept": 0.0}) == list(runs.LEGACY_FEATURES)  # older models
    # three slices: none, a cavity on the axis, an equal one 25 mm off it (e.g. the outflow tract above the base)
    maps = np.zeros((4, realdata.SIZE, realdata.SIZE), np.float32)
    maps[1, 60:70, 60:70] = 0.9
    maps[2, 60:70, 60:70] = 0.9
    maps[3, 60:70, 70:80] = 0.9
    f = runs.presence_features(maps)
    assert f[0, 0] == 0 and f[1, 0] == pytest.approx(np.log1p(100 * realdata.PIXEL_MM ** 2)) and f[1, 1] == pytest.approx(0.9)
    assert f[1, 2] == 1.0 and f[1, 3] == 0.0 and f[3, 3] == pytest.approx(np.log1p(10 * realdata.PIXEL_MM))
    # shape: a sure round cavity against an unsure two-part one (the outflow tract beside the atrium)
    maps[2] = 0.0
    yy, xx = np.mgrid[:realdata.SIZE, :realdata.SIZE]
    maps[1] = np.where(np.hypot(yy - 64, xx - 64) < 8, 0.95, 0.0)
    maps[2, 50:53, 38:56] = 0.6
    maps[2, 70:74, 70:74] = 0.6
    g = runs.presence_features(maps)
    named = dict(zip(runs.FEATURES, g.T))
    assert g.shape == (4, len(runs.FEATURES)) and (g[0] == 0).all()
    assert named["mean_probability"][1] == pytest.approx(0.95) and named["mean_probability"][2] == pytest.approx(0.6)
    assert named["largest_part"][1] == 1.0 and named["largest_part"][2] == pytest.approx(54 / 70)
    assert named["roundness"][1] > 0.8 > 0.5 > named["roundness"][2]
    assert np.allclose(runs.presence_features(maps, ["peak", "log_area"]), g[:, [1, 0]])
    with pytest.raises(ValueError, match="unknown presence feature"):
        runs.presence_features(maps, ["size"])
    with pytest.raises(ValueError, match="myocardium channel"):
        runs.presence_features(maps, [runs.RING])
    # the ring: a cavity ringed by myocardium, one bordered on one side only (the septum beside the outflow tract)
    r = np.hypot(yy - 64, xx - 64)
    cavity = np.stack([np.where(r < 8, 0.9, 0.0)] * 3)
    myo = np.stack([(r >= 8) & (r < 12), (r >= 8) & (r < 12) & (xx < 64), np.zeros_like(r, dtype=bool)])
    ring = runs.presence_features(np.stack([cavity, myo.astype(np.float32)], axis=-1), [runs.RING])[:, 0]
    assert ring[0] == 1.0 and 0.4 <= ring[1] <= 0.6 and ring[2] == 0.0


def test_cut_rows_and_scores_judge_both_ends() -> None:
    cav = np.array([False, True, True, True, True, True, True, False])
    assert realtrain.cut_rows(cav, "apex").tolist() == [False, False] + [True] * 6
    assert realtrain.cut_rows(cav, "base").tolist() == [True] * 6 + [False, False]
    assert realtrain.cut_rows(cav[:5], "apex") is None  # fewer than four left
    # a table of three subjects' stacks and cavity maps that match the truth: every level and end right
    rows = []
    for stack, subject in enumerate(["a", "b", "c"]):  # c: development (position-only fitted on it)
        for k, c in enumerate(cav):
            rows.append({"stack": stack, "source": "s", "subject": subject, "phase": "ED", "order": k,
                         "position_mm": 10.0 * k, "has_cavity": bool(c), "group": ""})
    table = pd.DataFrame(rows)
    table["level"] = realdata.levels_of(table.position_mm[:8].to_numpy(), cav) * 3
    maps = np.zeros((len(table), realdata.SIZE, realdata.SIZE), np.float32)
    maps[table.has_cavity.to_numpy(), 60:70, 60:70] = 0.9
    features = {(sid, cut): runs.presence_features(maps[idx]) for sid, cut, idx in realtrain.variants(table)}
    scored, summary, cal = realtrain.validate(table, features, {"a", "b"})
    assert set(scored.cut) == {"", "apex", "base"} and scored["stack"].nunique() == 6
    assert summary["all"]["levels"]["accuracy"] == 1.0 and summary["all"]["ends"]["right"] == 1.0
    assert summary["all"]["position_only"]["accuracy"] <= 1.0 and summary["all"]["ends"]["ends"] == 12
    cut = scored[scored.cut == "apex"].drop_duplicates("stack")
    assert not cut.true_apex_covered.any() and not cut.apex_covered.any()  # a cut end is reported missing
    x = np.arange(4 * 2 * 2 * 3, dtype=np.float32).reshape(4, 2, 2, 3)
    v = realtrain.variant_input(x)
    assert (v[0, ..., 0] == x[0, ..., 1]).all() and (v[-1, ..., 2] == x[-1, ..., 1]).all() and (v[1:3] == x[1:3]).all()
    assert "coef" in cal
    text = "\n".join(modelcard.results_table(summary))
    assert "| all | 2 | 16 | 1.000 (1.000-1.000) |" in text


def _nifti_phantom(root: Path, fmt: str, subjects: int) -> dict:
    prm = plan.PhantomParams.from_params(
        P.load(REPO / "params.yaml"), subjects=subjects, frames=6, jobs=1, format=fmt,
        defect_rates={"duplicate": 0.0, "inconsistent": 0.0, "noncontiguous": 0.0, "black": 0.0},
        truncated={"apex": 0.0, "base": 0.0})
    return generate.make_phantom(root, prm, progress=False)


def test_training_shows_stack_ends_and_repeats_slices_beyond_the_lv() -> None:
    """as_stack_end repeats the slice in the neighbour channel asked for (how realdata.with_neighbours shows a
    stack's end); training_rows repeats the slices without LV cavity (cavity bit 1 nowhere) and a source's slices
    as asked; a bad option is a ParamError naming it."""
    from saxlevel.realheart import cavitynet

    x = np.stack([np.full((4, 4), v, np.float32) for v in (1.0, 2.0, 3.0)], axis=-1)
    assert np.asarray(cavitynet.as_stack_end(x, True, False))[0, 0].tolist() == [2.0, 2.0, 3.0]
    assert np.asarray(cavitynet.as_stack_end(x, False, True))[0, 0].tolist() == [1.0, 2.0, 2.0]
    assert np.asarray(cavitynet.as_stack_end(x, False, False))[0, 0].tolist() == [1.0, 2.0, 3.0]
    y = np.zeros((4, 4, 4), np.uint8)
    y[[0, 3], 1, 1] = 1  # cavity
    y[1, 1, 1] = 6  # myocardium known and present, no cavity: beyond the LV's cavity
    table = pd.DataFrame({"source": ["acdc", "acdc", "acdc", "mnms"]})
    net = cavitynet.NetSettings(beyond_repeat=3, repeat_sources={"mnms": 2, "acdc": 1})
    assert realtrain.training_rows(table, y, net).tolist() == [0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert realtrain.training_rows(table, y, cavitynet.NetSettings()).tolist() == [0, 1, 2, 3]
    prm = yaml.safe_load((REPO / "realheart/params.yaml").read_text())
    for key, bad in (("end_dropout", 1.5), ("beyond_repeat", 0), ("repeat_sources", {"mnms": "x"}),
                     ("repeat_sources", {"mmns": 3})):
        with pytest.raises(P.ParamError, match=f"net.{key}"):
            realtrain.settings({**prm, "net": {**prm["net"], key: bad}})


@pytest.mark.e2e
def test_stages_train_validate_and_ship_on_phantom_data(tmp_path: Path) -> None:
    """prepare -> validate -> final on two phantom sources (ACDC's layout as the 'seen' source, M&Ms-2's as the
    other scanner), a tiny network: every output written, the card's numbers those of the metrics file, and the
    written model predicts through saxlevel predict."""
    _nifti_phantom(tmp_path / "acdc", "nifti", 10)
    _nifti_phantom(tmp_path / "mnms2", "mnms2", 3)
    prm = yaml.safe_load((REPO / "realheart/params.yaml").read_text())
    prm["sources"] = {"acdc": str(tmp_path / "acdc"), "mnms2": str(tmp_path / "mnms2")}
    prm["contours"] = {}
    prm["net"].update(base_filters=4, depth=2, epochs=1, batch_size=8, myocardium=True, flips=True, slice_loss=1.0,
                      end_dropout=0.3, beyond_repeat=2, repeat_sources={"mnms2": 2})
    prm["presence"] = {"features": [*runs.FEATURES, runs.RING]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(prm))

    def stage(script: str, *args: str) -> str:
        r = subprocess.run([sys.executable, str(REPO / "stages" / script), "--params", str(tmp_path / "params.yaml"),
                            *args], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        return r.stdout

    out = stage("realheart_prepare.py", "--out", "slices")
    assert "realheart prepare: 26 stacks" in out
    stage("realheart_train.py", "--slices", "slices", "--mode", "validate", "--out", "val", "--maps", "maps.npz")
    stage("realheart_train.py", "--slices", "slices", "--mode", "calibrate", "--maps", "maps.npz", "--out", "val",
          "--metrics", "val.json", "--scores", "scores.csv")
    metrics = json.loads((tmp_path / "val.json").read_text())
    assert metrics["presence_features"] == [*runs.FEATURES, runs.RING]  # the myocardium's ring, as params.yaml asks
    assert json.loads((tmp_path / "val/calibration.json").read_text())["features"] == metrics["presence_features"]
    # calibrating again on the same maps with other features: no network retrained, the features as asked
    prm["presence"]["features"] = ["log_area", "peak"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(prm))
    stage("realheart_train.py", "--slices", "slices", "--mode", "calibrate", "--maps", "maps.npz", "--out", "val2",
          "--metrics", "val2.json", "--scores", "scores2.csv")
    assert json.loads((tmp_path / "val2.json").read_text())["presence_features"] == ["log_area", "peak"]
    prm["presence"]["features"] = ["ring"]
    prm["net"]["myocardium"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(prm))
    r = subprocess.run([sys.executable, str(REPO / "stages/realheart_train.py"), "--params", "params.yaml", "--slices",
                        "slices", "--mode", "calibrate", "--maps", "maps.npz", "--out", "v", "--metrics", "v.json",
                        "--scores", "v.csv"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "'ring' needs net.myocardium: true" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, str(REPO / "stages/realheart_train.py"), "--params", "params.yaml", "--slices",
                        "slices", "--mode", "final", "--calibration", "val/calibration.json", "--validation",
                        "val.json", "--out", "m.keras", "--card", "C.md"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "net.myocardium" in r.stderr and not (tmp_path / "m.keras").exists()
    prm["net"]["myocardium"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(prm))
    assert metrics["held_out"]["mnms2"] == ["mnms2/patient0001", "mnms2/patient0002", "mnms2/patient0003"]
    assert len(metrics["held_out"]["acdc"]) == 2 and set(metrics["summary"]) == {"acdc", "mnms2", "all"}
    stage("realheart_train.py", "--slices", "slices", "--mode", "final", "--calibration", "val/calibration.json",
          "--validation", "val.json", "--out", "model.keras", "--card", "CARD.md")
    card = (tmp_path / "CARD.md").read_text()
    assert "Not for clinical use" in card and "consensus-thirds" in card
    assert "\n".join(modelcard.results_table(metrics["summary"])) in card
    info = predict.model_info(tmp_path / "model.keras")
    assert info["kind"] == "cavity" and info["level_definition"] == "consensus-thirds"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        levels, cover, _ = predict.run(tmp_path / "acdc/training/patient0001", tmp_path / "model.keras", tmp_path / "p")
    assert len(cover) == 2 and set(levels.level) <= set(CLASSES)


def _monotone(levels: pd.Series) -> bool:
    idx = [CLASSES.index(lv) for lv in levels]
    return idx == sorted(idx)


@pytest.mark.skipif(not predict.SHIPPED_MODEL.is_file(), reason="no shipped model in this checkout")
def test_shipped_model_predicts_the_phantom_nifti_and_dicom(tmp_path: Path) -> None:
    """The shipped model, found with nothing but the package: monotone levels on the phantom's NIfTI and DICOM."""
    info = predict.model_info(predict.default_model())
    assert info["kind"] == "cavity" and predict.default_decoding(info) == "anatomical"
    assert predict.SHIPPED_MODEL.stat().st_size < 20e6
    _nifti_phantom(tmp_path / "nifti", "nifti", 3)
    prm = plan.PhantomParams.from_params(
        P.load(REPO / "params.yaml"), subjects=3, frames=8, jobs=1, format="classic",
        defect_rates={"duplicate": 0.0, "inconsistent": 0.0, "noncontiguous": 0.0, "black": 0.0},
        truncated={"apex": 0.0, "base": 0.0})
    generate.make_phantom(tmp_path / "dicom", prm, progress=False)
    for study in (tmp_path / "nifti/training/patient0001", next((tmp_path / "dicom").glob("*/*/1"))):
        r = subprocess.run([sys.executable, "-m", "saxlevel.cli", "predict", str(study), "--out",
                            str(tmp_path / "out" / study.name)], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "level definition: consensus-thirds; decoding: anatomical" in r.stdout
        levels = pd.read_csv(tmp_path / "out" / study.name / "levels.csv")
        for _, stack in levels.groupby("phase"):
            assert _monotone(stack.sort_values("order").level)


@pytest.mark.skipif(not predict.SHIPPED_MODEL.is_file(), reason="no shipped model in this checkout")
def test_shipped_card_numbers_come_from_the_committed_metrics() -> None:
    """The card beside the shipped model carries the validation table of realheart/metrics/validation.json, and
    the model records the same validation."""
    metrics = json.loads((REPO / "realheart/metrics/validation.json").read_text())
    card = (predict.SHIPPED_MODEL.parent / "MODEL_CARD.md").read_text()
    assert "\n".join(modelcard.results_table(metrics["summary"])) in card
    assert "Not for clinical use" in card and "non-commercial research use only" in card
    info = predict.model_info(predict.SHIPPED_MODEL)
    assert info["validation"]["summary"] == metrics["summary"]
