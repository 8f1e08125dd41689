"""Training and validating the real-heart model (realheart/dvc.yaml): the stacks as arrays, held-out folds, the
scores beside position alone, and the model file with everything predict needs.

Validation (the stage ``validate``) holds out every fifth ACDC patient of each group and every subject of the other
sources (M&Ms: other vendors; the Sunnybrook GE export), deals them into folds, and for each fold trains the recipe
on everything but that fold: each held-out subject is scored by a model that never saw it, while each model has
seen some subjects of every source, as the shipped model has. Each held-out stack is scored intact and cut short at
either end (cut_rows), so both covered and missing ends are judged. The presence calibration of each held-out
subject is fitted on the other held-out subjects only (leave one subject out), so no score uses a calibration that
saw its own stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saxlevel import CLASSES, io
from saxlevel.evaluation import metrics
from saxlevel.realheart import realdata, runs
from saxlevel.realheart.cavitynet import NetSettings

HOLDOUT_EVERY = 5  # every fifth ACDC patient of each group is held out (16 of 80)


def settings(prm: dict) -> tuple[dict[str, str], dict[str, tuple[str, str]], NetSettings, list[str]]:
    """realheart/params.yaml: (NIfTI roots by name, DICOM-with-contours studies by name, network settings, the
    sources validation splits by patient); a ParamError names a missing or ill-typed key."""
    from saxlevel import params as P

    roots = P.get(prm, "sources")
    contours = P.get(prm, "contours", {}) or {}
    if not isinstance(roots, dict) or not isinstance(contours, dict):
        raise P.ParamError("realheart/params.yaml: 'sources' and 'contours' must be mappings of name -> path(s)")
    for name, c in contours.items():
        if not isinstance(c, dict) or not {"dicom", "contours"} <= set(c):
            raise P.ParamError(f"realheart/params.yaml: 'contours.{name}' needs 'dicom' and 'contours' paths")
    net = NetSettings(base_filters=P.typed(prm, "net.base_filters", int), depth=P.typed(prm, "net.depth", int),
                      epochs=P.typed(prm, "net.epochs", int), batch_size=P.typed(prm, "net.batch_size", int),
                      lr=float(P.get(prm, "net.lr")), augment=bool(P.get(prm, "net.augment")),
                      seed=P.typed(prm, "net.seed", int), slice_loss=float(P.get(prm, "net.slice_loss", 0.0)),
                      myocardium=bool(P.get(prm, "net.myocardium", False)), flips=bool(P.get(prm, "net.flips", False)),
                      end_dropout=P.typed_or(prm, "net.end_dropout", float, 0.0),
                      beyond_repeat=P.typed_or(prm, "net.beyond_repeat", int, 1),
                      repeat_sources=_repeat_sources(P.get(prm, "net.repeat_sources", None)))
    if not 0.0 <= net.end_dropout <= 1.0 or net.beyond_repeat < 1:
        raise P.ParamError(f"realheart/params.yaml: 'net.end_dropout' must be a chance in [0, 1] and "
                           f"'net.beyond_repeat' a whole number >= 1; got {net.end_dropout}, {net.beyond_repeat}")
    unknown = sorted(set(net.repeat_sources) - set(roots) - set(contours))
    if unknown:
        raise P.ParamError(f"realheart/params.yaml: 'net.repeat_sources' names {unknown}, which are not in 'sources' "
                           f"or 'contours' ({sorted([*roots, *contours])})")
    seen = [str(s) for s in P.get(prm, "validation.seen_sources")]
    return ({str(k): str(v) for k, v in roots.items()},
            {str(k): (str(c["dicom"]), str(c["contours"])) for k, c in contours.items()}, net, seen)


def _repeat_sources(value: Any) -> dict[str, int]:
    """net.repeat_sources: a mapping of source name -> whole number >= 1 (absent or empty: none)."""
    from saxlevel import params as P

    if not value:
        return {}
    if not isinstance(value, dict) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                              for n in value.values()):
        raise P.ParamError(f"realheart/params.yaml: 'net.repeat_sources' must map source names to whole numbers "
                           f">= 1, e.g. {{mnms: 3}}; got {value!r}")
    return {str(k): int(v) for k, v in value.items()}


def fold_count(prm: dict) -> int:
    """validation.folds (at least 2)."""
    from saxlevel import params as P

    n = P.typed(prm, "validation.folds", int)
    if n < 2:
        raise P.ParamError(f"realheart/params.yaml: 'validation.folds' must be >= 2, got {n}")
    return n


def load_slices(folder: str | Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """prepare's arrays: (inputs as float32 0..1, masks, slice table)."""
    folder = Path(folder)
    x = np.load(folder / "x.npy").astype(np.float32) / 255.0
    y = np.load(folder / "y.npy").astype(np.uint8)  # an older prepare wrote the cavity alone, as bool
    return x, y, load_table(folder)


def load_table(folder: str | Path) -> pd.DataFrame:
    """prepare's slice table alone (calibrate needs no images)."""
    return pd.read_csv(Path(folder) / "slices.csv", dtype={"subject": str, "group": str}, keep_default_na=False)


def folds(held_out: set[str], table: pd.DataFrame, n: int) -> list[set[str]]:
    """The held-out subjects dealt into ``n`` folds, alternating within each source (sorted ids), so each fold holds
    some of every source and every held-out subject is scored by a model that never saw it."""
    out: list[set[str]] = [set() for _ in range(n)]
    for _, g in table[table.subject.isin(held_out)].groupby("source"):
        for i, subject in enumerate(sorted(g.subject.unique())):
            out[i % n].add(str(subject))
    return out


def held_out_maps(x: np.ndarray, y: np.ndarray, table: pd.DataFrame, net: NetSettings, seen: list[str],
                  n_folds: int = 2) -> tuple[dict[tuple[int, str], np.ndarray], list[dict]]:
    """The stage ``validate``: for each fold, train on every slice but the fold's subjects and map the fold's
    stacks, intact and cut (variants). Returns ({(stack, cut): maps as float16}, the folds' learning curves)."""
    from saxlevel.realheart import cavitynet

    held_out = holdout_subjects(table, seen)
    maps: dict[tuple[int, str], np.ndarray] = {}
    curves = []
    for k, fold in enumerate(folds(held_out, table, n_folds)):
        test = table.subject.isin(fold).to_numpy()
        model, c = train_rows(x[~test], y[~test], table[~test], net)
        for sid, cut, idx in variants(table[test]):
            rows = table.index.get_indexer(idx)
            m = cavitynet.cavity_maps(model, variant_input(x[rows]) if cut else x[rows], flips=net.flips)
            maps[sid, cut] = m.astype(np.float16)
        curves.append({"fold": k, "subjects": sorted(fold), "curve": c})
    return maps, curves


def calibrate(table: pd.DataFrame, maps: dict[tuple[int, str], np.ndarray], seen: list[str], n_folds: int,
              names: tuple[str, ...] | list[str]) -> dict:
    """The stage ``calibrate``: the held-out maps' presence features (``names``), each held-out subject scored with a
    calibration fitted on the others (validate). Returns metrics, per-slice scores and the presence calibration
    fitted on every held-out stack."""
    held_out = holdout_subjects(table, seen)
    features = {key: runs.presence_features(m.astype(np.float32), names) for key, m in maps.items()}
    scores, summ, calibration = validate(table, features, held_out, names)
    held = table[table.subject.isin(held_out)]
    metrics_ = {"held_out": {s: sorted(g.subject.unique().tolist()) for s, g in held.groupby("source")},
                "folds": n_folds, "development_stacks": int(table[~table.subject.isin(held_out)]["stack"].nunique()),
                "summary": summ, "presence_features": list(names)}
    return {"metrics": metrics_, "scores": scores, "calibration": calibration}


def save_maps(path: str | Path, maps: dict[tuple[int, str], np.ndarray]) -> None:
    """The held-out maps as one npz (atomic), a key per stack variant: '<stack>-<cut or intact>'."""
    arrays_ = {f"{sid}-{cut or 'intact'}": m for (sid, cut), m in maps.items()}
    io.atomic_write(path, lambda p: np.savez_compressed(open(p, "wb"), **arrays_))  # type: ignore[arg-type]


def load_maps(path: str | Path) -> dict[tuple[int, str], np.ndarray]:
    """save_maps' file back as {(stack, cut): maps}."""
    out = {}
    with np.load(path) as z:
        for key in z.files:
            sid, _, cut = key.partition("-")
            out[int(sid), "" if cut == "intact" else cut] = z[key]
    return out


def check_ring(names: list[str], myocardium: bool) -> None:
    """A ParamError where presence features ``names`` (params.yaml's, or those a calibration was fitted on) ask for
    the ring and the network has no myocardium channel."""
    from saxlevel import params as P

    if runs.RING in names and not myocardium:
        raise P.ParamError("realheart/params.yaml: presence feature 'ring' needs net.myocardium: true (the "
                           "myocardium channel); or calibrate again without 'ring' in presence.features")


def presence_names(prm: dict) -> list[str]:
    """realheart/params.yaml's presence.features (default: runs.FEATURES); an unknown name is a ParamError."""
    from saxlevel import params as P

    names = [str(n) for n in P.get(prm, "presence.features", list(runs.FEATURES))]
    unknown = [n for n in names if n not in runs.KNOWN_FEATURES]
    if unknown or not names:
        raise P.ParamError(f"realheart/params.yaml: presence.features {unknown or names} unknown or empty; known: "
                           f"{list(runs.KNOWN_FEATURES)}")
    check_ring(names, bool(P.get(prm, "net.myocardium", False)))
    return names


def training_rows(table: pd.DataFrame, y: np.ndarray, net: NetSettings) -> np.ndarray:
    """Row positions of one training epoch: every slice once; a slice without LV cavity (beyond the apex or the
    base) net.beyond_repeat times, and a slice of a source in net.repeat_sources that many times (the larger of
    the two). The development data (ACDC) rarely reach above the base, and the other scanners are few."""
    times = np.ones(len(table), dtype=int)
    beyond = ~((y % 2) == 1).any(axis=(1, 2))
    times[beyond] = net.beyond_repeat
    for source, k in net.repeat_sources.items():
        times = np.where(table.source.to_numpy() == source, np.maximum(times, k), times)
    return np.repeat(np.arange(len(table)), times)


def train_rows(x: np.ndarray, y: np.ndarray, table: pd.DataFrame, net: NetSettings) -> tuple[Any, list[dict]]:
    """cavitynet.train on the slices of ``table`` (rows of x and y), repeated as training_rows says: a fold's
    model (held_out_maps), and on every labelled slice the shipped one."""
    from saxlevel.realheart import cavitynet

    rows = training_rows(table, y, net)
    if len(rows) == len(table):
        return cavitynet.train(x, y, net)
    return cavitynet.train(x[rows], y[rows], net)



def arrays(stacks: list[realdata.Stack]) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(inputs (N, S, S, 3) float32, masks (N, S, S) uint8 (realdata's bits), one row per slice: stack, source, subject, phase, order,
    position_mm, has_cavity, level, group) of all stacks' slices."""
    xs, ys, rows = [], [], []
    for i, s in enumerate(stacks):
        xs.append(realdata.model_input(s.images, s.spacing))
        myo: list[np.ndarray | None] = list(s.myocardium) if s.myocardium else [None] * len(s.masks)
        ys.append(np.stack([realdata.slice_labels(m, w, s.spacing) for m, w in zip(s.masks, myo)]))
        # subject ids are qualified by their source (two datasets may both have a patient0001)
        rows += [{"stack": i, "source": s.source, "subject": f"{s.source}/{s.subject}", "phase": s.phase, "order": k,
                  "position_mm": float(p), "has_cavity": bool(c), "level": lv, "group": s.group}
                 for k, (p, c, lv) in enumerate(zip(s.positions, s.has_cavity, s.levels))]
    return np.concatenate(xs), np.concatenate(ys), pd.DataFrame(rows)


def holdout_subjects(table: pd.DataFrame, sources_seen: list[str]) -> set[str]:
    """The subjects validation holds out: every HOLDOUT_EVERY-th ACDC-like patient (by id within its group) of the
    ``sources_seen`` sources, and every subject of the other sources."""
    out: set[str] = set()
    for source, g in table.groupby("source"):
        subjects = sorted(g.subject.unique())
        if source not in sources_seen:
            out |= set(subjects)
            continue
        by_group: dict[str, list[str]] = {}
        for s in subjects:
            by_group.setdefault(str(g[g.subject == s].group.iloc[0]), []).append(s)
        for members in by_group.values():
            out |= set(members[HOLDOUT_EVERY - 1::HOLDOUT_EVERY])
    return out


def position_baseline(train: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Levels from the slice's relative position in its stack alone (multinomial logistic regression on
    order / (slices - 1), fitted on ``train``; evaluation's position-only baseline)."""
    from sklearn.linear_model import LogisticRegression

    def rel(t: pd.DataFrame) -> np.ndarray:
        r = (t.order / t.groupby("stack").order.transform("max").clip(lower=1)).to_numpy()
        return np.c_[r, r ** 2]

    model = LogisticRegression(max_iter=2000).fit(rel(train), train.level)
    return model.predict(rel(rows))


def accuracy_ci(correct: np.ndarray, subjects: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """Accuracy with a subject-level bootstrap 95 % interval."""
    correct = np.asarray(correct, dtype=float)
    out: dict[str, Any] = {"accuracy": round(float(correct.mean()), 4), "images": int(len(correct)),
           "subjects": int(len(np.unique(subjects)))}
    if out["subjects"] > 1 and resamples:
        counts, subject = metrics.bootstrap_counts(np.asarray(subjects), resamples, seed)
        right = np.bincount(subject, weights=correct, minlength=counts.shape[1])
        total = np.bincount(subject, minlength=counts.shape[1])
        acc = (counts @ right) / np.maximum(counts @ total, 1)
        out["ci95"] = [round(float(np.percentile(acc, 2.5)), 4), round(float(np.percentile(acc, 97.5)), 4)]
    return out


def cut_rows(has_cavity: np.ndarray, end: str) -> np.ndarray | None:
    """Which slices of a stack (apex -> base) remain when it is acquired short of ``end`` (realdata.cut's rule: every
    slice beyond the LV at that end and the first LV slice go); None when fewer than four would remain."""
    cav = np.asarray(has_cavity, dtype=bool)
    idx = np.arange(len(cav))
    keep = idx > int(np.flatnonzero(cav)[0]) if end == "apex" else idx < int(np.flatnonzero(cav)[-1])
    return keep if keep.sum() >= 4 else None


# The calibration matters where the LV starts and ends: a cavity the network misses mid-stack is bridged by the
# single-run decoding (runs.stack_levels), so the presence calibration is fitted on the slices within this many
# of the LV's first and last slice, on both sides.
BOUNDARY = 2


def boundary_rows(has_cavity: np.ndarray) -> np.ndarray:
    """The slices of a stack (apex -> base) within BOUNDARY of its first or last slice with LV cavity."""
    cav = np.asarray(has_cavity, dtype=bool)
    k = np.arange(len(cav))
    first, last = int(np.flatnonzero(cav)[0]), int(np.flatnonzero(cav)[-1])
    return (np.abs(k - first) <= BOUNDARY) | (np.abs(k - last) <= BOUNDARY)


def variants(table: pd.DataFrame) -> list[tuple[int, str, np.ndarray]]:
    """(stack id, cut, its slices' row labels apex -> base) of every stack of ``table``: intact, and cut short at
    either end where at least four slices remain (cut_rows)."""
    out = []
    for sid, g in table.groupby("stack", sort=True):
        g = g.sort_values("order")
        for cut in ("", "apex", "base"):
            keep = np.ones(len(g), dtype=bool) if not cut else cut_rows(g.has_cavity.to_numpy(), cut)
            if keep is not None:
                out.append((int(sid), cut, g.index.to_numpy()[keep]))
    return out


def variant_input(x: np.ndarray) -> np.ndarray:
    """The inputs of a stack's remaining slices (rows of ``x``, apex -> base) as a stack of their own: the new end
    slices have no outer neighbour, so that channel repeats the slice (realdata.with_neighbours)."""
    x = x.copy()
    x[0, ..., 0] = x[0, ..., 1]
    x[-1, ..., 2] = x[-1, ..., 1]
    return x


def score(table: pd.DataFrame, features: dict[tuple[int, str], np.ndarray],
          calibration_of: dict[str, dict]) -> pd.DataFrame:
    """Every stack variant (variants) scored with its subject's calibration: one row per slice with the true and
    predicted level, the presence probability, the level probabilities and the stack's predicted and true ends."""
    rows = []
    for sid, cut, idx in variants(table):
        part = table.loc[idx]
        truth = realdata.levels_of(part.position_mm.to_numpy(), part.has_cavity.to_numpy())
        q = runs.presence(features[sid, cut], calibration_of[str(part.subject.iloc[0])])
        levels, probs = runs.stack_levels(q, part.position_mm.to_numpy())
        apex, base = runs.end_verdicts(levels)
        for k, r in enumerate(part.itertuples()):
            rows.append({"stack": f"{sid}{'-' + cut if cut else ''}", "source": r.source, "subject": r.subject,
                         "phase": r.phase, "cut": cut, "order": k, "true": truth[k], "pred": levels[k],
                         "presence": round(float(q[k]), 4),
                         **{f"p_{c}": round(float(probs[k, j]), 4) for j, c in enumerate(CLASSES)},
                         "apex_covered": apex, "base_covered": base, "true_apex_covered": truth[0] == "oap",
                         "true_base_covered": truth[-1] == "obs"})
    return pd.DataFrame(rows)


def summary(scored: pd.DataFrame, baseline: pd.Series | None = None) -> dict:
    """Per source and pooled: level accuracy of the intact stacks (with CI; beside position alone where given) and
    the share of stack ends (intact and cut) whose coverage verdict is right."""
    out: dict[str, Any] = {}
    ends = scored.drop_duplicates("stack")
    for source in [*sorted(scored.source.unique()), "all"]:
        sel = scored if source == "all" else scored[scored.source == source]
        intact = sel[sel.cut == ""]
        e = ends if source == "all" else ends[ends.source == source]
        right = np.r_[(e.apex_covered == e.true_apex_covered).to_numpy(), (e.base_covered == e.true_base_covered)]
        res: dict[str, Any] = {"levels": accuracy_ci((intact.true == intact.pred).to_numpy(), intact.subject.to_numpy()),
               "ends": {"right": round(float(right.mean()), 4), "ends": int(len(right)),
                        "stacks_intact": int((e.cut == "").sum()), "stacks_cut": int((e.cut != "").sum())}}
        if baseline is not None:
            b = baseline.loc[intact.index]
            res["position_only"] = accuracy_ci((intact.true == b).to_numpy(), intact.subject.to_numpy())
        out[source] = res
    return out


def validate(table: pd.DataFrame, features: dict[tuple[int, str], np.ndarray], held_out: set[str],
             names: tuple[str, ...] | list[str] = runs.FEATURES) -> tuple[pd.DataFrame, dict, dict]:
    """(scored slices, summary, the calibration fitted on every held-out stack) of the held-out subjects
    (``features``: per stack variant, see variants, columns ``names``): each subject's presence calibration fitted
    on the other held-out subjects' stacks, intact and cut; position-only fitted on the development slices."""
    held = table[table.subject.isin(held_out)]

    parts = variants(held)

    def fit(subjects: pd.Series) -> dict:
        """Calibration on the subjects' stacks, intact and cut (a cut stack's new end slice sees no neighbour), on
        the slices near either end of the LV (boundary_rows)."""
        chosen = [(sid, cut, idx) for sid, cut, idx in parts if held.loc[idx[0], "subject"] in set(subjects)]
        near = [boundary_rows(held.loc[idx, "has_cavity"].to_numpy()) for _, _, idx in chosen]
        f = np.concatenate([features[sid, cut][b] for (sid, cut, _), b in zip(chosen, near)])
        truth = np.concatenate([held.loc[idx, "has_cavity"].to_numpy()[b] for (_, _, idx), b in zip(chosen, near)])
        return runs.fit_presence(f, truth, names)

    subjects = pd.Series(sorted(held.subject.unique()))
    calibration_of = {str(s): fit(subjects[subjects != s]) for s in subjects}
    scored = score(held, features, calibration_of)
    dev = table[~table.subject.isin(held_out)]
    intact = scored[scored.cut == ""]
    baseline = None
    if len(dev):
        baseline = pd.Series(index=scored.index, dtype=object)
        baseline.loc[intact.index] = position_baseline(dev, intact)
    return scored, summary(scored, baseline), fit(subjects)


def model_info(settings: dict, calibration: dict, validation: dict, sources: dict) -> dict:
    """The saxlevel.json of the real-heart model: what predict needs (kind, classes, calibration, input) and what the
    model card says (definition, decoding, data, validation)."""
    return {"kind": "cavity", "name": "realheart", "classes": list(CLASSES), "level_definition": runs.LEVEL_DEFINITION,
            "decoding": runs.DECODING, "input": {"pixel_mm": realdata.PIXEL_MM, "size": realdata.SIZE,
                                                      "window_percentiles": list(realdata.WINDOW),
                                                      "channels": "apical neighbour, slice, basal neighbour"},
            "calibration": calibration, "settings": settings, "validation": validation, "sources": sources,
            "preprocessing": {"ed_frame": "auto", "es_frame": "auto", "window_percentiles": [2, 98],
                              "image_size": realdata.SIZE}}


def save(model: Any, path: str | Path, info: dict) -> None:
    """The model file (.keras: config and HDF5 weights, no pickle) with its saxlevel.json."""
    io.save_keras(path, model, info)
