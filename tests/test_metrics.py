"""Metrics against hand-computed values; ordered decoding against brute force."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest

from saxlevel import CLASSES
from saxlevel.evaluation import decode, metrics, table5


def test_sotd_by_hand() -> None:
    cm = np.array([[5, 1, 2, 0, 0],
                   [0, 4, 1, 3, 0],
                   [1, 0, 6, 1, 0],
                   [0, 0, 0, 2, 1],
                   [4, 0, 0, 0, 7]])
    # outside |i-j| <= 1: (0,2)=2, (1,3)=3, (2,0)=1, (4,0)=4
    assert metrics.sotd(cm) == 10


def test_split_metrics_by_hand() -> None:
    y = metrics.encode(["oap", "ap", "mid", "bs", "obs", "mid"])
    pred = metrics.encode(["oap", "mid", "mid", "obs", "oap", "mid"])
    probs = np.eye(5)[pred] * 0.9 + 0.02
    stacks = np.array(["a", "a", "a", "b", "b", "b"])
    m = metrics.split_metrics(y, pred, probs, stacks)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["sotd"] == 1  # obs predicted as oap (|4-0| = 4); ap->mid and bs->obs are neighbours
    # 3 classes oap / in (ap, mid, bs) / obs: wrong are bs->obs and obs->oap
    assert m["error_3class"] == pytest.approx(2 / 6)
    assert m["stack_accuracy"] == 0.0
    assert m["f1"]["mid"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))  # tp 2, fp 1 (ap->mid), fn 0
    assert m["confusion"][4][0] == 1 and m["n_stacks"] == 2
    assert list(m["f1"]) == list(CLASSES)


def test_absent_class_warns_not_crashes() -> None:
    y = metrics.encode(["oap", "ap", "mid", "mid"])
    pred = metrics.encode(["oap", "ap", "bs", "mid"])
    with pytest.warns(UserWarning, match="absent"):
        m = metrics.split_metrics(y, pred, np.eye(5)[pred], np.array(["a"] * 4))
    assert m["f1"]["obs"] == 0.0 and np.isfinite(m["auc_weighted"])


def _brute(probs: np.ndarray) -> tuple[int, ...]:
    T = len(probs)
    best = max((seq for seq in itertools.product(range(5), repeat=T) if list(seq) == sorted(seq)),
               key=lambda seq: sum(np.log(probs[t, k]) for t, k in enumerate(seq)))
    return best


def test_ordered_decoding_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        T = int(rng.integers(1, 6))
        p = rng.dirichlet(np.ones(5) * 0.5, size=T)
        got = decode.ordered(p)
        assert tuple(got) == _brute(p)
        assert (np.diff(got) >= 0).all()


def test_ordered_never_decreases_and_fixes_impossible_sequence() -> None:
    p = np.array([[.9, .1, 0, 0, 0], [0, .1, .2, .7, 0], [0, .1, .6, .3, 0], [0, 0, 0, .1, .9]]) + 1e-3
    assert list(decode.argmax(p)) == [0, 3, 2, 4]  # mid after bs: impossible
    assert (np.diff(decode.ordered(p)) >= 0).all()
    rng = np.random.default_rng(1)
    for _ in range(100):
        assert (np.diff(decode.ordered(rng.dirichlet(np.ones(5), size=25))) >= 0).all()


def test_decode_stacks_decodes_all_stacks_together_as_one_at_a_time() -> None:
    """Stacks of different lengths, rows shuffled and ids interleaved, ties between levels (rounded probabilities):
    the batched dynamic programme gives each stack what the brute force (short stacks) and ``ordered`` of that
    stack alone give."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 7, 30)
    probs = np.round(rng.dirichlet(np.ones(5) * 0.5, size=lengths.sum()), 1)
    ids = np.repeat([f"s{i}" for i in range(len(lengths))], lengths)
    order = np.concatenate([rng.permutation(n) for n in lengths])
    shuffle = rng.permutation(len(ids))
    probs, ids, order = probs[shuffle], ids[shuffle], order[shuffle]
    got = decode.decode_stacks(probs, ids, order, "ordered")
    for sid in np.unique(ids):
        rows = np.nonzero(ids == sid)[0]
        rows = rows[np.argsort(order[rows])]
        assert (got[rows] == decode.ordered(probs[rows])).all()
        if len(rows) <= 5:
            assert tuple(got[rows]) == _brute(np.clip(probs[rows], 1e-12, None))


def test_decode_stacks_respects_order_column() -> None:
    p = np.array([[0, 0, 0, .1, .9], [.9, .1, 0, 0, 0]]) + 1e-3  # rows listed base first
    got = decode.decode_stacks(p, np.array(["s", "s"]), np.array([1, 0]), "ordered")
    assert list(got) == [4, 0]
    with pytest.raises(ValueError, match="evaluate.decode"):
        decode.decode_stacks(p, np.array(["s", "s"]), np.array([1, 0]), "viterbi")


def _pred(seed: int, noise: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(12):
        for phase in ("ED", "ES"):
            levels = np.sort(np.random.default_rng(s).integers(0, 5, 9))
            for k, lvl in enumerate(levels):
                p = np.eye(5)[lvl] + rng.uniform(0, noise, 5)
                p /= p.sum()
                rows.append({"split": "test" if s < 8 else "val", "subject": s, "phase": phase, "order": k,
                             "series": f"sax_{k}", "frame": 1, "true": CLASSES[lvl],
                             **{f"p_{c}": p[i] for i, c in enumerate(CLASSES)}, "pred": CLASSES[int(p.argmax())]})
    return pd.DataFrame(rows)


def test_evaluate_model_and_compare() -> None:
    good, bad = _pred(0, 0.5), _pred(1, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = table5.evaluate_model(good, resamples=50, seed=0)
    assert set(res) == {"argmax", "ordered"} and set(res["argmax"]) == {"test", "val"}
    t = res["argmax"]["test"]
    assert t["ci95"]["accuracy"][0] <= t["accuracy"] <= t["ci95"]["accuracy"][1]
    cmp = table5.compare(good, bad, "argmax", resamples=200, seed=0)
    assert cmp["accuracy_diff"] > 0 and cmp["significant"]
    same = table5.compare(good, good, "argmax", resamples=50, seed=0)
    assert same["accuracy_diff"] == 0 and not same["significant"]
    rows = table5.table_rows("m", "mobilenet", "lstm2", res)
    assert [r["decode"] for r in rows] == ["argmax", "ordered"] and "accuracy_ci95" in rows[0]


def test_vectorised_bootstrap_matches_sklearn_per_resample() -> None:
    """Each bootstrap resample's metrics equal scikit-learn's on the explicitly resampled rows."""
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(4)
    n = 60
    subjects = np.repeat(np.arange(12), 5)
    y = rng.integers(0, 5, n)
    probs = rng.dirichlet(np.ones(5), size=n)
    probs[np.arange(n), y] += 0.3
    probs = np.round(probs / probs.sum(1, keepdims=True), 2)  # rounding creates ties
    pred = probs.argmax(1)
    counts, subject = metrics.bootstrap_counts(subjects, 5, seed=1)
    assert (counts.sum(axis=1) == 12).all() and (subjects[np.unique(subject, return_index=True)[1]] == np.arange(12)).all()
    cms = metrics.weighted_confusions(y, pred, counts, subject)
    for r in range(5):
        rows = np.repeat(np.arange(n), counts[r, subject].astype(int))  # every row of a subject once per draw
        yb, pb = y[rows], pred[rows]
        assert (cms[r] == metrics.confusion_matrix(yb, pb, labels=metrics.LABELS)).all()
        for k in range(5):
            if 0 < (yb == k).sum() < len(yb):
                got = metrics._auc_ovr_weighted(probs[:, k], y == k, counts[r : r + 1], subject)[0]
                assert got == pytest.approx(roc_auc_score(yb == k, probs[rows, k]))
        f1 = f1_score(yb, pb, labels=metrics.LABELS, average=None, zero_division=0)
        tp = np.diag(cms[r])
        mine = 2 * tp / np.maximum(2 * tp + (cms[r].sum(0) - tp) + (cms[r].sum(1) - tp), 1e-12)
        np.testing.assert_allclose(mine, f1)


def test_comparison_pairs() -> None:
    from saxlevel.evaluation import table5

    names = ["mobilenet-dense", "mobilenet-bigru", "resnet50v2-dense", "resnet50v2-bigru"]
    finetuned = {"mobilenet-dense-ft": "mobilenet-dense", "mobilenet-bigru-ft": "mobilenet-bigru"}
    pairs = table5.comparison_pairs(names, ["dense", "bigru"], finetuned)
    assert pairs == [("mobilenet-bigru", "mobilenet-dense"), ("resnet50v2-bigru", "resnet50v2-dense"),
                     ("mobilenet-dense-ft", "mobilenet-dense"), ("mobilenet-dense-ft", "position-only"),
                     ("mobilenet-bigru-ft", "mobilenet-bigru"), ("mobilenet-bigru-ft", "position-only"),
                     ("mobilenet-bigru-ft", "mobilenet-dense-ft")]
    # no dense head in the paper grid: no CNN-RNN vs CNN claims; a fine-tuned model without frozen twin
    assert table5.comparison_pairs(["mobilenet-bigru"], ["bigru"], {"efficientnetb0-bigru-ft": "efficientnetb0-bigru"}) \
        == [("efficientnetb0-bigru-ft", "position-only")]


def test_position_baseline_is_scored_like_a_model() -> None:
    import pandas as pd

    from saxlevel import CLASSES
    from saxlevel.evaluation import table5

    rows = []
    for s in range(9):
        split = "train" if s < 5 else ("val" if s < 7 else "test")
        for phase in ("ED", "ES"):
            for k in range(10):
                rows.append({"split": split, "subject": s, "phase": phase, "order": k, "series": f"sax_{k}",
                             "frame": 1, "label": CLASSES[min(k // 2, 4)]})
    data = pd.DataFrame(rows)
    pred = table5.position_baseline_predictions(data)
    assert set(pred.split) == {"val", "test"} and len(pred) == 80
    res = table5.evaluate_model(pred, 20, 0)
    assert res["argmax"]["test"]["accuracy"] > 0.8 and "ci95" in res["argmax"]["test"]
