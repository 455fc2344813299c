"""Finds the DICOM series under a folder and loads each as a Volume, with the geometry checked.

Grouping: files are grouped by SeriesInstanceUID and split further when ImageOrientationPatient or the
matrix size differ inside a series. Geometry: slices are sorted by ImagePositionPatient projected on the
slice normal (never by InstanceNumber); the slice spacing comes from those positions (SliceThickness is
the thickness, which may be less than the spacing). A series with duplicated positions, missing slices or
uneven spacing is refused with the reason. Pixel data in compressed transfer syntaxes (JPEG-LS,
JPEG 2000, RLE) is decoded through the pylibjpeg plugins; RescaleSlope/Intercept are applied.
Every file ends up in exactly one series or one failure.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from data_prep.canonical import Volume

SPACING_TOLERANCE = 0.05  # relative deviation of a slice gap from the median that counts as uneven
ORIENTATION_DECIMALS = 4


class SeriesError(ValueError):
    """A series that cannot become a volume. str() names the series and files; `reason` alone holds no
    identifier (no UID, no path), so it may go into de-identified outputs."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class SeriesFiles:
    series_uid: str
    files: tuple[Path, ...]
    orientation: tuple[float, ...]  # ImageOrientationPatient, rounded
    part: int  # 0 unless one SeriesInstanceUID held several orientations or matrix sizes


@dataclasses.dataclass(frozen=True)
class FileFailure:
    path: Path
    reason: str


def find_series(root: Path) -> tuple[list[SeriesFiles], list[FileFailure]]:
    """Every file under `root`: grouped into image series, or a failure with its reason."""
    groups: dict[tuple, list[Path]] = defaultdict(list)
    failures = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as error:
            failures.append(FileFailure(path, f"not a readable DICOM file ({type(error).__name__}: {error})"))
            continue
        if "SeriesInstanceUID" not in header or "ImageOrientationPatient" not in header \
                or "ImagePositionPatient" not in header or "PixelSpacing" not in header:
            missing = [k for k in ("SeriesInstanceUID", "ImageOrientationPatient", "ImagePositionPatient",
                                   "PixelSpacing") if k not in header]
            failures.append(FileFailure(path, f"no image geometry: {', '.join(missing)} missing "
                                              f"(SOP class {header.get('SOPClassUID', '?')})"))
            continue
        orientation = tuple(round(float(v), ORIENTATION_DECIMALS) for v in header.ImageOrientationPatient)
        key = (str(header.SeriesInstanceUID), orientation, int(header.Rows), int(header.Columns))
        groups[key].append(path)
    series = []
    parts: dict[str, int] = defaultdict(int)
    for (uid, orientation, _, _), files in sorted(groups.items(), key=lambda item: (item[0][0], str(item[1][0]))):
        series.append(SeriesFiles(uid, tuple(files), orientation, parts[uid]))
        parts[uid] += 1
    return series, failures


def is_sagittal(orientation: tuple[float, ...], max_angle_deg: float = 30.0) -> bool:
    """True when the slice normal lies within `max_angle_deg` of the left-right axis."""
    normal = np.cross(orientation[:3], orientation[3:])
    return abs(normal[0]) / np.linalg.norm(normal) >= np.cos(np.radians(max_angle_deg))


def load_series(series: SeriesFiles) -> Volume:
    """The series as a Volume [slice along the normal, row, column] float32 with affine_lps.

    Raises SeriesError naming the series and the reason when its geometry or pixels are unusable.
    """
    name = f"series {series.series_uid} ({len(series.files)} files under {series.files[0].parent})"
    datasets = []
    for path in series.files:
        try:
            datasets.append(pydicom.dcmread(path))
        except Exception as error:  # noqa: BLE001 - any unreadable file fails its series
            raise SeriesError(f"{name}, {path.name}", f"a file cannot be read ({type(error).__name__})") from error
    # Geometry from the full-precision header (the grouping key is rounded).
    orientation = np.array(datasets[0].ImageOrientationPatient, float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    position = np.array([np.dot(np.array(d.ImagePositionPatient, float), normal) for d in datasets])
    order = np.argsort(position, kind="stable")
    datasets, position = [datasets[i] for i in order], position[order]
    if len(datasets) > 1:
        gaps = np.diff(position)
        if (gaps < 1e-3).any():
            raise SeriesError(name, f"{int((gaps < 1e-3).sum())} duplicated slice position(s)")
        spacing = float(np.median(gaps))
        if (gaps > 1.5 * spacing).any():
            missing = int(np.round(gaps[gaps > 1.5 * spacing] / spacing - 1).sum())
            raise SeriesError(name, f"about {missing} missing slice(s) (gap of {gaps.max():.2f} mm "
                                    f"against {spacing:.2f} mm spacing)")
        if (np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing).any():
            raise SeriesError(name, f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm)")
    else:
        spacing = float(datasets[0].get("SpacingBetweenSlices", datasets[0].get("SliceThickness", 1.0)))
    slices = []
    for d in datasets:
        try:
            pixels = d.pixel_array.astype(np.float32)
        except Exception as error:  # noqa: BLE001 - decoder errors come in many types
            raise SeriesError(name, f"pixel data cannot be decoded ({d.file_meta.TransferSyntaxUID.name}: "
                                    f"{type(error).__name__})") from error
        slope, intercept = float(d.get("RescaleSlope", 1.0)), float(d.get("RescaleIntercept", 0.0))
        slices.append(pixels * slope + intercept)
    data = np.stack(slices)
    if not np.isfinite(data).all():
        raise SeriesError(name, "pixel data holds NaN or infinite values")
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = normal * spacing
    affine[:3, 1] = col_dir * row_spacing
    affine[:3, 2] = row_dir * col_spacing
    affine[:3, 3] = np.array(datasets[0].ImagePositionPatient, float)
    return Volume(data, affine)
