"""The canonical frame: one array layout and one meaning of each axis for every scan.

Every scan, from DICOM or NIfTI, in any orientation or slice order, becomes

    data[slice, row, column]  float32, scanner units (RescaleSlope/Intercept or scl_slope/inter applied);
                              label maps keep their integer type
      axis 0: patient left  -> right   (sagittal slices)
      axis 1: superior      -> inferior
      axis 2: anterior      -> posterior

with `spacing` (mm along each axis) and `affine_lps`, the 4x4 map from (axis 0, axis 1, axis 2) indices to
DICOM patient coordinates (LPS, mm). Axes are permuted and flipped to the nearest of these directions,
never resampled: an angled slab keeps its angle in `affine_lps`, and `obliquity_deg` says how far each axis
is from its anatomical direction.
"""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np

from spinejax.scans.refusal import Refusal

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# The canonical axes as nibabel orientation rows (RAS world axis, direction):
# axis 0 towards R (+x in RAS), axis 1 towards I (-z), axis 2 towards P (-y).
CANONICAL_ORNT = np.array([[0, 1], [2, -1], [1, -1]], dtype=float)
AXES = ("left->right", "superior->inferior", "anterior->posterior")


@dataclasses.dataclass(frozen=True)
class Volume:
    """A scan in some layout: data [a0, a1, a2] and affine_lps mapping (a0, a1, a2) to LPS mm."""

    data: np.ndarray
    affine_lps: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        """mm between neighbouring voxels along each array axis."""
        return np.linalg.norm(self.affine_lps[:3, :3], axis=0)

    def obliquity_deg(self) -> np.ndarray:
        """Angle (degrees) between each array axis and the world axis nearest to it."""
        directions = self.affine_lps[:3, :3] / self.spacing
        return np.degrees(np.arccos(np.clip(np.abs(directions).max(axis=0), 0.0, 1.0)))


def to_canonical(volume: Volume) -> Volume:
    """`volume` permuted and flipped into the canonical frame (module docstring). Exact: no resampling."""
    ornt = nib.orientations.io_orientation(LPS_TO_RAS @ volume.affine_lps)
    transform = nib.orientations.ornt_transform(ornt, CANONICAL_ORNT)
    data = nib.orientations.apply_orientation(volume.data, transform)
    # affine of the new layout: old affine composed with the map from new indices to old ones
    new_to_old = nib.orientations.inv_ornt_aff(transform, volume.data.shape)
    affine = volume.affine_lps @ new_to_old
    dtype = volume.data.dtype if np.issubdtype(volume.data.dtype, np.integer) else np.float32  # labels stay integers
    return Volume(np.ascontiguousarray(data, dtype=dtype), affine)


def _stored_pixdim(path, header) -> np.ndarray:
    """pixdim[1:4] as stored: nibabel's loaded header has already replaced a 0 by 1 ('fixing' it)."""
    if "pixdim" not in header:
        return np.ones(3)
    with nib.openers.ImageOpener(str(path)) as stream:
        stored = type(header).from_fileobj(stream, check=False)
    return np.asarray(stored["pixdim"][1:4], float)


def load_nifti(path, is_label: bool = False) -> Volume:
    """A NIfTI file as a Volume (scaling applied for images; labels kept as integers).

    Raises Refusal (spinejax.scans.refusal) with a code: 'unreadable_scan' (not a readable NIfTI: corrupt gzip,
    truncated), 'not_3d' (trailing axes of length 1 are dropped; a real 4th axis is refused), 'no_orientation'
    (qform_code and sform_code both 0: nibabel would invent an orientation from the voxel sizes alone),
    'bad_voxel_size' (a zero, negative or non-finite voxel size, or a singular affine), 'non_finite' (NaN or
    infinite voxels) and, for labels, 'mask_not_labels' (values that are not whole numbers).
    """
    try:
        image = nib.load(str(path))
        header = image.header
        data = np.asarray(image.dataobj) if is_label else image.get_fdata(dtype=np.float32)
    except Exception:  # noqa: BLE001 - nibabel and gzip raise many types on a damaged file
        raise Refusal("unreadable_scan", "not a readable NIfTI file (damaged, truncated or another format)") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise Refusal("not_3d", f"a {data.ndim}D image of shape {tuple(int(n) for n in data.shape)}, not a 3D scan")
    codes = [int(header["qform_code"]), int(header["sform_code"])] if "qform_code" in header else [1, 1]
    if not any(codes):
        raise Refusal("no_orientation", "qform_code and sform_code are both 0: the file does not say where the "
                                        "patient is")
    pixdim = _stored_pixdim(path, header)
    if not np.isfinite(pixdim).all() or (pixdim == 0).any():  # nibabel would quietly read 0 as 1 mm
        raise Refusal("bad_voxel_size", "a voxel size (pixdim) that is zero or not a number")
    affine = np.asarray(image.affine, float)
    if not np.isfinite(affine).all() or (np.linalg.norm(affine[:3, :3], axis=0) < 1e-3).any() \
            or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise Refusal("bad_voxel_size", "a voxel size that is zero, negative or not a number")
    if is_label:
        if not np.issubdtype(data.dtype, np.integer):
            if not np.isfinite(data).all() or (data != np.round(data)).any():
                raise Refusal("mask_not_labels", "mask values that are not whole numbers: not a label map")
        data = data.astype(np.int32)
    elif not np.isfinite(data).all():
        raise Refusal("non_finite", f"{int((~np.isfinite(data)).sum())} voxels are NaN or infinite")
    return Volume(data, np.linalg.inv(LPS_TO_RAS) @ affine)
