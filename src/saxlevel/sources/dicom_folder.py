"""DICOM studies as clinics export them: one folder per subject, its files in any sub-layout and under any names.

No folder or file name is trusted (exports name files 1.dcm, IM0001, or by UID, and put a whole study in one
folder or one folder per series). The SAX cine is found from the headers:

1. every non-hidden file is read (DICOMDIR indexes are skipped; a file without the DICOM preamble that is not
   named like an image is recorded as ``not_dicom`` and ignored; a damaged file is dropped with its reason);
2. images are grouped by SeriesInstanceUID (else SeriesNumber) and, within a series, by orientation (a
   localizer series holds three planes);
3. a group with one image per position is not a cine (localizer, scout) and a group whose SeriesDescription
   names a long-axis view is not short-axis: both are left out, recorded as ``other_series``;
4. cine groups with parallel normals form candidate stacks (clinics often store each SAX slice as its own
   series); the stack with the most distinct positions along its normal is the SAX cine, the others are
   recorded as ``other_series``;
5. within the stack the slices are the distinct positions along the normal (apex first, named ``slice_K``),
   and the frames are the order of TriggerTime (then InstanceNumber, then file name) at each position
   (``dicomfile.number_frames``).

Then the same exclusion rules as the Kaggle trees apply (``rules.apply_rules``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saxlevel.sources import contract, dicomfile, rules

# A short-axis cine covers the LV with several slices; fewer distinct positions than this are not a SAX stack.
MIN_SAX_SLICES = 3
DICM_OFFSET = 128  # the "DICM" magic follows a 128-byte preamble (PS3.10 7.1)


def has_dicom_preamble(path: Path) -> bool:
    """Whether a file starts with the DICOM preamble and "DICM" (False where it cannot be read)."""
    try:
        with open(path, "rb") as fp:
            fp.seek(DICM_OFFSET)
            return fp.read(4) == b"DICM"
    except OSError:
        return False


def subject_files(folder: Path, problem: contract.Problem) -> list[Path]:
    """The files of one subject folder (recursively) that may be DICOM images; the others recorded."""
    unlisted: list[str] = []
    files = dicomfile.image_files(folder, recursive=True, any_name=True, unlisted=unlisted)
    for why in unlisted:
        problem("unreadable", why + "; skipped", "repaired")
    keep = []
    for f in files:
        # Names like 1.dcm, IM0001 or a bare UID are tried even without a preamble (old exports omit it, and a
        # damaged one is then named by the reader); other names must carry the DICOM magic.
        if dicomfile.is_image_name(f.name) or has_dicom_preamble(f) or not f.exists():
            keep.append(f)
        else:
            problem("not_dicom", f"{f}: no DICOM preamble (not a DICOM file); ignored", "ignored")
    return keep


def _orientation_groups(normals: np.ndarray) -> np.ndarray:
    """Group number of each unit normal: greedy, each joins the first group within MAX_NORMAL_ANGLE_DEG."""
    cos_max = np.cos(np.deg2rad(rules.MAX_NORMAL_ANGLE_DEG))
    heads: list[np.ndarray] = []
    out = np.zeros(len(normals), dtype=int)
    for i, n in enumerate(normals):
        for g, h in enumerate(heads):
            if abs(float(n @ h)) >= cos_max:
                out[i] = g
                break
        else:
            heads.append(n)
            out[i] = len(heads) - 1
    return out


def _describe(rows: list[dict]) -> str:
    first = rows[0]
    name = f"series {first['series_number']}" + (f" {first['description']!r}" if first["description"] else "")
    return f"{name} ({len(rows)} image(s), e.g. {Path(first['path']).name})"


def sax_stack(rows: list[dict], problem: contract.Problem) -> list[dict]:
    """The rows of the SAX cine stack among one subject's images (``series``/``slice`` set, apex first); every
    group left out is recorded as ``other_series`` with the reason."""
    if not rows:
        return []
    unit = np.stack([r["normal"] / np.linalg.norm(r["normal"]) for r in rows])
    series_key = [r["series_uid"] or f"#{r['series_number']}" for r in rows]
    groups: dict[tuple[str, int], list[int]] = {}
    for key in dict.fromkeys(series_key):
        members = [i for i, k in enumerate(series_key) if k == key]
        for g, i in zip(_orientation_groups(unit[members]), members):
            groups.setdefault((key, int(g)), []).append(i)
    cines: list[list[int]] = []
    for members in groups.values():
        part = [rows[i] for i in members]
        if not rules.is_sax_description(part[0]["description"]):
            problem("other_series", f"{_describe(part)}: a long-axis view by its SeriesDescription; ignored",
                    "ignored")
            continue
        places = _places(part, unit[members[0]])
        if np.bincount(places).max() < 2:
            problem("other_series", f"{_describe(part)}: one image per position, not a cine (a localizer or "
                    "scout); ignored", "ignored")
            continue
        cines.append(members)
    # Cine groups with parallel normals are one candidate stack (one series per slice is common).
    heads = np.stack([unit[m[0]] for m in cines]) if cines else np.zeros((0, 3))
    stacks: dict[int, list[int]] = {}
    for g, members in zip(_orientation_groups(heads), cines):
        stacks.setdefault(int(g), []).extend(members)
    candidates = []
    for members in stacks.values():
        part = [rows[i] for i in members]
        n_places = int(_places(part, unit[members[0]]).max()) + 1
        candidates.append((n_places, len(part), members))
    candidates.sort(key=lambda c: (-c[0], -c[1], c[2][0]))
    chosen = candidates[0] if candidates and candidates[0][0] >= MIN_SAX_SLICES else None
    for n_places, _, members in candidates[1 if chosen else 0:]:
        problem("other_series", f"{_describe([rows[i] for i in members])}: a cine with {n_places} position(s), "
                f"{'fewer than the SAX stack' if chosen else f'fewer than the {MIN_SAX_SLICES} a SAX stack needs'}"
                "; ignored", "ignored")
    if chosen is None:
        return []
    stack = [rows[i] for i in sorted(chosen[2])]
    for r, k in zip(stack, _places(stack, rules.oriented_normal(stack[0]["normal"]))):
        r["series"], r["slice"] = f"slice_{k}", int(k)
    return stack


def _places(rows: list[dict], normal: np.ndarray) -> np.ndarray:
    """Slice place number (0 = lowest position along ``normal``) of each row (see rules.position_clusters)."""
    n0 = rules.oriented_normal(normal)
    positions = np.array([float(r["ipp"] @ n0) for r in rows])
    thickness = np.array([r["slice_thickness"] for r in rows], dtype=float)
    return rules.position_clusters(positions, thickness)


def index_subject(study: contract.Study, policy: str = "paper",
                  drop_bad_files: bool = True) -> tuple[list[dict], list[dict], int]:
    """(kept image rows, records, files read) for one subject folder of a clinical export."""
    problems: list[dict] = []
    problem = contract.recorder(study.subject, problems)
    files = subject_files(study.path, problem)
    rows = rules.read_entries(study.subject, study.split, [(None, 0, f) for f in files], problem, drop_bad_files)
    if rules.mixed_patients(rows, problem):  # before the SAX series is chosen: another patient's must not win
        return [], problems, len(files)
    stack = sax_stack(rows, problem)
    if not stack:
        n_series = len({r["series_uid"] or r["series_number"] for r in rows})
        other = [p["detail"] for p in problems if p["rule"] == "not_dicom"]
        nifti = any(".nii" in d for d in other)
        problem("no_sax", f"no short-axis cine stack in {study.path} ({len(files)} file(s), {n_series} series, "
                "see the other_series records)" if rows else f"no readable DICOM image in {study.path}"
                + (f" ({len(other)} file(s) are not DICOM, e.g. {Path(other[0].split(': ')[0]).name}"
                   + ("; NIfTI is read where named as ACDC, M&Ms or UK Biobank name it" if nifti else "") + ")" if other else ""))
        return [], problems, len(files)
    return rules.apply_rules(study.subject, stack, problems, policy), problems, len(files)
