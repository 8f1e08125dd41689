"""Subject-wise train/validation/test split and the join with slice labels (paper Tables 1-3)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from saxlevel import CLASSES, LABEL_KEY, STACK_KEY, io

SPLIT_NAMES = ("train", "val", "test")
# Paper Table 1: 576 / 214 / 184 of 974 subjects.
PAPER_RATIOS = (576, 214, 184)
KEY = LABEL_KEY


class LabelError(ValueError):
    """The labels file does not cover the images, or holds unknown class names."""


# ACDC's patient numbers name their group (its documentation): training 001-100 in five groups of 20, testing
# 101-150 in five groups of 10, in this order: dilated and hypertrophic cardiomyopathy, previous myocardial
# infarction, normal, abnormal right ventricle.
ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")


def acdc_group(subject: object) -> str | None:
    """The ACDC group of a subject id ``patientNNN`` (NNN 001-150), else None."""
    text = str(subject)
    if len(text) == 10 and text.startswith("patient") and text[7:].isdigit() and 1 <= int(text[7:]) <= 150:
        n = int(text[7:])
        return ACDC_GROUPS[(n - 1) // 20 if n <= 100 else (n - 101) // 10]
    return None


def strata(subjects: list) -> dict | None:
    """Each subject's stratum when the source names groups for all of them (ACDC's patient numbers), else None."""
    groups = {s: acdc_group(s) for s in subjects}
    return groups if subjects and all(groups.values()) else None


def assign_stratified(subjects: list, ratios: tuple[float, ...], seed: int, groups: dict) -> dict:
    """assign_splits within each stratum (seeded per stratum), so every split holds each group in proportion;
    a stratum of fewer than 3 subjects cannot be cut three ways, and then the split is not stratified."""
    members: dict = {}
    for s in sorted(subjects):
        members.setdefault(groups[s], []).append(s)
    if min(len(m) for m in members.values()) < 3:
        return assign_splits(subjects, ratios, seed)
    out: dict = {}
    for i, group in enumerate(sorted(members)):
        out.update(assign_splits(members[group], ratios, seed * 1000 + i))
    return out


def assign_splits(subjects: list, ratios: tuple[float, ...], seed: int) -> dict:
    """Shuffle subjects (seeded) and cut by ratios (largest remainder); every split gets >= 1 subject."""
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ValueError(f"split.ratios must be three positive numbers (train, val, test), got {list(ratios)}")
    subjects = sorted(subjects)
    n = len(subjects)
    if n < 3:
        raise ValueError(f"need at least 3 subjects to split, got {n}")
    share = np.asarray(ratios, dtype=float) / sum(ratios) * n
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts))[: n - counts.sum()]:
        counts[i] += 1
    for i in range(3):  # never leave a split empty
        if counts[i] == 0:
            counts[i] = 1
            counts[int(np.argmax(counts))] -= 1
    order = np.random.default_rng(seed).permutation(n)  # the same shuffle as permuting the ids themselves
    names = np.repeat(SPLIT_NAMES, counts)
    return {subjects[i]: str(name) for i, name in zip(order, names)}


def read_labels(path) -> pd.DataFrame:
    """Read a labels CSV (subject,series,frame,label[,labeled_by,labeled_at]) and check class names."""
    labels = io.read_table(path)
    missing = [c for c in ["subject", "series", "frame", "label"] if c not in labels.columns]
    if missing:
        raise LabelError(f"{path}: missing column(s) {missing}; expected subject,series,frame,label")
    bad = sorted(set(labels.label.astype(str)) - set(CLASSES))
    if bad:
        raise LabelError(f"{path}: unknown class name(s) {bad}; allowed: {', '.join(CLASSES)}")
    if labels.duplicated(KEY).any():
        dup = labels[labels.duplicated(KEY, keep=False)].head(3).to_dict("records")
        raise LabelError(f"{path}: {int(labels.duplicated(KEY).sum())} images labelled twice, e.g. {dup}")
    return labels


def join_labels(images: pd.DataFrame, labels: pd.DataFrame, labels_path: str = "labels") -> pd.DataFrame:
    """Every image gets its label; missing labels are an error, surplus labels a warning."""
    merged = images.merge(labels[KEY + ["label"]], on=KEY, how="left", validate="one_to_one")
    missing = merged[merged.label.isna()]
    if len(missing):
        examples = "; ".join(f"subject {r.subject} {r.series} frame {r.frame}" for r in missing.head(5).itertuples())
        raise LabelError(
            f"{len(missing)} of {len(merged)} images have no label in {labels_path} (e.g. {examples}). "
            f"Label them with `saxlevel label --index data/png/index.csv --labels {labels_path}`, "
            "or point data.labels at a complete labels file."
        )
    keys = set(map(tuple, images[KEY].to_numpy().tolist()))
    extra = labels[[tuple(k) not in keys for k in labels[KEY].to_numpy().tolist()]]
    if len(extra):
        known = extra.subject.isin(images.subject)
        warnings.warn(
            f"{len(extra)} labels in {labels_path} match no image ({int((~known).sum())} of subjects excluded "
            f"upstream or absent, {int(known.sum())} of other frames/series of kept subjects); they are ignored",
            stacklevel=2,
        )
    return merged


def tables(data: pd.DataFrame) -> dict:
    """Paper Tables 1-3: subjects, images and stacks per split; images per class per split."""
    out: dict = {"table1_subjects": {}, "table2_images": {}, "table2_stacks": {}, "table3_classes": {}}
    total_sub = data.subject.nunique()
    total_img = len(data)
    total_stk = data.groupby(STACK_KEY).ngroups
    for name in SPLIT_NAMES + ("total",):
        part = data if name == "total" else data[data.split == name]
        n_sub, n_img, n_stk = part.subject.nunique(), len(part), part.groupby(STACK_KEY).ngroups
        out["table1_subjects"][name] = {"count": n_sub, "percent": round(100 * n_sub / max(total_sub, 1), 1)}
        out["table2_images"][name] = {"count": n_img, "percent": round(100 * n_img / max(total_img, 1), 1)}
        out["table2_stacks"][name] = {"count": n_stk, "percent": round(100 * n_stk / max(total_stk, 1), 1)}
        counts = part.label.value_counts()
        out["table3_classes"][name] = {
            c: {"count": int(counts.get(c, 0)), "percent": round(100 * counts.get(c, 0) / max(n_img, 1), 1)}
            for c in CLASSES
        }
    groups = strata(sorted(data.subject.unique()))
    if groups:  # a stratified split (ACDC): subjects of each group per split
        out["groups_per_split"] = {name: {g: int(sum(groups[s] == g for s in data[data.split == name].subject.unique()))
                                          for g in sorted(set(groups.values()))} for name in SPLIT_NAMES}
    return out


def make_split(images: pd.DataFrame, labels_path: str, ratios: tuple[float, ...], seed: int) -> pd.DataFrame:
    """split.csv: every PNG with its label, its subject's split (train/val/test) and Kaggle's split, one row id
    per image in (subject, phase, order) order. Raises ValueError / FileNotFoundError naming the problem."""
    if images.empty:
        raise ValueError("the PNG index lists no images (did every subject get excluded?)")
    data = join_labels(images, read_labels(labels_path), str(labels_path))
    subjects = sorted(images.subject.unique())
    groups = strata(subjects)
    assignment = (assign_stratified(subjects, ratios, seed, groups) if groups
                  else assign_splits(subjects, ratios, seed))
    data.insert(1, "kaggle_split", data.pop("split"))
    data.insert(1, "split", data.subject.map(assignment))
    data = data.sort_values(["subject", "phase", "order"]).reset_index(drop=True)
    data.insert(0, "row", range(len(data)))
    return data
