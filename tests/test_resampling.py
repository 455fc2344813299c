"""Resampling kernels against the scipy.ndimage calls they replace, on shapes and spacings a site's scans have."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from spinejax.scans import resampling

# (input shape, native spacing mm, target spacing mm): thick and thin sagittal slices, fine in-plane
# matrices, upsampling along an axis, a single slice, odd ratios that put output centres on input
# half-voxels (the round-half case of nearest neighbour).
CASES = [
    ((15, 553, 205), (3.0, 1.328125, 1.328125), (4.0, 4.0, 4.0)),
    ((23, 320, 96), (3.3, 1.1, 1.1), (4.0, 4.0, 4.0)),
    ((9, 64, 40), (5.0, 2.0, 3.0), (4.0, 4.0, 4.0)),
    ((12, 30, 18), (1.0, 1.0, 1.0), (2.0, 3.0, 4.0)),
    ((1, 17, 9), (4.0, 0.7, 0.9), (4.0, 2.0, 2.0)),
    ((8, 10, 6), (2.0, 2.0, 2.0), (1.0, 0.5, 4.0)),
]


@pytest.mark.parametrize("shape,native,target", CASES)
def test_linear_zoom_is_scipys_grid_mode_zoom(shape, native, target):
    rng = np.random.default_rng(sum(shape))
    volume = (rng.gamma(2.0, 300.0, shape) * (rng.random(shape) > 0.2)).astype(np.float32)
    zoom = np.asarray(native) / np.asarray(target)
    expected = ndimage.zoom(volume, zoom, order=1, mode="nearest", grid_mode=True)
    got = resampling.zoom_linear(volume, resampling.zoom_shape(shape, zoom))
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-7 * np.abs(expected).max())
    # integer input (stored DICOM values) and a constant slab give the same numbers; the constant exactly
    np.testing.assert_allclose(resampling.zoom_linear(volume.astype(np.int16), got.shape),
                               ndimage.zoom(volume.astype(np.int16).astype(np.float32), zoom, order=1,
                                            mode="nearest", grid_mode=True), rtol=0, atol=2e-7 * 2 ** 15)
    flat = resampling.zoom_linear(np.full(shape, 812.5, np.float32), got.shape)
    assert (flat == 812.5).all()


@pytest.mark.parametrize("shape,native,target", CASES)
def test_nearest_zoom_is_exactly_scipys_and_invents_no_label(shape, native, target):
    rng = np.random.default_rng(len(shape) + shape[1])
    labels = rng.integers(0, 120, shape).astype(np.int32)
    zoom = np.asarray(native) / np.asarray(target)
    expected = ndimage.zoom(labels, zoom, order=0, mode="nearest", grid_mode=True)
    got = resampling.zoom_nearest(labels, resampling.zoom_shape(shape, zoom))
    assert got.dtype == labels.dtype
    np.testing.assert_array_equal(got, expected)
    # an exact 2x downsampling: centres on the boundary between two input voxels, rounded half up as scipy does
    pairs = np.arange(8, dtype=np.int32).reshape(1, 1, 8)
    np.testing.assert_array_equal(resampling.zoom_nearest(pairs, (1, 1, 4)),
                                  ndimage.zoom(pairs, (1, 1, 0.5), order=0, mode="nearest", grid_mode=True))


def test_bounding_box_is_the_extent_of_the_true_voxels():
    rng = np.random.default_rng(5)
    for _ in range(50):
        present = np.zeros(tuple(rng.integers(1, 30, 3)), bool)
        count = rng.integers(1, 6)
        present[tuple(rng.integers(0, n, count) for n in present.shape)] = True
        index = np.argwhere(present)
        low, high = resampling.bounding_box(present)
        np.testing.assert_array_equal(low, index.min(axis=0))
        np.testing.assert_array_equal(high, index.max(axis=0) + 1)


@pytest.mark.parametrize("spacing,radius", [
    ((4.0, 4.0, 4.0), 4.0),    # the plan's: face neighbours exactly at the radius are in
    ((4.0, 4.0, 4.0), 8.0),
    ((3.0, 2.0, 2.0), 6.0),    # anisotropic
    ((2.0, 1.0, 1.0), 5.0),    # a ball too large for shifted ORs: the distance transform on the crop
    ((0.39, 0.39, 0.39), 1.17),  # radius / spacing rounds below 3 in float64, yet 3 x 0.39 <= 1.17
    ((1.0, 0.39, 1.0), 1.17),
    ((4.0, 4.0, 4.0), 3.0),    # smaller than a voxel: nothing added
])
def test_dilation_is_the_distance_transform_threshold(spacing, radius):
    rng = np.random.default_rng(int(radius * 10))
    for k in range(4):
        mask = np.zeros((11, 60, 24), bool)
        mask[rng.integers(0, 11, 12), rng.integers(0, 60, 12), rng.integers(0, 24, 12)] = True
        if k == 0:
            mask[:, 0, :] = True  # touching the volume's edge
        if k == 1:
            mask[:] = False
        expected = ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius if mask.any() else mask
        got = resampling.dilate_mm(mask, np.asarray(spacing), radius)
        np.testing.assert_array_equal(got, expected, err_msg=f"{spacing} {radius} {k}")
    assert resampling.ball(np.asarray((2.0, 1.0, 1.0)), 5.0).sum() > resampling.MAX_BALL_OFFSETS
