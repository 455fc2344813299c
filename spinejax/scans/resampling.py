"""Resampling kernels for preprocessing: grid-mode zooms, bounding boxes and dilation by a distance in mm.

Pure numpy functions, the same results as the scipy.ndimage calls they replace (tests/test_resampling.py
checks each against its scipy reference), at a fraction of the time on a whole-spine slab: separable
interpolation touches each output voxel once per axis instead of visiting 8 corners, the bounding box
comes from axis reductions instead of `argwhere`, and a small ball is dilated by shifted ORs on a crop
instead of a distance transform of the whole volume.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Above this many voxels in the ball, a distance transform on the crop is cheaper than one OR per offset.
MAX_BALL_OFFSETS = 125


def zoom_shape(shape: tuple[int, ...], zoom: np.ndarray) -> tuple[int, ...]:
    """The output shape of scipy.ndimage.zoom(input of `shape`, zoom): round(n * zoom) per axis."""
    return tuple(int(round(n * z)) for n, z in zip(shape, zoom))


def _source_coordinates(n_in: int, n_out: int) -> np.ndarray:
    """[n_out] float64 source coordinate of each output voxel centre in grid mode (voxels as areas, edges
    aligned), clamped to [0, n_in - 1] as scipy's mode='nearest' does."""
    scale = n_in / n_out if n_out else 1.0
    return np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0.0, n_in - 1)


def zoom_linear(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resampling of `volume` [a0, a1, a2] (any real dtype) to `shape`, float32.

    The same sampling as ndimage.zoom(volume, zoom, order=1, mode='nearest', grid_mode=True) with
    shape = zoom_shape(volume.shape, zoom): within 2e-7 of its largest magnitude (scipy sums in float64,
    this in float32, one axis at a time, the most shrinking first so later passes are small). A constant
    stretch stays exactly constant.
    """
    out = volume
    for axis in np.argsort(np.asarray(shape) / np.maximum(volume.shape, 1), kind="stable"):
        coords = _source_coordinates(out.shape[axis], shape[axis])
        low = np.floor(coords).astype(np.intp)
        high = np.minimum(low + 1, out.shape[axis] - 1)
        weight = (coords - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        below = np.take(out, low, axis=axis).astype(np.float32, copy=False)
        delta = np.take(out, high, axis=axis).astype(np.float32, copy=False) - below
        delta *= weight
        out = below + delta
    return np.ascontiguousarray(out, dtype=np.float32)


def zoom_nearest(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of `volume` [a0, a1, a2] to `shape`, same dtype: exactly
    ndimage.zoom(volume, zoom, order=0, mode='nearest', grid_mode=True) (round half up, as scipy does).
    No label is invented: every output voxel is a copy of one input voxel."""
    out = volume
    for axis in np.argsort(np.asarray(shape) / np.maximum(volume.shape, 1), kind="stable"):
        index = np.floor(_source_coordinates(out.shape[axis], shape[axis]) + 0.5).astype(np.intp)
        out = np.take(out, index, axis=axis)
    return np.ascontiguousarray(out)


def bounding_box(present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) int index arrays of the box [low, high) holding every True voxel of `present` [a0, a1, a2]
    bool, which must hold at least one. Two reductions over the volume instead of listing every voxel."""
    rows_columns = present.any(axis=0)
    along = (present.any(axis=(1, 2)), rows_columns.any(axis=1), rows_columns.any(axis=0))
    low = np.array([np.argmax(a) for a in along])
    high = np.array([len(a) - np.argmax(a[::-1]) for a in along])
    return low, high


def ball(spacing_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """[2k0+1, 2k1+1, 2k2+1] bool: the voxel offsets whose centre is within radius_mm of the centre, on a
    grid of spacing_mm [3] (mm). The structuring element of dilation by a distance."""
    # one voxel more than the quotient: floor(r / s) can round down where (k + 1) s <= r still holds (0.39, 1.17)
    reach = np.floor(radius_mm / np.asarray(spacing_mm, float)).astype(int) + 1
    axes = np.meshgrid(*[np.arange(-k, k + 1) * s for k, s in zip(reach, spacing_mm)], indexing="ij")
    return np.sqrt(sum(a * a for a in axes)) <= radius_mm


def dilate_mm(mask: np.ndarray, spacing_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """`mask` [a0, a1, a2] bool grown by every voxel within radius_mm (Euclidean, mm, anisotropic spacing
    respected): exactly ndimage.distance_transform_edt(~mask, sampling=spacing_mm) <= radius_mm (for a mask
    holding at least one voxel; an empty mask stays empty), computed on the mask's bounding box plus the radius."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    element = ball(spacing_mm, radius_mm)
    reach = (np.array(element.shape) - 1) // 2
    low, high = bounding_box(mask)
    low, high = np.maximum(low - reach - 1, 0), np.minimum(high + reach + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    inner = mask[box]
    if element.sum() > MAX_BALL_OFFSETS:
        grown = ndimage.distance_transform_edt(~inner, sampling=spacing_mm) <= radius_mm
    else:  # OR of the mask shifted by each offset in the ball
        padded = np.pad(inner, [(k, k) for k in reach])
        grown = np.zeros_like(inner)
        n0, n1, n2 = inner.shape
        for o0, o1, o2 in np.argwhere(element):
            grown |= padded[o0:o0 + n0, o1:o1 + n1, o2:o2 + n2]
    out = np.zeros_like(mask)
    out[box] = grown
    return out
