"""Finds the DICOM series under a folder and loads each as a Volume, with the geometry checked.

Slices: a classic file is one slice; an Enhanced MR or Legacy Converted Enhanced MR file (multi-frame, the
default of Philips and newer Siemens scanners) is one slice per frame, each with its own position,
orientation, pixel spacing and rescale from the per-frame functional groups (shared values from the
shared functional groups). Both kinds give the same Volume for the same scan. Siemens mosaics (slices tiled
in one image) are refused: convert them with dcm2niix first.

Grouping: slices are grouped by SeriesInstanceUID, orientation, matrix size and pixel spacing. When one
SeriesInstanceUID holds several groups (an axial localizer saved into the sagittal series), the sagittal
group with the most slices is the series (part 0) whatever the file order, and the others are split off
(part 1, 2, ...).
Slices of one SOPInstanceUID (and frame) are counted once: a byte copy or a symlink of a slice elsewhere in
the tree does not break its series. Orientation vectors off unit length by up to 5% (rounding by some
writers) are normalised; longer or shorter ones, and rows and columns that are not orthogonal, are refused.

Geometry: slices are sorted by ImagePositionPatient projected on the slice normal (never by
InstanceNumber); the slice spacing comes from those positions (SliceThickness is the thickness, which may
be less than the spacing). A series with duplicated positions, missing slices or uneven spacing is refused.
Pixel data in compressed transfer syntaxes (JPEG-LS, JPEG 2000, RLE) is decoded through the pylibjpeg
plugins; RescaleSlope/Intercept are applied per slice.

Every file ends up in exactly one series, as a duplicate of a counted slice, or as a failure with its code.
Failure messages are spinejax's words (spinejax.scans.refusal): no path, UID or header value.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from spinejax.scans import walk
from spinejax.scans.canonical import Volume
from spinejax.scans.refusal import Refusal

SPACING_TOLERANCE = 0.05  # relative deviation of a slice gap from the median that counts as uneven
ORIENTATION_DECIMALS = 4
UNIT_TOLERANCE = 0.05  # |length - 1| of an orientation vector that is normalised rather than refused
ORTHOGONAL_TOLERANCE = 0.01  # |cos| between row and column directions that still counts as orthogonal


class SeriesError(Refusal):
    """A series that cannot become a volume (code and message: spinejax.scans.refusal)."""


@dataclasses.dataclass(frozen=True)
class Slice:
    """One 2D image: a classic file (frame None) or one frame of a multi-frame file."""

    path: Path
    series_uid: str
    frame: int | None
    instance: str  # SOPInstanceUID, '#frame' for multi-frame files; the path when the UID is absent
    position: tuple[float, float, float]  # ImagePositionPatient, mm
    orientation: tuple[float, ...]  # ImageOrientationPatient, normalised: row direction, column direction
    pixel_spacing: tuple[float, float]  # mm between rows, between columns
    matrix: tuple[int, int]  # Rows, Columns
    rescale: tuple[float, float]  # slope, intercept
    thickness: float | None  # SpacingBetweenSlices, else SliceThickness: only for one-slice series


@dataclasses.dataclass(frozen=True)
class SeriesFiles:
    series_uid: str
    slices: tuple[Slice, ...]
    orientation: tuple[float, ...]  # rounded
    part: int  # 0 for the series; 1, 2, ... for groups split off the same SeriesInstanceUID

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(s.path for s in self.slices))


@dataclasses.dataclass(frozen=True)
class FileFailure:
    path: Path
    code: str
    message: str


def _unit_orientation(values) -> tuple[float, ...]:
    vector = np.array([float(v) for v in values], float)
    if vector.shape != (6,) or not np.isfinite(vector).all():
        raise Refusal("bad_dicom_header", "ImageOrientationPatient is not six numbers")
    row, col = vector[:3], vector[3:]
    lengths = np.array([np.linalg.norm(row), np.linalg.norm(col)])
    if (np.abs(lengths - 1.0) > UNIT_TOLERANCE).any():
        raise Refusal("bad_orientation", f"orientation vectors of length {lengths[0]:.3f} and {lengths[1]:.3f} "
                                         f"(more than {UNIT_TOLERANCE:.0%} from 1)")
    row, col = row / lengths[0], col / lengths[1]
    cosine = abs(float(np.dot(row, col)))
    if cosine > ORTHOGONAL_TOLERANCE:
        raise Refusal("bad_orientation", f"row and column directions {math.degrees(math.acos(min(cosine, 1.0))):.1f}"
                                         " degrees apart, not orthogonal")
    return tuple(float(v) for v in np.concatenate([row, col]))


def _spacing(values) -> tuple[float, float]:
    spacing = tuple(float(v) for v in values)
    if len(spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing):
        raise Refusal("bad_orientation", "PixelSpacing is not two positive numbers")
    return spacing


def _position(values) -> tuple[float, float, float]:
    position = tuple(float(v) for v in values)
    if len(position) != 3 or not all(math.isfinite(v) for v in position):
        raise Refusal("bad_dicom_header", "ImagePositionPatient is not three numbers")
    return position


def _thickness(group: Dataset) -> float | None:
    for name in ("SpacingBetweenSlices", "SliceThickness"):
        value = group.get(name)
        if value not in (None, ""):
            return float(value)
    return None


def _first_item(name: str, *groups: Dataset) -> Dataset | None:
    for group in groups:
        if name in group and group[name].value:
            return group[name].value[0]
    return None


def _sop_class(header: Dataset):
    meta = getattr(header, "file_meta", None) or Dataset()
    return header.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")


def _is_mosaic(header: Dataset) -> bool:
    if (0x0019, 0x100A) in header:  # Siemens NumberOfImagesInMosaic
        return True
    element = header.get_item("ImageType")  # raw bytes: converting every file's ImageType is slow
    value = getattr(element, "value", None) or b""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else "\\".join(map(str, value))
    return "MOSAIC" in text.upper()


def _slices_of(header: Dataset, path: Path) -> list[Slice]:
    """The slices a file holds (its header read without pixels). Raises Refusal."""
    if _is_mosaic(header):
        raise Refusal("siemens_mosaic", "a Siemens mosaic (slices tiled in one image): convert it with dcm2niix")
    sop = str(header.get("SOPInstanceUID", "") or "")
    uid = str(header.get("SeriesInstanceUID", "") or "")
    if not uid:
        if "Image Storage" in getattr(_sop_class(header), "name", ""):  # every image has one: damaged
            raise Refusal("bad_dicom_header", "an image without SeriesInstanceUID: the header is truncated or "
                                              "damaged")
        raise Refusal("no_image_geometry", "no SeriesInstanceUID: not an image series")
    if "Rows" not in header or "Columns" not in header:
        raise Refusal("no_image_geometry", "no Rows/Columns: not an image")
    matrix = (int(header.Rows), int(header.Columns))
    frames = int(header.get("NumberOfFrames") or 1)
    if "PerFrameFunctionalGroupsSequence" in header or frames > 1:
        shared = _first_item("SharedFunctionalGroupsSequence", header) or Dataset()
        per_frame = header.get("PerFrameFunctionalGroupsSequence") or []
        if len(per_frame) != frames:
            raise Refusal("no_frame_geometry", f"a {frames}-frame file with {len(per_frame)} per-frame "
                                               "functional groups")
        slices = []
        for index, frame in enumerate(per_frame):
            plane = _first_item("PlanePositionSequence", frame, shared)
            orient = _first_item("PlaneOrientationSequence", frame, shared)
            pixels = _first_item("PixelMeasuresSequence", frame, shared)
            if plane is None or orient is None or pixels is None or "ImagePositionPatient" not in plane \
                    or "ImageOrientationPatient" not in orient or "PixelSpacing" not in pixels:
                raise Refusal("no_frame_geometry", f"frame {index + 1} of {frames} has no position, orientation "
                                                   "or pixel spacing")
            transform = _first_item("PixelValueTransformationSequence", frame, shared) or Dataset()
            slices.append(Slice(
                path, uid, index, f"{sop or path}#{index}", _position(plane.ImagePositionPatient),
                _unit_orientation(orient.ImageOrientationPatient), _spacing(pixels.PixelSpacing), matrix,
                (float(transform.get("RescaleSlope", 1.0)), float(transform.get("RescaleIntercept", 0.0))),
                _thickness(pixels)))
        return slices
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in header]
    if missing:
        raise Refusal("no_image_geometry", f"{', '.join(missing)} missing: not a cross-sectional image")
    return [Slice(path, uid, None, sop or str(path), _position(header.ImagePositionPatient),
                  _unit_orientation(header.ImageOrientationPatient), _spacing(header.PixelSpacing), matrix,
                  (float(header.get("RescaleSlope", 1.0)), float(header.get("RescaleIntercept", 0.0))),
                  _thickness(header))]


# The only elements find_series reads: parsing just these keeps listing an archive as fast as a bare
# header read (a full parse converts every element of every file).
_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Rows", "Columns", "NumberOfFrames", "ImageType",
                (0x0019, 0x100A), "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                "RescaleSlope", "RescaleIntercept", "SpacingBetweenSlices", "SliceThickness",
                "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"]


def read_slices(path: Path) -> list[Slice] | FileFailure:
    """The slices of one file, or why it holds none."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (PermissionError, IsADirectoryError):
        return FileFailure(path, "unreadable_file", "the file cannot be opened (permission denied)")
    except InvalidDicomError:
        return FileFailure(path, "not_dicom", "not a DICOM file (no DICM prefix or file meta information)")
    except OSError:
        return FileFailure(path, "unreadable_file", "the file cannot be read (I/O error)")
    except Exception:  # noqa: BLE001 - pydicom raises many types on a damaged header
        return FileFailure(path, "bad_dicom_header", "the DICOM header cannot be parsed (truncated or damaged)")
    try:
        return _slices_of(header, path)
    except Refusal as refusal:
        return FileFailure(path, refusal.code, refusal.message)
    except Exception:  # noqa: BLE001 - a value that is not what its VR promises (text in a number tag)
        return FileFailure(path, "bad_dicom_header", "geometry or rescale tags hold values that are not numbers")


def is_sagittal(orientation: tuple[float, ...], max_angle_deg: float = 30.0) -> bool:
    """True when the slice normal lies within `max_angle_deg` of the left-right axis."""
    normal = np.cross(orientation[:3], orientation[3:])
    return abs(normal[0]) / np.linalg.norm(normal) >= np.cos(np.radians(max_angle_deg))


def find_series(root: Path, max_oblique_deg: float = 30.0, map_files: Callable = map
                ) -> tuple[list[SeriesFiles], list[FileFailure]]:
    """Every file under `root`: in a series (part 0 is the series, parts > 0 were split off it), or a
    failure (duplicates of a counted slice are failures with code 'duplicate_instance').

    map_files(read_slices, paths) reads the headers, in path order (the builtin map, or a process pool's: an
    archive's listing is mostly header reads)."""
    groups: dict[tuple, list[Slice]] = defaultdict(list)
    failures = []
    paths, unreadable = walk.files_under(root)
    failures.extend(FileFailure(folder, "unreadable_file", "a folder that cannot be listed (permission denied)")
                    for folder in unreadable)
    for found in map_files(read_slices, paths):
        if isinstance(found, FileFailure):
            failures.append(found)
            continue
        for piece in found:  # a slice of another orientation, matrix or pixel spacing is another group
            orientation = tuple(round(v, ORIENTATION_DECIMALS) + 0.0 for v in piece.orientation)
            spacing = tuple(round(v, ORIENTATION_DECIMALS) for v in piece.pixel_spacing)
            groups[(piece.series_uid, orientation, piece.matrix, spacing)].append(piece)
    by_uid: dict[str, list[tuple[tuple, list[Slice]]]] = defaultdict(list)
    for key, pieces in groups.items():
        by_uid[key[0]].append((key, pieces))
    series, seen, duplicate_files = [], {}, set()
    for uid in sorted(by_uid):
        # The sagittal group with the most slices is the series, whatever order the files sort in.
        ranked = sorted(by_uid[uid], key=lambda kp: (not is_sagittal(kp[0][1], max_oblique_deg), -len(kp[1]), kp[0]))
        for part, (key, pieces) in enumerate(ranked):
            kept = []
            for piece in pieces:  # files in path order: the first copy of an instance counts
                if piece.instance in seen and seen[piece.instance] != piece.path:
                    duplicate_files.add(piece.path)
                    continue
                seen[piece.instance] = piece.path
                kept.append(piece)
            if kept:
                series.append(SeriesFiles(uid, tuple(kept), key[1], part))
    counted = {s.path for one in series for s in one.slices}
    for path in sorted(duplicate_files - counted):
        failures.append(FileFailure(path, "duplicate_instance",
                                    "the same DICOM instance (SOPInstanceUID) as another file: counted once"))
    return series, failures


_NATIVE_LITTLE_ENDIAN = (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian)


def native_pixels(dataset: Dataset) -> np.ndarray | None:
    """[frames, rows, columns] of uncompressed little-endian grey-scale pixel data, straight from its bytes;
    None when the file needs pydicom's decoders (compressed, big-endian, colour, 1 or 32 bits, short data).

    The same values as pydicom's `pixel_array` (unused high bits cleared, or sign-extended when signed;
    tests/test_scan_reading.py compares them), without its per-file option handling, which costs about
    0.8 ms a slice: most of the reading time of an uncompressed series."""
    meta = getattr(dataset, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") not in _NATIVE_LITTLE_ENDIAN or "PixelData" not in dataset:
        return None
    try:
        bits, stored, signed = int(dataset.BitsAllocated), int(dataset.BitsStored), int(dataset.PixelRepresentation)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames, samples = int(dataset.get("NumberOfFrames") or 1), int(dataset.SamplesPerPixel)
        grey = str(dataset.PhotometricInterpretation) in ("MONOCHROME1", "MONOCHROME2")
        data = dataset.PixelData
    except Exception:  # noqa: BLE001 - a missing or malformed attribute: pydicom's decoder says what is wrong
        return None
    count = frames * rows * columns
    if (not grey or bits not in (8, 16) or not 0 < stored <= bits or signed not in (0, 1) or samples != 1
            or min(rows, columns, frames) < 1 or not isinstance(data, bytes) or len(data) < count * (bits // 8)):
        return None
    pixels = np.frombuffer(data, np.dtype(f"<{'i' if signed else 'u'}{bits // 8}"), count)
    if stored < bits:  # the unused high bits mean nothing (PS3.5 8.1.1): shift them out as pydicom does
        pixels = (pixels << (bits - stored)) >> (bits - stored)
    return pixels.reshape(frames, rows, columns)


def _pixels(path: Path) -> np.ndarray:
    """[frames, rows, columns] stored pixel values of one file."""
    try:
        dataset = pydicom.dcmread(path)
    except OSError:  # gone, or a network file system's hiccup: may not recur, so it is tried again next run
        raise SeriesError("io_error", "a file of the series could not be read (I/O error)") from None
    except Exception:  # noqa: BLE001 - a damaged file
        raise SeriesError("pixel_decode", "a file of the series cannot be parsed") from None
    try:
        pixels = native_pixels(dataset)
        if pixels is None:
            pixels = dataset.pixel_array
    except Exception:  # noqa: BLE001 - decoder errors come in many types
        raise SeriesError("pixel_decode", "pixel data cannot be decoded") from None
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise SeriesError("pixel_decode", "a colour image, not a grey-scale MR image")
    return pixels[None] if pixels.ndim == 2 else pixels


def load_series(series: SeriesFiles) -> Volume:
    """The series as a Volume [slice along the normal, row, column] float32 with affine_lps.

    Raises SeriesError (code, message) when its geometry or pixels are unusable.
    """
    slices = list(series.slices)
    orientation = np.array(slices[0].orientation, float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    position = np.array([np.dot(np.array(s.position), normal) for s in slices])
    order = np.argsort(position, kind="stable")
    slices, position = [slices[i] for i in order], position[order]
    if len(slices) > 1:
        gaps = np.diff(position)
        if (gaps < 1e-3).any():
            raise SeriesError("duplicate_positions", f"{int((gaps < 1e-3).sum())} duplicated slice position(s)")
        spacing = float(np.median(gaps))
        if (gaps > 1.5 * spacing).any():
            missing = int(np.round(gaps[gaps > 1.5 * spacing] / spacing - 1).sum())
            raise SeriesError("missing_slices", f"about {missing} missing slice(s) (gap of {gaps.max():.2f} mm "
                                                f"against {spacing:.2f} mm spacing)")
        if (np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing).any():
            raise SeriesError("uneven_spacing", f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm)")
    else:
        spacing = slices[0].thickness or 1.0
    stored: dict[Path, np.ndarray] = {}
    data = np.empty((len(slices), *slices[0].matrix), np.float32)
    for k, piece in enumerate(slices):
        if piece.path not in stored:
            stored[piece.path] = _pixels(piece.path)
        frames = stored[piece.path]
        index = piece.frame or 0
        if index >= len(frames) or frames.shape[1:] != piece.matrix:
            raise SeriesError("pixel_decode", "pixel data does not match Rows, Columns and NumberOfFrames")
        slope, intercept = piece.rescale
        data[k] = frames[index].astype(np.float32) * slope + intercept
    if not np.isfinite(data).all():
        raise SeriesError("non_finite", "pixel data holds NaN or infinite values")
    row_spacing, col_spacing = slices[0].pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = normal * spacing
    affine[:3, 1] = col_dir * row_spacing
    affine[:3, 2] = row_dir * col_spacing
    affine[:3, 3] = np.array(slices[0].position, float)
    return Volume(data, affine)
