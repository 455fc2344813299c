"""How a phantom is scanned: site protocols, slab geometry, intensity scaling and storage choices.

Geometry follows DICOM (patient LPS coordinates, mm): x to the patient's left, y to posterior, z to
head. A volume is stored as [slice k, row j, column i]; voxel (k, j, i) sits at

    position = origin + i * col_spacing * row_dir + j * row_spacing * col_dir + k * slice_spacing * normal

where row_dir/col_dir are ImageOrientationPatient's two vectors (direction along a row / down a column),
normal = row_dir x col_dir, and slices k are in increasing order along the normal. Sagittal slabs here
are tilted only in-plane (about the left-right axis), as angled sagittal planes are, so every slice is an
exact sagittal plane.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SiteProtocol:
    """A site's sagittal T2 whole-spine protocol and how its archive stores the images."""

    manufacturer: str
    model: str
    field_strength: float  # tesla
    pixel_spacing: float  # mm, before per-scan jitter
    slice_thickness: float  # mm
    slice_gap: float  # fraction of thickness between slices
    n_slices: int
    noise: float  # Rician noise sd as a fraction of the CSF signal
    bias: float  # strength of the coil bias field
    gain: float  # receiver scale
    rescale: tuple[float, float]  # (RescaleSlope, RescaleIntercept)
    transfer_syntaxes: tuple[tuple[str, float], ...]  # (pydicom UID name, share of series)
    layout: str  # 'nested' (patient/study/series folders) or 'flat' (all files of a batch together)


SITE_PROTOCOLS: dict[str, SiteProtocol] = {
    "site_A": SiteProtocol("SIEMENS", "Avanto", 1.5, 1.40, 3.5, 0.10, 15, 0.030, 0.25, 1.0, (1.0, 0.0),
                           (("ExplicitVRLittleEndian", 1.0),), "nested"),
    "site_B": SiteProtocol("GE MEDICAL SYSTEMS", "SIGNA Premier", 3.0, 1.30, 3.0, 0.0, 16, 0.022, 0.40,
                           2.6, (1.0, 0.0), (("ImplicitVRLittleEndian", 0.5), ("ExplicitVRLittleEndian", 0.5)),
                           "nested"),
    "site_C": SiteProtocol("Philips", "Ingenia", 1.5, 1.55, 4.0, 0.10, 13, 0.040, 0.20, 0.8,
                           (1.6336, 0.0), (("ExplicitVRLittleEndian", 0.6), ("RLELossless", 0.4)), "flat"),
    "site_D": SiteProtocol("CANON_MEC", "Vantage Orian", 1.5, 1.45, 3.5, 0.15, 14, 0.035, 0.30, 1.3,
                           (0.5, -100.0), (("JPEG2000Lossless", 0.25), ("ExplicitVRLittleEndian", 0.75)), "nested"),
}


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """One series' geometry and storage. Lengths in mm, positions in patient LPS coordinates."""

    site: str
    rows: int  # j, superior -> inferior (before tilt/flip)
    cols: int  # i, along AP
    n_slices: int  # k, along the slice normal
    row_spacing: float  # PixelSpacing[0]: between rows
    col_spacing: float  # PixelSpacing[1]: between columns
    slice_thickness: float
    slice_spacing: float  # centre to centre, >= thickness when there is a gap
    row_dir: tuple[float, float, float]
    col_dir: tuple[float, float, float]
    origin: tuple[float, float, float]  # centre of voxel (0, 0, 0)
    instance_order: tuple[int, ...]  # slice k of InstanceNumber 1, 2, ... (acquisition order)
    spine_top: tuple[float, float, float]  # where the top of C2's body centre is; x is the midline
    gain: float
    noise: float
    bias_coefficients: tuple[float, ...]
    rescale_slope: float
    rescale_intercept: float
    file_format: str  # 'dicom' or 'nifti'
    transfer_syntax: str
    nifti_axes: tuple[int, int, int]  # NIfTI array axis i holds volume axis nifti_axes[i] (of k, j, i)
    nifti_flips: tuple[bool, bool, bool]  # flip of each NIfTI array axis

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    def affine_lps(self) -> np.ndarray:
        """4x4 map from voxel (i, j, k) to LPS mm, the DICOM convention (columns i first)."""
        affine = np.eye(4)
        affine[:3, 0] = np.asarray(self.row_dir) * self.col_spacing
        affine[:3, 1] = np.asarray(self.col_dir) * self.row_spacing
        affine[:3, 2] = self.normal * self.slice_spacing
        affine[:3, 3] = self.origin
        return affine

    def slice_positions(self) -> np.ndarray:
        """[n_slices, 3] ImagePositionPatient of each slice k (its first voxel's centre)."""
        k = np.arange(self.n_slices)[:, None]
        return np.asarray(self.origin)[None, :] + k * self.slice_spacing * self.normal[None, :]


def draw_acquisition(rng: np.random.Generator, site: str, spine_length: float, nifti_share: float
                     ) -> Acquisition:
    """Draws one series' acquisition at `site` for a spine of `spine_length` mm (top of C2 to S1 top)."""
    proto = SITE_PROTOCOLS[site]
    spacing = proto.pixel_spacing * rng.uniform(0.95, 1.05)
    fov_si = max(spine_length + 130.0, 700.0) + rng.uniform(0.0, 40.0)
    fov_ap = rng.uniform(250.0, 290.0)
    rows, cols = int(round(fov_si / spacing)), int(round(fov_ap / spacing))
    n_slices = int(proto.n_slices + rng.integers(-1, 2))
    thickness = proto.slice_thickness
    slice_spacing = round(thickness * (1.0 + proto.slice_gap), 3)

    tilt = np.deg2rad(np.clip(rng.normal(0.0, 2.5), -7.0, 7.0))
    rotate = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    row_dir = rotate @ np.array([0.0, 1.0, 0.0])  # columns run anterior -> posterior
    col_dir = rotate @ np.array([0.0, 0.0, -1.0])  # rows run head -> feet
    if rng.random() < 0.15:  # some scanners show anterior on the right
        row_dir = -row_dir
    normal = np.cross(row_dir, col_dir)

    spine_top = np.array([rng.uniform(-3.0, 3.0), rng.uniform(-15.0, 15.0), rng.uniform(250.0, 400.0)])
    # FOV centre: spine slightly posterior of centre, top margin above C2 of 40-80 mm.
    centre = np.array([rng.uniform(-2.0, 2.0), spine_top[1] + rng.uniform(5.0, 25.0),
                       spine_top[2] + rng.uniform(40.0, 80.0) - fov_si / 2.0])
    origin = (centre - row_dir * spacing * (cols - 1) / 2.0 - col_dir * spacing * (rows - 1) / 2.0
              - normal * slice_spacing * (n_slices - 1) / 2.0)

    order = np.arange(n_slices)
    if rng.random() < 0.3:  # interleaved acquisition: odd then even
        order = np.concatenate([order[0::2], order[1::2]])
    if rng.random() < 0.5:  # the other slice direction
        order = order[::-1]

    # Draw every choice whatever the format, so the format alone does not change the rest of the scan.
    is_nifti = rng.random() < nifti_share
    axes, flips = tuple(int(a) for a in rng.permutation(3)), tuple(bool(f) for f in rng.random(3) < 0.5)
    syntax = str(rng.choice([name for name, _ in proto.transfer_syntaxes],
                            p=[share for _, share in proto.transfer_syntaxes]))
    if not is_nifti:  # masks of DICOM series use the [i, j, k] layout that dcm2niix writes
        axes, flips = (2, 1, 0), (False, False, False)
    return Acquisition(
        site=site, rows=rows, cols=cols, n_slices=n_slices, row_spacing=round(spacing, 4),
        col_spacing=round(spacing, 4), slice_thickness=thickness, slice_spacing=slice_spacing,
        row_dir=tuple(np.round(row_dir, 6)), col_dir=tuple(np.round(col_dir, 6)),
        origin=tuple(np.round(origin, 3)), instance_order=tuple(int(k) for k in order),
        spine_top=tuple(spine_top), gain=proto.gain * rng.uniform(0.7, 1.4), noise=proto.noise,
        bias_coefficients=tuple(rng.normal(0.0, proto.bias, 5)),
        rescale_slope=proto.rescale[0], rescale_intercept=proto.rescale[1],
        file_format="nifti" if is_nifti else "dicom",
        transfer_syntax=syntax,
        nifti_axes=axes, nifti_flips=flips,
    )
