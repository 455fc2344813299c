"""A minimal, independent DICOM series reader for the tests (geometry from IPP/IOP, never InstanceNumber)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom


def series_files(root: Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID -> files, for every DICOM file under `root`."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        groups[str(header.SeriesInstanceUID)].append(path)
    return dict(groups)


def read_series(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, list[pydicom.Dataset]]:
    """(volume [k, j, i] float64 with rescale applied, affine LPS of (i, j, k), datasets in k order)."""
    datasets = [pydicom.dcmread(p) for p in paths]
    iop = np.array(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    positions = np.array([d.ImagePositionPatient for d in datasets], float)
    volume = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_spacing
    affine[:3, 1] = iop[3:] * row_spacing
    affine[:3, 2] = (positions[-1] - positions[0]) / max(len(datasets) - 1, 1)
    affine[:3, 3] = positions[0]
    return volume, affine, datasets


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def values_at_world(volume_kji: np.ndarray, affine_lps_ijk: np.ndarray, nifti_image) -> tuple[np.ndarray, np.ndarray]:
    """Compares a [k, j, i] volume with a NIfTI image voxel by voxel through world coordinates.

    Returns (volume values, NIfTI values) at every voxel of the volume; raises if the grids differ.
    """
    k, j, i = np.meshgrid(*(np.arange(n) for n in volume_kji.shape), indexing="ij")
    ijk1 = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    world_ras = LPS_TO_RAS @ affine_lps_ijk @ ijk1
    voxel = np.linalg.inv(nifti_image.affine) @ world_ras
    rounded = np.rint(voxel[:3]).astype(int)
    if np.abs(voxel[:3] - rounded).max() > 1e-2:
        raise AssertionError(f"grids differ by up to {np.abs(voxel[:3] - rounded).max():.3f} voxel")
    data = nifti_image.get_fdata()  # applies scl_slope / scl_inter
    return volume_kji.ravel(), data[rounded[0], rounded[1], rounded[2]]
