"""Write phantom images as valid MR Image Storage DICOM files (deterministic UIDs, no timestamps), or
re-export them as Enhanced MR multi-frame files and in compressed transfer syntaxes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from saxlevel.phantom.geometry import Plane

UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's registered root


def uid(*parts: object) -> UID:
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


# --- other export forms of the same images: enhanced multi-frame MR, compressed transfer syntaxes ------

# phantom.transfer_syntax names -> DICOM transfer syntaxes (all lossless: the levels must not change).
TRANSFER_SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "deflate": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg-lossless": JPEGLosslessSV1,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}
FORMATS = ("classic", "enhanced", "clinical")


def to_enhanced(files: list[Path], path: Path) -> None:
    """Write the classic single-frame images ``files`` (one slice's cine, or any set) as one Enhanced MR
    Image Storage file: geometry and timing move into the per-frame functional groups, as current scanners
    export them. Frames keep the order of ``files``; TemporalPositionIndex is each file's InstanceNumber."""
    sources = [pydicom.dcmread(f) for f in files]
    first = sources[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid(first.SeriesInstanceUID, "enhanced", path.name)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    for keyword in ("SpecificCharacterSet", "StudyDate", "Modality", "Manufacturer", "PatientName", "PatientID",
                    "PatientAge", "PatientSex", "PatientPosition", "StudyInstanceUID", "SeriesInstanceUID",
                    "StudyID", "SeriesNumber", "AcquisitionNumber", "SeriesDescription", "FrameOfReferenceUID",
                    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation"):
        if keyword in first:
            setattr(ds, keyword, first[keyword].value)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(sources)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for src in sources:
        item = Dataset()
        position, orientation, content, cardiac = Dataset(), Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = src.ImagePositionPatient
        orientation.ImageOrientationPatient = src.ImageOrientationPatient
        content.TemporalPositionIndex = int(src.InstanceNumber)
        content.FrameAcquisitionNumber = int(src.get("AcquisitionNumber", 1))
        cardiac.NominalCardiacTriggerDelayTime = src.get("TriggerTime", "0")
        item.PlanePositionSequence = Sequence([position])
        item.PlaneOrientationSequence = Sequence([orientation])
        item.FrameContentSequence = Sequence([content])
        item.CardiacSynchronizationSequence = Sequence([cardiac])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = b"".join(src.PixelData for src in sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def transcode(path: Path, syntax: str, out: Path | None = None) -> None:
    """Rewrite one file (in place, or to ``out``) in the lossless transfer syntax ``syntax`` (a key of
    TRANSFER_SYNTAXES). GDCM encodes the JPEG family (pydicom has no JPEG Lossless encoder, its JPEG-LS one
    needs pyjpegls, and its JPEG 2000 one refuses images smaller than its resolution levels); pydicom
    writes RLE and deflate."""
    if syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer syntax must be one of {sorted(TRANSFER_SYNTAXES)}, got {syntax!r}")
    out = out or path
    target = TRANSFER_SYNTAXES[syntax]
    if syntax in ("jpeg-lossless", "jpeg-ls", "jpeg2000"):
        try:
            import gdcm
        except ImportError:
            raise ValueError(f"writing {syntax} needs GDCM: pip install python-gdcm (in requirements.txt)") from None

        gdcm_syntax = {"jpeg-lossless": gdcm.TransferSyntax.JPEGLosslessProcess14_1,
                       "jpeg-ls": gdcm.TransferSyntax.JPEGLSLossless,
                       "jpeg2000": gdcm.TransferSyntax.JPEG2000Lossless}[syntax]
        reader = gdcm.ImageReader()
        reader.SetFileName(str(path))
        if not reader.Read():
            raise ValueError(f"GDCM cannot read {path}")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm_syntax))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise ValueError(f"GDCM cannot encode {path} as {syntax}")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(out))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise ValueError(f"GDCM cannot encode {path} as {syntax}")
        return
    ds = pydicom.dcmread(path)
    if syntax == "deflate":
        ds.file_meta.TransferSyntaxUID = target
    elif syntax != "explicit":
        ds.compress(target)
    ds.save_as(out, enforce_file_format=True)


def export_study(study: Path, form: str = "classic", syntax: str = "explicit") -> None:
    """Re-export a written study in place: ``form`` 'enhanced' merges each series of each folder into one
    Enhanced MR file (IM-<series>.dcm); ``syntax`` transcodes every file (see TRANSFER_SYNTAXES). The
    'clinical' form moves the study to another folder: see to_clinical."""
    if form not in FORMATS or form == "clinical":
        raise ValueError(f"phantom format must be one of {FORMATS}, got {form!r}")
    for folder in sorted(p for p in study.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.dcm"))
        if form == "enhanced":
            by_series: dict[str, list[Path]] = {}
            for f in files:
                by_series.setdefault(f.name.split("-")[1], []).append(f)
            for series, group in by_series.items():
                to_enhanced(group, folder / f"IM-{series}.dcm")
            for f in files:
                f.unlink()
            files = sorted(folder.glob("*.dcm"))
        if syntax != "explicit":
            for f in files:
                transcode(f, syntax)


CLINICAL_SAX_SERIES = 300  # the series number GE gave the cine of the Sunnybrook export


def to_clinical(study: Path, out: Path, apex_to_base: list[str], syntax: str = "explicit") -> dict[str, str]:
    """Re-export a Kaggle-layout study as a clinic's PACS export (the Sunnybrook GE studies' form) into ``out``:
    every file in one folder, named 1.dcm, 2.dcm, ...; all SAX slices in one series (SeriesNumber 300, empty
    SeriesDescription) numbered over the whole series (InstanceNumber slice-major, base first, as GE does), each
    classic file carrying a vestigial, empty PerFrameFunctionalGroupsSequence; the long-axis series as they were;
    and a three-plane localizer (one image per plane) as series 1. A second series in a sax folder (a repeated
    acquisition) keeps its own series. Returns {sax_N: slice_K} (K = rank apex->base), the names the indexer
    gives the slices."""
    out.mkdir(parents=True, exist_ok=True)
    names = {folder: f"slice_{k}" for k, folder in enumerate(apex_to_base)}
    sax_uid: UID | None = None
    files: list[Dataset] = []  # in file order
    instance = 0
    for name in reversed(apex_to_base):  # base first
        primary = int(name.split("_")[1])
        for f in sorted((study / name).glob("*.dcm")):
            ds = pydicom.dcmread(f)
            if int(ds.SeriesNumber) == primary:
                sax_uid = sax_uid or uid(ds.StudyInstanceUID, "clinical", "sax")
                ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = sax_uid, CLINICAL_SAX_SERIES, ""
                parts = f.stem.split("-")
                if len(parts) < 4 or parts[3] == "0001":  # a same-series repeat (IM-s-f-rep) shares its number
                    instance += 1
                ds.InstanceNumber = instance
                ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset()])
            files.append(ds)
    lax = sorted(p for p in study.iterdir() if p.is_dir() and not p.name.startswith("sax_"))
    for folder in lax:
        files += [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]
    mid = apex_to_base[len(apex_to_base) // 2]
    planes = [sorted((study / mid).glob("*.dcm"))[0]] + [sorted(folder.glob("*.dcm"))[0] for folder in lax]
    for k, f in enumerate(planes):
        scout = pydicom.dcmread(f)
        scout.SeriesInstanceUID, scout.SeriesNumber = uid(scout.StudyInstanceUID, "clinical", "localizer"), 1
        scout.SeriesDescription, scout.InstanceNumber, scout.TriggerTime = "Localizer", k + 1, "0"
        scout.SOPInstanceUID = scout.file_meta.MediaStorageSOPInstanceUID = uid(scout.SeriesInstanceUID, k)
        files.insert(k, scout)
    for n, item in enumerate(files, start=1):
        path = out / f"{n}.dcm"
        item.save_as(path, enforce_file_format=True)
        if syntax != "explicit":
            transcode(path, syntax)
    return names
