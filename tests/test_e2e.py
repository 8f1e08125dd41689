"""One tiny end-to-end `dvc repro` in a temporary copy of the repo, then `dvc exp run -S head=...`, a DVC remote
round trip and an experiment queue on that run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from saxlevel.evaluation import coverage
from saxlevel.phantom import dicomio, generate, plan

from conftest import REPO

TINY = {
    "phantom": {"subjects": 10, "frames": 6, "defect_rates": {"duplicate": 0.1}, "truncated": {"apex": 0.1, "base": 0.1}},
    "to_png": {"window": [5, 95]},  # not the default: predict must follow the model's record, not (2, 98)
    "features": {"image_size": 32, "bn_images": 8},
    # EfficientNet-Lite0 with its installable ImageNet weights (features.backbone_weights) beside random MobileNet
    "grid": {"backbones": ["mobilenet", "efficientnetlite0"], "heads": ["dense", "bigru"]},
    "finetune_grid": {"backbones": ["mobilenet"], "heads": ["dense", "bigru"], "image_size": 32, "epochs": 2},
    "backbone": "mobilenet",
    "head": "bigru",
    "train": {"epochs": 2},
    "evaluate": {"bootstrap": 20, "figure3_subjects": 1},
}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(dict(base.get(k, {})), v) if isinstance(v, dict) and k != "defect_rates" else v
    return base


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


DVC = [sys.executable, "-m", "dvc"]


def _commit(repo: Path, env: dict, message: str) -> None:
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-q", "--allow-empty", "-m", message], repo, env)


def _matches_pipeline(pred_dir: Path, predictions_csv: Path, sid: int, atol: float) -> bool:
    """saxlevel predict's levels.csv gives every slice of subject ``sid`` the pipeline's p_mid (within atol)."""
    levels = pd.read_csv(pred_dir / "levels.csv")
    want = pd.read_csv(predictions_csv)
    want = want[want.subject == sid][["phase", "series", "p_mid"]]
    got = levels.merge(want, on=["phase", "series"], how="inner", suffixes=("", "_pipeline"))
    return len(got) == len(want) and bool(np.allclose(got.p_mid, got.p_mid_pipeline, atol=atol))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A temporary copy of the repository with tiny params, after one `dvc repro`: (repo, environment)."""
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("metrics/", "plots/")) and rel != "dvc.lock":
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    params = _merge(yaml.safe_load((repo / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO / "src"),
               KERAS_HOME=str(repo.parent / "keras"))  # the converted Lite0 weights are cached there
    _run(["git", "init", "-q"], repo, env)
    _commit(repo, env, "tiny")
    (repo.parent / "repro.out").write_text(_run(DVC + ["repro"], repo, env).stdout)
    return repo, env


@pytest.mark.e2e
def test_dvc_repro_tiny(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    repo, env = tiny
    table5 = json.loads((repo / "metrics/table5.json").read_text())
    assert set(table5["models"]) == {"mobilenet-dense", "mobilenet-bigru", "mobilenet-dense-ft", "mobilenet-bigru-ft",
                                     "efficientnetlite0-dense", "efficientnetlite0-bigru"}
    for name, m in table5["models"].items():
        assert (m["finetune"], m["augment"]) == (("all", True) if name.endswith("-ft") else ("none", False))
        assert m["weights"] == ("imagenet" if m["backbone"] == "efficientnetlite0" else "none")
    assert {"mobilenet-bigru vs mobilenet-dense", "mobilenet-dense-ft vs mobilenet-dense",
            "mobilenet-bigru-ft vs position-only", "mobilenet-bigru-ft vs mobilenet-dense-ft"} <= set(table5["comparisons"])
    claims = pd.read_csv(repo / "plots/claims.csv")
    assert {"model_a", "model_b", "accuracy_diff", "diff_ci95", "p_value"} <= set(claims.columns)
    t = table5["models"]["mobilenet-bigru"]["decode"]["argmax"]["test"]
    assert 0 <= t["accuracy"] <= 1 and len(t["confusion"]) == 5 and "ci95" in t
    assert "ordered" in table5["models"]["mobilenet-bigru"]["decode"]
    head = json.loads((repo / "metrics/metrics.json").read_text())
    assert head["model"] == "mobilenet-bigru" and {"accuracy", "sotd", "f1_oap", "f1_obs"} <= set(head)
    assert {"apex_missing_sensitivity", "apex_missing_specificity", "base_missing_sensitivity"} <= set(head)
    detect = pd.read_csv(repo / "plots/coverage.csv")
    assert set(detect.model) == set(table5["models"]) | {"position-only"} and set(detect.end) == {"apex", "base"}
    cut = {s for s, t in json.loads((repo / "data/phantom/truth.json").read_text())["subjects"].items()
           if t.get("truncated")}
    assert len(cut) == 2  # TINY's phantom cuts short 2 of its 10 stacks
    filt = json.loads((repo / "metrics/filter.json").read_text())
    assert filt["excluded_by_rule"]["duplicate"] == 1 and filt["subjects_kept"] == 9
    data = json.loads((repo / "metrics/data.json").read_text())
    assert data["table1_subjects"]["total"]["count"] == 9
    table = pd.read_csv(repo / "plots/table5.csv")
    assert len(table) == 12 and set(table.decode) == {"argmax", "ordered"} and {"finetune", "augment"} <= set(table)
    assert set(table[table.backbone == "efficientnetlite0"].weights) == {"imagenet"}
    table4 = pd.read_csv(repo / "plots/table4.csv").set_index("backbone")
    assert table4.loc["efficientnetlite0", "weights"] == "imagenet" and table4.loc["mobilenet", "weights"] == "none"
    conf = pd.read_csv(repo / "plots/confusion.csv")
    assert set(conf.actual) <= {"1-oap", "2-ap", "3-mid", "4-bs", "5-obs"}
    figs = {p.name for p in (repo / "plots/figures").iterdir()}
    assert {"figure2_learning_curves.png", "figure4_confusion.png", "figure5_sotd.png"} <= figs
    assert any(f.startswith("figure3_subject") for f in figs)
    assert (repo / "models/mobilenet-bigru.keras").exists()
    # The first train stage trained the grid's three other models too, which their own stages took over; nothing
    # is left.
    repro_out = (repo.parent / "repro.out").read_text()
    assert repro_out.count("trained beside its siblings") == 3, repro_out[-3000:]
    assert not (repo / ".saxlevel").exists()
    # ... and a model trained alone (hand-off off) is the same model: the same predictions, to the last digit.
    alone = tmp_path / "alone"
    _run([sys.executable, "stages/train.py", "--backbone", "mobilenet", "--head", "bigru", "--split", "data/split.csv",
          "--png", "data/png", "--features", "data/features", "--model-out", str(alone / "m.keras"),
          "--predictions", str(alone / "p.csv"), "--live", str(alone / "live")], repo,
         dict(env, SAXLEVEL_HANDOFF="0"))
    assert (alone / "p.csv").read_text() == (repo / "data/predictions/mobilenet-bigru.csv").read_text()
    assert (alone / "live" / "plots/metrics/eval/loss.tsv").read_text() == \
        (repo / "dvclive/mobilenet-bigru/plots/metrics/eval/loss.tsv").read_text()
    assert (repo / "dvclive/mobilenet-bigru/plots/metrics/eval/loss.tsv").exists()
    # saxlevel predict on a test subject's raw study reproduces the pipeline's predictions.
    pred = pd.read_csv(repo / "data/predictions/mobilenet-bigru.csv")
    sid = int(pred[pred.split == "test"].subject.iloc[0])
    study = next((repo / "data/phantom").glob(f"*/*/{sid}"))
    cli = [sys.executable, "-m", "saxlevel.cli", "predict", str(study), "--model", "models/mobilenet-bigru.keras",
           "--out", str(tmp_path / "pred")]
    printed = _run(cli, repo, env).stdout
    assert "s (model loading excluded)" in printed
    levels = pd.read_csv(tmp_path / "pred" / "levels.csv")
    original_levels = levels
    want = pred[pred.subject == sid][["phase", "series", "pred"]]
    got = levels.merge(want, on=["phase", "series"], how="inner")
    assert len(got) == len(want) and (got.level == got.pred).all()
    assert (tmp_path / "pred" / "levels_ED.png").exists()
    # ... with its LV coverage per phase (read from the end slices' levels) and the AHA region of every slice.
    cover = pd.read_csv(tmp_path / "pred" / "coverage.csv")
    assert {"phase", "apex_covered", "base_covered", "n_slices", "first_level", "last_level", "confidence"} <= set(cover)
    assert cover.phase.tolist() == ["ED", "ES"] and cover.confidence.between(0, 1).all()
    for r in cover.itertuples():
        stack = levels[levels.phase == r.phase].sort_values("order")
        assert (r.first_level, r.last_level, r.n_slices) == (stack.level.iloc[0], stack.level.iloc[-1], len(stack))
        assert (r.apex_covered, r.base_covered) == (r.first_level == "oap", r.last_level == "obs")
    assert "coverage: complete" in printed or "coverage: incomplete: " in printed
    aha = pd.read_csv(tmp_path / "pred" / "aha.csv", keep_default_na=False)
    assert len(aha) == len(levels) and (aha.level.map(lambda x: coverage.AHA[x][0]) == aha.aha_region).all()
    # A NIfTI subject folder (ACDC layout) and one of its volumes: levels for both phases, or for the one volume.
    params = plan.PhantomParams.from_params(yaml.safe_load((repo / "params.yaml").read_text()))
    made = generate.make_subject_nifti(sid, "train", [], params, tmp_path / "nifti")
    folder = tmp_path / "nifti" / "training" / made["subject"]
    _run([*cli[:4], str(folder), *cli[5:-1], str(tmp_path / "pred_nifti")], repo, env)
    nifti_levels = pd.read_csv(tmp_path / "pred_nifti" / "levels.csv")
    assert set(nifti_levels.phase) == {"ED", "ES"} and len(nifti_levels) == 2 * len(made["truth"]["apex_to_base"])
    assert nifti_levels[nifti_levels.phase == "ED"].sort_values("order").series.tolist() == made["truth"]["apex_to_base"]
    volume = folder / f"{made['subject']}_frame{made['truth']['es_frame']:02d}.nii.gz"
    printed = _run([*cli[:4], str(volume), *cli[5:-1], str(tmp_path / "pred_volume")], repo, env).stdout
    assert "x 1 frame(s)" in printed
    one = pd.read_csv(tmp_path / "pred_volume" / "levels.csv")
    assert set(one.phase) == {"ES"} and len(one) == len(made["truth"]["apex_to_base"])
    # ... and so does the EfficientNet-Lite0 model, whose extractor carries the converted ImageNet weights.
    lite = [*cli[:6], "models/efficientnetlite0-bigru.keras", "--out", str(tmp_path / "pred_lite")]
    _run(lite, repo, env)
    assert _matches_pipeline(tmp_path / "pred_lite", repo / "data/predictions/efficientnetlite0-bigru.csv", sid, 1e-4)
    # A fine-tuned model is one self-contained file and predicts exactly like in the pipeline.
    ft = repo / "models/finetuned/mobilenet-bigru.keras"
    assert "feature_extractor" not in json.loads(zipfile.ZipFile(ft).read("saxlevel.json"))
    cli_ft = [sys.executable, "-m", "saxlevel.cli", "predict", str(study), "--model", str(ft),
              "--out", str(tmp_path / "pred_ft")]
    _run(cli_ft, repo, env)
    assert _matches_pipeline(tmp_path / "pred_ft", repo / "data/predictions/finetuned/mobilenet-bigru.csv", sid, 1e-5)
    # The model records how its input was made (to_png's non-default window included) ...
    info = json.loads(zipfile.ZipFile(repo / "models/mobilenet-bigru.keras").read("saxlevel.json"))
    assert info["preprocessing"]["window_percentiles"] == [5, 95] and info["preprocessing"]["image_size"] == 32
    # ... and `saxlevel export` makes it one file: with data/features gone, predict still gives the pipeline's
    # levels and probabilities (the window and the ED/ES choice come from the file).
    single = tmp_path / "elsewhere" / "mobilenet-bigru.keras"
    _run([sys.executable, "-m", "saxlevel.cli", "export", "--model", "models/mobilenet-bigru.keras", "--out",
          str(single)], repo, env)
    assert "feature_extractor" not in json.loads(zipfile.ZipFile(single).read("saxlevel.json"))
    shutil.move(repo / "data/features", tmp_path / "features-moved")
    _run(cli[:6] + [str(single), "--out", str(tmp_path / "pred_single")], tmp_path / "elsewhere", env)
    shutil.move(tmp_path / "features-moved", repo / "data/features")
    single_levels = pd.read_csv(tmp_path / "pred_single" / "levels.csv")
    pd.testing.assert_frame_equal(single_levels.drop(columns=[f"p_{c}" for c in ("oap", "ap", "mid", "bs", "obs")]),
                                  original_levels.drop(columns=[f"p_{c}" for c in ("oap", "ap", "mid", "bs", "obs")]))
    assert np.allclose(single_levels.filter(like="p_"), original_levels.filter(like="p_"), atol=1e-4)
    # The same subject exported as JPEG Lossless, and as Enhanced MR multi-frame files: the same levels.
    original = pd.read_csv(tmp_path / "pred" / "levels.csv")
    for form, syntax in (("classic", "jpeg-lossless"), ("enhanced", "explicit")):
        copy = tmp_path / f"{form}-{syntax}" / str(sid)
        shutil.copytree(study, copy)
        dicomio.export_study(copy / "study", form, syntax)
        _run(cli[:4] + [str(copy)] + cli[5:-1] + [str(tmp_path / f"pred-{form}")], repo, env)
        levels = pd.read_csv(tmp_path / f"pred-{form}" / "levels.csv")
        pd.testing.assert_frame_equal(levels, original)

    # The plots page works offline: the Vega scripts are inlined from .dvc/plots_template.html, no CDN.
    _run(DVC + ["plots", "show", "--out", str(tmp_path / "plots_page")], repo, env)
    page = (tmp_path / "plots_page" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vega-lite@5.2.0" in page and page.count("vegaEmbed(") >= 3
    shown = json.loads(_run(DVC + ["plots", "show", "--json"], repo, env).stdout)
    assert not shown.get("errors"), shown.get("errors")
    rendered = set(shown["data"])
    assert {"plots/confusion.csv", "plots/sotd.csv", "plots/curves.csv",
            "plots/figures/figure4_confusion.png"} <= rendered, rendered

    # Switching the selected model re-runs evaluate only, and metrics diff shows the change.
    _commit(repo, env, "baseline")
    model_mtime = (repo / "models/mobilenet-bigru.keras").stat().st_mtime
    out = _run(DVC + ["exp", "run", "-S", "head=dense"], repo, env).stdout
    assert "Running stage 'train@" not in out and "Running stage 'evaluate'" in out
    assert (repo / "models/mobilenet-bigru.keras").stat().st_mtime == model_mtime
    assert json.loads((repo / "metrics/metrics.json").read_text())["model"] == "mobilenet-dense"
    diff = json.loads(_run(DVC + ["metrics", "diff", "--json"], repo, env).stdout)
    assert list(diff) == ["metrics/metrics.json"]  # the one declared metric: the selected model
    assert diff["metrics/metrics.json"]["model"]["new"] == "mobilenet-dense"


@pytest.mark.e2e
def test_remote_clone_pull_has_nothing_to_rerun(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    """A run pushed to a shared DVC remote: a colleague's clone pulls it and `dvc repro` reruns nothing;
    a clone that only runs `dvc repro --pull` fetches the results instead of recomputing them."""
    repo, env = tiny
    _commit(repo, env, "results")
    _run(DVC + ["remote", "add", "-d", "shared", str(tmp_path / "remote")], repo, env)
    _commit(repo, env, "shared remote")
    _run(DVC + ["push"], repo, env)
    clone = tmp_path / "colleague"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    _run(DVC + ["pull"], clone, env)
    # (the default pipeline: realheart/dvc.yaml needs the real data, see its params.yaml)
    assert json.loads(_run(DVC + ["status", "--json", "dvc.yaml"], clone, env).stdout) == {}
    assert "Running stage" not in _run(DVC + ["repro"], clone, env).stdout
    for out in ("data/features/mobilenet.npy", "data/features/mobilenet.json", "models/mobilenet-bigru.keras",
                "data/predictions/finetuned/mobilenet-bigru.csv"):
        assert (clone / out).read_bytes() == (repo / out).read_bytes(), out
    lazy = tmp_path / "lazy"
    _run(["git", "clone", "-q", str(repo), str(lazy)], tmp_path, env)
    out = _run(DVC + ["repro", "--pull"], lazy, env).stdout
    assert "Running stage" not in out, out
    assert (lazy / "models/mobilenet-bigru.keras").read_bytes() == (repo / "models/mobilenet-bigru.keras").read_bytes()


@pytest.mark.e2e
def test_queued_experiments_run_side_by_side(tiny: tuple[Path, dict]) -> None:
    """`dvc exp run --queue` + `dvc queue start --jobs 2`: both experiments run at once, each in its own copy
    of the repository with its own dvclive folders, and the workspace is left as it was."""
    repo, env = tiny
    _commit(repo, env, "before the queue")
    for epochs in (1, 3):
        _run(DVC + ["exp", "run", "--queue", "-S", f"finetune_grid.epochs={epochs}"], repo, env)
    _run(DVC + ["queue", "start", "--jobs", "2"], repo, env)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = _run(DVC + ["queue", "status"], repo, env).stdout
            if not any(word in status for word in ("Queued", "Running")):
                break
            time.sleep(5)
    finally:
        subprocess.run(DVC + ["queue", "stop"], cwd=repo, env=env, capture_output=True)
    assert status.count("Success") == 2, status
    shown = json.loads(_run(DVC + ["exp", "show", "--json"], repo, env).stdout)
    revs = [rev for entry in shown for exp in entry.get("experiments") or [] for rev in exp["revs"]]
    by_epochs = {rev["data"]["params"]["params.yaml"]["data"]["finetune_grid"]["epochs"]: rev["rev"] for rev in revs}
    assert set(by_epochs) == {1, 3}, by_epochs
    for epochs, rev in by_epochs.items():
        # Each experiment's commit holds its own learning curves: one row per epoch it trained.
        for head in ("dense", "bigru"):
            tsv = _run(["git", "show", f"{rev}:dvclive/finetuned/mobilenet-{head}/plots/metrics/eval/loss.tsv"],
                       repo, env).stdout
            assert len(tsv.strip().splitlines()) == 1 + epochs, (epochs, head, tsv)
    assert yaml.safe_load((repo / "params.yaml").read_text())["finetune_grid"]["epochs"] == 2
    assert len((repo / "dvclive/finetuned/mobilenet-dense/plots/metrics/eval/loss.tsv").read_text().splitlines()) == 3


DSB2 = REPO.parent / "shared" / "data" / "dsb2"


@pytest.mark.e2e
@pytest.mark.skipif(not (DSB2 / "train" / "10" / "study").is_dir(),
                    reason=f"the real Kaggle DSB2 study is not present at {DSB2} (shared read-only data)")
def test_real_dsb2_study_through_filter_to_png_and_predict(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    """The paper's own data source, as Kaggle distributed it: filter_dicom keeps it under both policies (10 SAX
    positions), to_png writes both stacks with ED at the R wave, and predict with the suite's model gives every
    slice of the same stack a level."""
    repo, env = tiny
    for policy in ("paper", "repair"):
        out = tmp_path / policy
        _run([sys.executable, "stages/filter_dicom.py", "--raw", str(DSB2), "--out", str(out / "interim"),
              "--metrics", str(out / "filter.json"), "--policy", policy], repo, env)
        index = pd.read_csv(out / "interim" / "index.csv")
        assert index.series.nunique() == 10 and index.frame.nunique() == 30 and len(index) == 300
        # sax_5 (base) ... sax_14 (apex): apex first
        assert index.drop_duplicates("series").sort_values("order").series.tolist() == [f"sax_{n}" for n in
                                                                                        range(14, 4, -1)]
        _run([sys.executable, "stages/to_png.py", "--index", str(out / "interim" / "index.csv"), "--out",
              str(out / "png"), "--metrics", str(out / "png.json")], repo, env)
        frames = pd.read_csv(out / "png" / "frames.csv")
        # ED: TriggerTime 0 is frame 1 (the R wave); frame 30 ends the cycle, one frame before it
        assert frames.ed_frame.item() in (29, 30, 1, 2) and 8 <= frames.es_frame.item() <= 16
        assert len(pd.read_csv(out / "png" / "index.csv")) == 20
    cli = [sys.executable, "-m", "saxlevel.cli", "predict", str(DSB2 / "train" / "10"), "--model",
           "models/mobilenet-bigru.keras", "--out", str(tmp_path / "pred")]
    _run(cli, repo, env)
    levels = pd.read_csv(tmp_path / "pred" / "levels.csv")
    png = pd.read_csv(tmp_path / "repair" / "png" / "index.csv")
    for phase in ("ED", "ES"):
        got = levels[levels.phase == phase]
        want = png[png.phase == phase].sort_values("order")
        assert got.series.tolist() == want.series.tolist() and got.frame.unique().tolist() == [want.frame.iloc[0]]
