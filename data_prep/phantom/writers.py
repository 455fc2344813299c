"""Writes a rendered series as real files: one DICOM MR Image Storage file per slice, or NIfTI-1.

Both carry the same stored integers and the same rescale (DICOM RescaleSlope/Intercept, NIfTI
scl_slope/scl_inter), so a DICOM and a NIfTI of one phantom decode to identical voxels. Output bytes
depend only on the inputs (no clocks, no random file names), and each file is written to a temporary
name and renamed, so a killed run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, MRImageStorage

from data_prep.phantom.acquisition import SITE_PROTOCOLS, Acquisition

UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs


@dataclasses.dataclass(frozen=True)
class Identity:
    """The (fake) identifying and study fields of one series."""

    patient_name: str
    patient_id: str
    birth_date: str  # YYYYMMDD
    sex: str
    age_years: int
    accession: str
    study_date: str  # YYYYMMDD
    study_uid: str
    series_uid: str
    frame_uid: str
    series_number: int
    institution: str


def make_uid(*parts: object) -> str:
    """A valid DICOM UID derived only from `parts` (same parts, same UID)."""
    # generate_uid joins its sources without a separator ('a', '12' == 'a1', '2'): join them ourselves.
    return pydicom.uid.generate_uid(prefix=UID_ROOT, entropy_srcs=["\x1f".join(str(p) for p in parts)])


def atomic_write(path: Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def to_stored(image: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Scanner values to the stored uint16 that RescaleSlope/Intercept map back: v = s * slope + inter."""
    stored = np.rint((image - acq.rescale_intercept) / acq.rescale_slope)
    return np.clip(stored, 0, 65535).astype(np.uint16)


def write_dicom_series(folder: Path, stored: np.ndarray, acq: Acquisition, who: Identity,
                       file_names: list[str]) -> list[Path]:
    """Writes `stored` [n_slices, rows, cols] uint16 (slices along the normal) as one file per slice.

    Files are named `file_names[instance - 1]` under `folder`; InstanceNumber follows
    acq.instance_order (acquisition order), not position. Returns the paths written.
    """
    proto = SITE_PROTOCOLS[acq.site]
    positions = acq.slice_positions()
    syntax = getattr(pydicom.uid, acq.transfer_syntax)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()  # the series' shared fields, set once; each slice then sets its own
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = who.study_date
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.AccessionNumber = who.accession
    ds.Modality = "MR"
    ds.Manufacturer, ds.ManufacturerModelName = proto.manufacturer, proto.model
    ds.InstitutionName = who.institution
    ds.ReferringPhysicianName = "REFERRER^ORTHO"
    ds.StudyDescription = "MRI WHOLE SPINE"
    ds.SeriesDescription = "T2 TSE SAG WHOLE SPINE"
    ds.PatientName = who.patient_name
    ds.PatientID = who.patient_id
    ds.PatientBirthDate = who.birth_date
    ds.PatientSex = who.sex
    ds.PatientAge = f"{who.age_years:03d}Y"
    ds.BodyPartExamined = "SPINE"
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "SK", "2D"
    ds.SliceThickness = f"{acq.slice_thickness:g}"
    ds.SpacingBetweenSlices = f"{acq.slice_spacing:g}"
    ds.RepetitionTime, ds.EchoTime = "3500", "95"
    ds.MagneticFieldStrength = f"{proto.field_strength:g}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = who.study_uid, who.series_uid
    ds.StudyID = who.accession[-6:]
    ds.SeriesNumber = who.series_number
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*acq.row_dir, *acq.col_dir)]
    ds.FrameOfReferenceUID = who.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = acq.rows, acq.cols
    ds.PixelSpacing = [f"{acq.row_spacing:g}", f"{acq.col_spacing:g}"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = "600", "1200"
    ds.RescaleIntercept = f"{acq.rescale_intercept:g}"
    ds.RescaleSlope = f"{acq.rescale_slope:g}"
    ds.RescaleType = "US"
    paths = []
    for instance, k in enumerate(acq.instance_order, start=1):
        sop_uid = make_uid(who.series_uid, k)
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [f"{v:.4f}" for v in positions[k]]
        ds.SliceLocation = f"{float(np.dot(positions[k], acq.normal)):.4f}"
        pixels = np.ascontiguousarray(stored[k])
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        if syntax.is_compressed:
            ds.compress(syntax, pixels, encoding_plugin="pylibjpeg" if syntax == pydicom.uid.RLELossless else "",
                        generate_instance_uid=False)  # pydicom would draw a random new SOPInstanceUID
        else:
            meta.TransferSyntaxUID = syntax
            ds.PixelData = pixels.tobytes()
        buffer = pydicom.filebase.DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path = folder / file_names[instance - 1]
        atomic_write(path, buffer.getvalue())
        paths.append(path)
    return paths


def nifti_affine_ras(acq: Acquisition, shape_kji: tuple[int, int, int]) -> np.ndarray:
    """4x4 voxel -> RAS mm affine of the NIfTI array laid out by acq.nifti_axes / nifti_flips."""
    lps = acq.affine_lps()  # columns: steps of i, j, k
    step_of_volume_axis = {0: lps[:3, 2], 1: lps[:3, 1], 2: lps[:3, 0]}  # volume axes (k, j, i)
    affine = np.eye(4)
    origin = lps[:3, 3].copy()
    for a, (axis, flip) in enumerate(zip(acq.nifti_axes, acq.nifti_flips)):
        step = step_of_volume_axis[axis]
        if flip:
            origin = origin + (shape_kji[axis] - 1) * step
            step = -step
        affine[:3, a] = step
    affine[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS


def to_nifti_layout(volume_kji: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Volume [k, j, i] to the NIfTI array layout of this series."""
    array = np.transpose(volume_kji, acq.nifti_axes)
    for a, flip in enumerate(acq.nifti_flips):
        if flip:
            array = np.flip(array, axis=a)
    return np.ascontiguousarray(array)


def nifti_bytes(volume_kji: np.ndarray, acq: Acquisition, slope: float = 1.0, inter: float = 0.0) -> bytes:
    """A .nii.gz file's bytes for `volume_kji` (uint8 labels or uint16 stored values)."""
    image = nib.Nifti1Image(to_nifti_layout(volume_kji, acq), nifti_affine_ras(acq, volume_kji.shape))
    image.header.set_data_dtype(volume_kji.dtype)
    image.header.set_slope_inter(slope, inter)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_qform(image.affine, code=1)
    image.header.set_sform(image.affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0)  # mtime 0: same bytes every run
