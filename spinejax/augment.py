"""Training augmentation for masked sagittal MRI slabs, in numpy (it runs in grain's worker processes).

Each change mimics something real scans differ by: scanner gain and offset (intensity scale, shift),
contrast (gamma), coil sensitivity (a smooth multiplicative bias field), thermal noise, and where the
spine sits in the crop (small whole-voxel shifts). Left-right flips are allowed: a sagittal slab seen
from the other side is still a plausible spine. Superior-inferior and anterior-posterior flips are not:
no spine has its cervical levels below its lumbar ones or its discs behind its canal.

Everything is applied inside the spine mask only; outside stays 0, as in the records.
"""

from __future__ import annotations

import numpy as np


def augment(volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, config) -> np.ndarray:
    """One random augmentation of one slab.

    volume: [slices, rows, cols] float32, z-scored inside the mask, 0 outside (canonical axes
    left->right, superior->inferior, anterior->posterior). mask: same shape, uint8 or bool.
    config: the `augment` block (ranges below; 0 turns a change off). Returns a new float32 array.
    """
    inside = mask.astype(bool)
    x = volume.astype(np.float32, copy=True)
    values = x[inside]
    if values.size:
        if config.gamma_log_range > 0:  # contrast: gamma on the in-mask values mapped to [0, 1]
            low, high = values.min(), values.max()
            span = max(float(high - low), 1e-6)
            gamma = np.exp(rng.uniform(-config.gamma_log_range, config.gamma_log_range))
            values = low + span * ((values - low) / span) ** gamma
        values = values * rng.uniform(1 - config.intensity_scale, 1 + config.intensity_scale)
        values = values + rng.uniform(-config.intensity_shift, config.intensity_shift)
        if config.bias_field > 0:
            values = values * _bias_field(x.shape, rng, config.bias_field)[inside]
        if config.noise_sd > 0:
            values = values + rng.normal(0.0, rng.uniform(0, config.noise_sd), values.shape)
        x[inside] = values
    if config.flip_left_right and rng.random() < 0.5:
        x, inside = x[::-1], inside[::-1]
    if config.shift_voxels > 0:
        shift = rng.integers(-config.shift_voxels, config.shift_voxels + 1, size=2)
        x, inside = _shift(x, shift), _shift(inside, shift)
    x[~inside] = 0.0
    return np.ascontiguousarray(x, dtype=np.float32)


def _bias_field(shape, rng: np.random.Generator, strength: float) -> np.ndarray:
    """exp of a random quadratic over the slab, coefficients ~ N(0, strength): a smooth gain of about +-strength."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = list(grids) + [g * g for g in grids] + [grids[1] * grids[2]]
    log_field = sum(rng.normal(0, strength) * t for t in terms)
    return np.exp(log_field).astype(np.float32)


def _shift(x: np.ndarray, shift) -> np.ndarray:
    """Moves the slab by whole voxels along rows and columns, filling with zeros (no wrap-around)."""
    out = np.zeros_like(x)
    (dr, dc), (_, rows, cols) = shift, x.shape
    src_r, dst_r = slice(max(-dr, 0), rows - max(dr, 0)), slice(max(dr, 0), rows - max(-dr, 0))
    src_c, dst_c = slice(max(-dc, 0), cols - max(dc, 0)), slice(max(dc, 0), cols - max(-dc, 0))
    out[:, dst_r, dst_c] = x[:, src_r, src_c]
    return out
