"""The phantom's parameters and each subject's plan: which defects and truncations it gets, and everything
random about it except image noise (anatomy, geometry, timing, numbering).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from saxlevel.phantom import anatomy, dicomio, geometry

MNMS2_DEFECTS = ("missing_gt", "gt_shape", "la_only", "cine_only")
DEFECTS = ("duplicate", "inconsistent", "noncontiguous", "black", *(
    # DICOM formats: a slice re-acquired later and stored under a folder number past the run (the held-back DSB2
    # study's sax_38 beside sax_5-sax_18): the paper excludes it by rule 1, repair keeps every position.
    "late_repeat",
    # mnms2 format (M&Ms-2's release layout): the ED segmentation missing; the ES one of another shape; only the
    # long-axis files; only the 4-D SA cine (no per-phase volumes).
    "missing_gt", "gt_shape", "la_only", "cine_only"))
# Stacks that stop short of an end of the LV (coverage QC, saxlevel.evaluation.coverage): not a defect the pipeline drops,
# a stack a clinic acquired too short. A cut keeps at least MIN_CUT_SLICES slices.
TRUNCATED_ENDS = ("apex", "base")
MIN_CUT_SLICES = 5
# classic, enhanced, clinical: DICOM (dicomio); nifti: ACDC's NIfTI layout with segmentations; mnms2: M&Ms-2's
# per-phase release layout with its cine and long-axis files (niftiio)
FORMATS = (*dicomio.FORMATS, "nifti", "mnms2")
NIFTI_FORMATS = ("nifti", "mnms2")
# Kaggle DSB2 split sizes (train 1-500, validate 501-700, test 701-1140).
KAGGLE_SPLITS = (("train", 500), ("validate", 200), ("test", 440))


@dataclass(frozen=True)
class PhantomParams:
    """Generator parameters: params.yaml ``phantom`` is their only source of defaults (from_params)."""

    subjects: int
    seed: int
    frames: int
    defect_rates: dict[str, float]
    jobs: int
    format: str  # classic: one file per image (Kaggle); enhanced: one Enhanced MR file per series; clinical
    transfer_syntax: str  # explicit (Kaggle), deflate, rle, jpeg-lossless, jpeg-ls, jpeg2000
    truncated: dict[str, float]  # share of subjects whose stack misses the apex / the base

    @classmethod
    def from_params(cls, params: dict, **overrides: object) -> PhantomParams:
        """params.yaml's ``phantom`` section, typed (a ParamError names a missing or ill-typed key); keyword
        arguments that are not None override it (defect_rates merge)."""
        from saxlevel import params as P

        rates, cut = P.get(params, "phantom.defect_rates"), P.get(params, "phantom.truncated")
        for key, value in (("defect_rates", rates), ("truncated", cut)):
            if not isinstance(value, dict):
                raise P.ParamError(f"params.yaml: 'phantom.{key}' must be a mapping, got {value!r}")
        values: dict[str, Any] = {"subjects": P.typed(params, "phantom.subjects", int), "seed": P.typed(params, "phantom.seed", int),
                  "frames": P.typed(params, "phantom.frames", int), "jobs": P.typed(params, "phantom.jobs", int),
                  "format": P.typed(params, "phantom.format", str),
                  "transfer_syntax": P.typed(params, "phantom.transfer_syntax", str),
                  "defect_rates": {str(k): float(v) for k, v in rates.items()},
                  "truncated": {str(k): float(v) for k, v in cut.items()}}
        extra = {k: overrides.pop(k, None) or {} for k in ("defect_rates", "truncated")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        for k, v in extra.items():
            values[k].update(v)
        return cls(**values)

    def validate(self) -> None:
        """Raise ValueError naming the bad parameter."""
        if self.format not in FORMATS:
            raise ValueError(f"phantom.format must be one of {FORMATS}, got {self.format!r}")
        if self.transfer_syntax not in dicomio.TRANSFER_SYNTAXES:
            raise ValueError(f"phantom.transfer_syntax must be one of {sorted(dicomio.TRANSFER_SYNTAXES)}, "
                             f"got {self.transfer_syntax!r}")
        if self.subjects < 3:
            raise ValueError(f"phantom.subjects must be >= 3 (one per Kaggle split), got {self.subjects}")
        if not 6 <= self.frames <= 90:
            raise ValueError(f"phantom.frames must be in 6..90 (Kaggle has ~30), got {self.frames}")
        unknown = set(self.defect_rates) - set(DEFECTS)
        if unknown:
            raise ValueError(f"phantom.defect_rates has unknown defects {sorted(unknown)}; known: {DEFECTS}")
        active = {d for d, r in self.defect_rates.items() if r > 0}
        # (The DICOM rule defects are not written in the NIfTI formats, as before: a volume cannot repeat a slice.)
        wrong = active & set(MNMS2_DEFECTS) if self.format != "mnms2" else set()
        if "late_repeat" in active and self.format != "classic":
            wrong.add("late_repeat")
        if wrong:
            raise ValueError(f"phantom.defect_rates: {sorted(wrong)} cannot be written in format {self.format!r} "
                             f"(late_repeat: classic only; {', '.join(MNMS2_DEFECTS)}: mnms2 only)")
        total = sum(self.defect_rates.values())
        if any(r < 0 for r in self.defect_rates.values()) or total > 1:
            raise ValueError(f"phantom.defect_rates must be >= 0 and sum to <= 1, got {self.defect_rates}")
        unknown = set(self.truncated) - set(TRUNCATED_ENDS)
        if unknown:
            raise ValueError(f"phantom.truncated has unknown ends {sorted(unknown)}; known: {TRUNCATED_ENDS}")
        if any(r < 0 for r in self.truncated.values()) or sum(self.truncated.values()) > 1:
            raise ValueError(f"phantom.truncated must be >= 0 and sum to <= 1, got {self.truncated}")


def split_of_ids(n: int) -> list[tuple[int, str]]:
    """Subject ids 1..n and their Kaggle split, in Kaggle proportions (train first)."""
    total = sum(k for _, k in KAGGLE_SPLITS)
    counts = [max(1, round(n * k / total)) for _, k in KAGGLE_SPLITS]
    counts[0] = n - sum(counts[1:])
    out, sid = [], 1
    for (name, _), count in zip(KAGGLE_SPLITS, counts):
        for _ in range(count):
            out.append((sid, name))
            sid += 1
    return out


def assign_defects(params: PhantomParams) -> dict[int, list[str]]:
    """Disjoint sets of subjects per defect, round(rate * subjects) each, chosen by the seed."""
    rng = np.random.default_rng([params.seed, 7919])
    order = list(rng.permutation(np.arange(1, params.subjects + 1)))
    out: dict[int, list[str]] = {}
    for name in DEFECTS:
        for _ in range(round(params.defect_rates.get(name, 0.0) * params.subjects)):
            out[int(order.pop())] = [name]
    return out


def assign_truncation(params: PhantomParams) -> dict[int, str]:
    """Disjoint sets of subjects whose stack misses the apex or the base, round(rate * subjects) each, chosen by
    the seed (its own draw: the defect subjects and every other subject stay as they were)."""
    rng = np.random.default_rng([params.seed, 104729])
    order = list(rng.permutation(np.arange(1, params.subjects + 1)))
    return {int(order.pop()): end for end in TRUNCATED_ENDS
            for _ in range(round(params.truncated.get(end, 0.0) * params.subjects))}


def cut_stack(heart: anatomy.Heart, z_axis: list[float], end: str) -> list[float]:
    """The slice heights left of a stack whose ``end`` was not acquired. apex: every slice that is out-of-apical
    at ED or at ES goes, and the first slice with a blood pool after them (so neither phase reaches beyond the
    apex); base: every out-of-basal slice at either phase and the last slice with a pool before them. The stack
    is left whole if fewer than MIN_CUT_SLICES would remain."""
    labels = [[anatomy.slice_label(heart, phi, z) for z in z_axis] for phi in (0.0, 1.0)]
    if end == "apex":
        kept = z_axis[max(next((k for k, x in enumerate(ls) if x != "oap"), len(z_axis)) for ls in labels) + 1:]
    else:
        kept = z_axis[:min(max((k for k, x in enumerate(ls) if x != "obs"), default=0) for ls in labels)]
    return kept if len(kept) >= MIN_CUT_SLICES else z_axis


def _choice(rng: np.random.Generator, options: list, p: list[float]):
    return options[int(rng.choice(len(options), p=p))]


def frame_phase(frame: int, ed: int, es: int, frames: int) -> float:
    """Contraction phi in [0, 1] of a 1-based frame: 0 at ED, 1 at ES, smooth (cosine) in between."""
    c = ((frame - ed) % frames) / frames
    t_es = ((es - ed) % frames) / frames
    if c <= t_es:
        return float(0.5 * (1 - np.cos(np.pi * c / t_es)))
    return float(0.5 * (1 + np.cos(np.pi * (c - t_es) / (1 - t_es))))


def plan_subject(sid: int, defects: list[str], params: PhantomParams, truncate: str = "") -> dict:
    """Draw everything random about one subject except image noise (anatomy, geometry, numbering); ``truncate``
    (apex or base): the stack stops short of that end (cut_stack)."""
    rng = np.random.default_rng([params.seed, sid])
    heart = anatomy.sample_heart(rng)
    lv, normal = geometry.sample_frame(rng)
    F = params.frames
    ed = (int(rng.integers(-2, 3)) % F) + 1  # ED at frame 1 +/- 2
    es = ((ed - 1 + round(rng.uniform(0.30, 0.40) * F)) % F) + 1  # ES at 30-40 % of the cycle
    step = _choice(rng, [10.0, float(rng.uniform(8, 9)), float(rng.uniform(5, 6))], [0.92, 0.06, 0.02])
    thickness = min(float(rng.uniform(6, 8)), step + 1)
    spacing = float(rng.uniform(1.25, 1.65)) if rng.random() < 0.85 else float(rng.uniform(0.6, 2.0))
    rows, cols = _choice(rng, [(256, 192), (192, 256), (256, 256), (256, 216), (224, 256)], [0.45, 0.35, 0.08, 0.06, 0.06])
    fov = max(rows, cols) * spacing
    if fov < 230:  # keep the heart in view at fine pixel spacing: grow the matrix instead
        scale = 230 / fov
        rows, cols = int(rows * scale) // 2 * 2, int(cols * scale) // 2 * 2
    row, col = geometry.sax_orientation(rng, normal)
    cos_t = float(np.dot(lv.d, normal))

    # Stack extent from below the apex to above the base (sets the class balance, Table 3).
    ed_state = anatomy.heart_state(heart, 0.0)
    first = ed_state.apex_z - rng.uniform(2.0, 20.0)
    last = ed_state.base_z + rng.uniform(10.0, 30.0)
    n = int(np.clip(np.floor((last - first) / step) + 1, 8, 25))
    # Slice k crosses the LV axis at height z_k; positions along the stack normal step exactly.
    z_axis = [(first + k * step) for k in range(n)]
    if truncate:
        z_axis = cut_stack(heart, z_axis, truncate)
        truncated = truncate if len(z_axis) < n else ""
        n = len(z_axis)
    else:
        truncated = ""
    shift = (float(rng.uniform(-25, 25)), float(rng.uniform(-25, 25)))
    planes = [
        geometry.plane_through(lv.origin + z / cos_t * lv.d, row, col, spacing, rows, cols, shift)
        for z in z_axis
    ]

    look = {
        "myo_level": float(rng.uniform(160, 300)),
        "noise": float(rng.uniform(0.06, 0.16)),
        "bias": float(rng.uniform(0.15, 0.45)),
        "bias_phase": float(rng.uniform(0, 2 * np.pi)),
    }
    descending = rng.random() < 0.3  # folder numbers run base -> apex in some studies
    counter = int(rng.integers(2, 60))
    la_first = rng.random() < 0.6
    numbers: dict[str, int] = {}
    if la_first:
        numbers["2ch"], numbers["4ch"] = counter, counter + 1
        counter += 2 + int(rng.integers(0, 4))
    sax_numbers = [counter + k for k in range(n)]
    if descending:
        sax_numbers = sax_numbers[::-1]
    counter += n + int(rng.integers(0, 3))
    if not la_first:
        numbers["2ch"], numbers["4ch"] = counter, counter + 1

    patient = dicomio.Patient(
        patient_id=str(sid),
        age=f"{int(rng.integers(18, 88)):03d}Y",
        sex="M" if rng.random() < 0.6 else "F",
        rr_ms=float(rng.uniform(700, 1100)),
        study_uid=dicomio.uid(params.seed, sid, "study"),
        frame_uid=dicomio.uid(params.seed, sid, "frame"),
    )
    sl_sign = _choice(rng, [1.0, -1.0], [0.6, 0.4])
    sl_offset = float(rng.uniform(-80, 80))
    black = "black" in defects

    # Defect details (paper exclusion rules 1-3), chosen per subject.
    dup_k = int(rng.integers(1, n - 1)) if "duplicate" in defects else -1
    dup_second_series = rng.random() < 0.5
    short_k = int(rng.integers(0, n)) if "inconsistent" in defects else -1
    short_frames = F - int(rng.integers(2, max(3, F // 3)))
    missing_k = int(rng.integers(1, n - 1)) if "noncontiguous" in defects else -1
    # late_repeat: the most apical slice and one mid slice acquired again, stored after the run's last number.
    late = {0: 0, n // 2: 1} if "late_repeat" in defects else {}

    late_numbers = {k: max(sax_numbers) + 20 + 19 * i for k, i in late.items()}
    labels = [
        {"subject": sid, "series": f"sax_{number}", "frame": frame, "label": anatomy.slice_label(heart, phi, z_axis[k])}
        for k in range(n) for frame, phi in ((ed, 0.0), (es, 1.0))
        for number in (sax_numbers[k], *([late_numbers[k]] if k in late_numbers else []))
    ]
    return {k: v for k, v in locals().items() if k not in ("rng", "params", "sid")}
