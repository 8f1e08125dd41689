"""What slice levels are for: LV coverage QC and the AHA 17-segment slice assignment.

Coverage: volumes (EDV, ESV, EF) and the 17-segment model need a stack that spans the whole LV. A stack covers
the apex when it reaches an out-of-apical slice (no LV blood pool left, paper section 2.2) and the base when it
reaches an out-of-basal slice (above the most basal slice with a pool). Levels never go backwards from apex to
base, so such a slice can only be the stack's first (apex) or last (base) one: the verdict reads the end slice's
level, and a stray mid-stack error cannot fake a covered end. Large cohorts run this check with dedicated
networks (Zhang et al. 2016, 2018, UK Biobank); here it costs nothing beyond the levels.

AHA assignment (Cerqueira et al., Circulation 2002): basal slices hold segments 1-6, mid slices 7-12, apical
slices 13-16; segment 17 (the apex) is the myocardial cap beyond the end of the cavity, which is where an
out-of-apical slice lies when it still shows myocardium. Out-of-basal slices (atria, outflow tract) hold none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from saxlevel import CLASS_INDEX, CLASSES
from saxlevel.evaluation import decode

OAP, OBS = CLASS_INDEX["oap"], CLASS_INDEX["obs"]
ENDS = ("apex", "base")

# level -> (AHA region, its segments of the 17-segment model)
AHA: dict[str, tuple[str, str]] = {"oap": ("apex", "17"), "ap": ("apical", "13-16"), "mid": ("mid", "7-12"),
                                   "bs": ("basal", "1-6"), "obs": ("none", "")}
AHA_REGIONS: tuple[str, ...] = ("apex", "apical", "mid", "basal", "none")  # anatomical, apex -> base


def ends_covered(levels: np.ndarray) -> tuple[bool, bool]:
    """(apex covered, base covered) of one stack's level indices ordered apex -> base."""
    levels = np.asarray(levels)
    return bool(len(levels) and levels[0] == OAP), bool(len(levels) and levels[-1] == OBS)


def stack_coverage(levels: np.ndarray, probs: np.ndarray) -> dict:
    """Coverage of one stack (rows apex -> base): both verdicts, the end levels and per end the probability that
    the verdict is right (the end slice's probability of being out of the LV, or one minus it); ``confidence``
    is the lower of the two."""
    levels, probs = np.asarray(levels), np.asarray(probs, dtype=float)
    apex, base = ends_covered(levels)
    p_apex, p_base = float(probs[0, OAP]), float(probs[-1, OBS])
    conf_apex = p_apex if apex else 1.0 - p_apex
    conf_base = p_base if base else 1.0 - p_base
    return {"apex_covered": apex, "base_covered": base, "n_slices": int(len(levels)),
            "first_level": CLASSES[int(levels[0])], "last_level": CLASSES[int(levels[-1])],
            "confidence": round(min(conf_apex, conf_base), 4), "apex_confidence": round(conf_apex, 4),
            "base_confidence": round(conf_base, 4)}


def verdict(rows: pd.DataFrame) -> str:
    """One subject's coverage verdict from its coverage rows (one per phase), with the reason when an end is
    missing: 'complete' or 'incomplete: ...'."""
    reasons = []
    for end in ENDS:
        missing = rows[~rows[f"{end}_covered"].astype(bool)]
        if len(missing):
            level_col = "first_level" if end == "apex" else "last_level"
            beyond = "out-of-apical" if end == "apex" else "out-of-basal"
            where = ", ".join(f"{r.phase} (its {'first' if end == 'apex' else 'last'} slice is "
                              f"{getattr(r, level_col)}, P = {getattr(r, end + '_confidence'):.2f})"
                              for r in missing.itertuples())
            reasons.append(f"{end} not covered in {where}: no {beyond} slice, so the stack may stop short of "
                           f"the {end} and volumes from it would miss part of the LV")
    return "complete: apex and base covered in every phase" if not reasons else "incomplete: " + "; ".join(reasons)


def aha_assignment(levels: pd.Series) -> pd.DataFrame:
    """The AHA region and 17-segment-model segments of each level name."""
    region = [AHA[lvl] for lvl in levels]
    return pd.DataFrame({"aha_region": [r for r, _ in region], "aha_segments": [s for _, s in region]},
                        index=levels.index)


def detection(truth_missing: np.ndarray, pred_missing: np.ndarray) -> dict:
    """Sensitivity and specificity of detecting a missing end (positive = missing), with the counts; None where a
    class has no stack."""
    from sklearn.metrics import confusion_matrix

    t, p = np.asarray(truth_missing, bool), np.asarray(pred_missing, bool)
    tn, fp, fn, tp = confusion_matrix(t, p, labels=[False, True]).ravel()
    return {"missing": int(tp + fn), "present": int(tn + fp),
            "sensitivity": round(float(tp / (tp + fn)), 4) if tp + fn else None,
            "specificity": round(float(tn / (tn + fp)), 4) if tn + fp else None,
            "accuracy": round(float((tp + tn) / len(t)), 4) if len(t) else None}


def stack_ends(levels: np.ndarray, stack_ids: np.ndarray, order: np.ndarray) -> dict[str, tuple[bool, bool]]:
    """(apex covered, base covered) per stack id of a table's level indices (rows in any order)."""
    uniq, stacks = decode.stack_rows(stack_ids, order)
    return {str(sid): ends_covered(levels[rows]) for sid, rows in zip(uniq, stacks)}


def coverage_detection(true_levels: np.ndarray, pred_levels: np.ndarray, stack_ids: np.ndarray,
                       order: np.ndarray) -> dict:
    """Per end, how well the predicted levels detect a stack that misses it, against the true levels."""
    truth, pred = stack_ends(true_levels, stack_ids, order), stack_ends(pred_levels, stack_ids, order)
    keys = sorted(truth)
    return {end: detection(np.array([not truth[k][i] for k in keys]), np.array([not pred[k][i] for k in keys]))
            for i, end in enumerate(ENDS)}


def coverage_table(levels_table: pd.DataFrame) -> pd.DataFrame:
    """One row per phase of a levels table (predict's levels.csv: phase, frame, order, level, p_*): subject,
    phase, frame and stack_coverage's columns."""
    rows = []
    for phase, stack in levels_table.groupby("phase", sort=False):
        stack = stack.sort_values("order")
        levels = np.array([CLASS_INDEX[lvl] for lvl in stack.level])
        rows.append({"subject": stack.subject.iloc[0], "phase": phase, "frame": int(stack.frame.iloc[0]),
                     **stack_coverage(levels, stack[[f"p_{c}" for c in CLASSES]].to_numpy())})
    return pd.DataFrame(rows)


def aha_table(levels_table: pd.DataFrame) -> pd.DataFrame:
    """The AHA assignment of every slice of a levels table, in a form a bull's-eye tool reads: subject, phase,
    frame, order (apex -> base), series, position_mm, level, aha_region, aha_segments."""
    cols = ["subject", "phase", "frame", "order", "series", "position_mm", "level"]
    out = levels_table[cols].reset_index(drop=True)
    return pd.concat([out, aha_assignment(out.level)], axis=1)
