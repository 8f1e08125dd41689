"""Write a phantom subject as ACDC or M&Ms-2 ship theirs: NIfTI volumes at ED and ES with expert-style segmentations.

M&Ms-2 (write_mnms2_subject): OUT/Training/<id>/<id>_SA_ED.nii.gz, _SA_ES, each with _gt (M&Ms label values:
1 LV cavity, 2 myocardium, 3 RV), the 4-D <id>_SA_CINE.nii.gz and one-slice long-axis <id>_LA_ED / _LA_ES with _gt.

OUT/training/patientNNNN/patientNNNN_frameFF.nii.gz (rows x columns x slices, int16), the same name with _gt
(uint8, ACDC label values, phantom.anatomy.segment), and Info.cfg (``ED: F``, ``ES: F``). The affine maps voxel
(i, j, k) = (row, column, slice) to NIfTI's RAS+ world from the DICOM geometry the other formats write (LPS):
column 0 = spacing x the column direction, column 1 = spacing x the row direction, column 2 = the step between
slice origins, column 3 = the first slice's ImagePositionPatient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# NIfTI's world axes run to the patient's right and anterior, DICOM's to the left and posterior (LPS = diag(-1, -1,
# 1) RAS, its own inverse; sources.nifti reads with the same matrix).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def affine(planes: list) -> np.ndarray:
    """The RAS+ voxel-to-world affine of a stack of equally spaced, parallel phantom planes (geometry.Plane)."""
    first = planes[0]
    step = planes[1].ipp - first.ipp if len(planes) > 1 else first.normal * 10.0
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = first.spacing * first.col, first.spacing * first.row, step, first.ipp
    out = np.eye(4)
    out[:3] = RAS_TO_LPS @ lps[:3]  # the same diagonal turns LPS into RAS
    return out


def write_volume(path: Path, data: np.ndarray, aff: np.ndarray) -> None:
    """One NIfTI-1 file (gzip-compressed by its .nii.gz name), written atomically."""
    import nibabel as nib

    img = nib.Nifti1Image(data, aff)
    img.set_sform(aff, code=1)  # scanner-anatomical
    img.set_qform(aff, code=1)
    img.header.set_xyzt_units("mm", "msec")
    tmp = path.with_name(path.name.replace(".nii", ".tmp.nii"))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(tmp))
    tmp.replace(path)


def write_acdc_subject(folder: Path, name: str, frames: dict[int, tuple[np.ndarray, np.ndarray]], ed: int, es: int,
                       aff: np.ndarray) -> list[Path]:
    """Write ``frames`` ({frame: (image (rows, cols, slices), segmentation)}) and Info.cfg; returns the files."""
    written = []
    for frame, (image, seg) in sorted(frames.items()):
        for suffix, data in (("", image.astype(np.int16)), ("_gt", seg.astype(np.uint8))):
            path = folder / f"{name}_frame{frame:02d}{suffix}.nii.gz"
            write_volume(path, data, aff)
            written.append(path)
    (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\n")
    return written


# ACDC's label values (phantom.anatomy.segment: 1 RV, 2 myocardium, 3 LV cavity) to M&Ms' (1 LV, 2 myocardium, 3 RV).
ACDC_TO_MNMS = np.array([0, 3, 2, 1], dtype=np.uint8)


def write_mnms2_subject(folder: Path, name: str, ed: tuple[np.ndarray, np.ndarray], es: tuple[np.ndarray, np.ndarray],
                        cine: np.ndarray, la: dict[str, tuple[np.ndarray, np.ndarray]], aff: np.ndarray,
                        la_aff: np.ndarray, defects: list[str] = ()) -> list[Path]:  # type: ignore[assignment]
    """Write one subject in M&Ms-2's layout; ``defects`` (phantom.plan.MNMS2_DEFECTS) write the broken cases:
    missing_gt (no SA_ED_gt), gt_shape (SA_ES_gt one slice short), la_only (LA files only), cine_only (no
    per-phase SA volumes)."""
    files: list[tuple[str, np.ndarray, np.ndarray]] = []
    if "la_only" not in defects:
        if "cine_only" not in defects:
            for phase, (image, seg) in (("ED", ed), ("ES", es)):
                files.append((f"SA_{phase}", image.astype(np.int16), aff))
                seg = ACDC_TO_MNMS[seg]
                if phase == "ES" and "gt_shape" in defects:
                    seg = seg[..., :-1]
                if not (phase == "ED" and "missing_gt" in defects):
                    files.append((f"SA_{phase}_gt", seg.astype(np.uint8), aff))
        files.append(("SA_CINE", cine.astype(np.int16), aff))
    for phase, (image, seg) in la.items():
        files += [(f"LA_{phase}", image.astype(np.int16), la_aff), (f"LA_{phase}_gt", ACDC_TO_MNMS[seg], la_aff)]
    written = []
    for part, data, a in files:
        path = folder / f"{name}_{part}.nii.gz"
        write_volume(path, data, a)
        written.append(path)
    return written
