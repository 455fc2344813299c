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

    Only the in-mask values are computed on (the mask holds a small part of the slab) and the output starts
    at 0, so flips and shifts move the values alone: about 1 ms per CPU-preset slab, where a pass per change
    over the whole slab took 8 (grain's input pipeline has to outrun the train step, README "Training").
    """
    inside = mask.astype(bool)
    values = volume[inside].astype(np.float32)
    if values.size:
        if config.gamma_log_range > 0:  # contrast: gamma on the in-mask values mapped to [0, 1]
            low, high = values.min(), values.max()
            span = max(float(high - low), 1e-6)
            gamma = np.exp(rng.uniform(-config.gamma_log_range, config.gamma_log_range))
            values = low + span * ((values - low) / span) ** gamma
        values = values * rng.uniform(1 - config.intensity_scale, 1 + config.intensity_scale)
        values = values + rng.uniform(-config.intensity_shift, config.intensity_shift)
        if config.bias_field > 0:
            values = values * _bias_field(volume.shape, rng, config.bias_field)[inside]
        if config.noise_sd > 0:
            values = values + rng.normal(0.0, rng.uniform(0, config.noise_sd), values.shape)
    x = np.zeros(volume.shape, np.float32)
    x[inside] = values
    if config.flip_left_right and rng.random() < 0.5:
        x = x[::-1]
    if config.shift_voxels > 0:
        shift = rng.integers(-config.shift_voxels, config.shift_voxels + 1, size=2)
        x = _shift(x, shift)
    return np.ascontiguousarray(x, dtype=np.float32)


def _bias_field(shape, rng: np.random.Generator, strength: float) -> np.ndarray:
    """exp of a random quadratic over the slab, coefficients ~ N(0, strength): a smooth gain of about +-strength.

    The quadratic's terms are z, y, x, z^2, y^2, x^2 and y*x (coordinates in [-1, 1]), so the field is
    exp(a z + d z^2) times a rows x cols plane: one multiply per voxel instead of seven passes and an exp.
    """
    z, y, x = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    c = [rng.normal(0, strength) for _ in range(7)]  # one draw per term, in the order above
    along_z = np.exp(c[0] * z + c[3] * z * z)
    plane = np.exp(c[1] * y[:, None] + c[2] * x[None, :] + c[4] * (y * y)[:, None] + c[5] * (x * x)[None, :]
                   + c[6] * y[:, None] * x[None, :])
    return (along_z[:, None, None] * plane[None]).astype(np.float32)


def _shift(x: np.ndarray, shift) -> np.ndarray:
    """Moves the slab by whole voxels along rows and columns, filling with zeros (no wrap-around)."""
    out = np.zeros_like(x)
    (dr, dc), (_, rows, cols) = shift, x.shape
    src_r, dst_r = slice(max(-dr, 0), rows - max(dr, 0)), slice(max(dr, 0), rows - max(-dr, 0))
    src_c, dst_c = slice(max(-dc, 0), cols - max(dc, 0)), slice(max(dc, 0), cols - max(-dc, 0))
    out[:, dst_r, dst_c] = x[:, src_r, src_c]
    return out
