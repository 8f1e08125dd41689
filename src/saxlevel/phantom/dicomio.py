"""Write phantom images as valid MR Image Storage DICOM files (deterministic UIDs, no timestamps)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

from saxlevel.phantom.geometry import Plane

UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's registered root


def uid(*parts: object) -> str:
    """A UID derived from ``parts`` (same parts -> same UID, so output is byte-identical per seed)."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["saxlevel-phantom", *map(str, parts)])


@dataclass(frozen=True)
class Patient:
    """Study-level attributes shared by all files of one subject."""

    patient_id: str
    age: str
    sex: str
    rr_ms: float
    study_uid: str
    frame_uid: str


def _ds(values: list[float]) -> list[str]:
    """DICOM decimal strings (at most 16 characters)."""
    return [f"{x:.6g}" for x in values]


def write_image(
    path: Path, patient: Patient, pixels: np.ndarray, *, plane: Plane, frame: int, frames: int,
    thickness: float, series: int, acquisition: int, slice_location: float, description: str,
) -> None:
    """Write one 16-bit (12 bits stored) MR image with consistent geometry tags."""
    path.parent.mkdir(parents=True, exist_ok=True)
    series_uid = uid(patient.study_uid, "series", series)
    sop_uid = uid(series_uid, frame, path.name)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20150101"
    ds.Modality = "MR"
    ds.Manufacturer = "saxlevel phantom"
    ds.PatientName = f"Phantom^{patient.patient_id}"
    ds.PatientID = patient.patient_id
    ds.PatientAge = patient.age
    ds.PatientSex = patient.sex
    ds.PatientPosition = "HFS"
    ds.ScanningSequence = "GR"
    ds.SequenceName = "*tfi2d1"
    ds.SliceThickness = f"{thickness:.4g}"
    ds.RepetitionTime = "3.2"
    ds.EchoTime = "1.6"
    ds.NominalInterval = f"{patient.rr_ms:.0f}"
    ds.CardiacNumberOfImages = frames
    ds.TriggerTime = f"{(frame - 1) * patient.rr_ms / frames:.2f}"
    ds.StudyInstanceUID = patient.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series
    ds.AcquisitionNumber = acquisition
    ds.InstanceNumber = frame
    ds.SeriesDescription = description
    ds.ImagePositionPatient = _ds(list(plane.ipp))
    ds.ImageOrientationPatient = _ds(list(plane.row) + list(plane.col))
    ds.FrameOfReferenceUID = patient.frame_uid
    ds.SliceLocation = f"{slice_location:.6g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = _ds([plane.spacing, plane.spacing])
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
