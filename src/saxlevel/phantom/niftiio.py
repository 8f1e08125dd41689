"""Write a phantom subject as ACDC ships its patients: NIfTI volumes at ED and ES with expert-style segmentations.

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
