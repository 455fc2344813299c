"""Training augmentation for masked sagittal MRI slabs, in numpy (it runs in grain's worker processes).

Each change mimics something real scans differ by: scanner gain and offset (intensity scale, shift),
contrast (gamma), coil sensitivity (a smooth multiplicative bias field), thermal noise, and where the
spine sits in the crop (small whole-voxel shifts). Left-right flips are allowed: a sagittal slab seen
from the other side is still a plausible spine. Superior-inferior and anterior-posterior flips are not:
no spine has its cervical levels below its lumbar ones or its discs behind its canal.

Everything is applied inside the spine mask only; outside stays 0, as in the records.
"""

from __future__ import annotations

import functools

import numpy as np


def augment(volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, config) -> np.ndarray:
    """One random augmentation of one dense slab: `augment_inside` of its in-mask values.

    volume: [slices, rows, cols] float, z-scored inside the mask, 0 outside (canonical axes left->right,
    superior->inferior, anterior->posterior). mask: same shape, 0/1 or bool. Returns float16 [slices, rows, cols].
    """
    inside = np.asarray(mask) != 0
    return augment_inside(np.asarray(volume)[inside], inside, rng, config)


def augment_inside(values: np.ndarray, inside: np.ndarray, rng: np.random.Generator, config) -> np.ndarray:
    """One random augmentation of a slab given as its in-mask values (what spinejax.records stores).

    values: [n] float16 or float32, the slab at the n True voxels of `inside` in C order. inside: bool
    [slices, rows, cols]. config: the `augment` block (ranges below; 0 turns a change off). Returns float16
    [slices, rows, cols] (the records' precision; the model casts its input on the device): the changed values,
    computed in float32, placed in the (flipped, shifted) mask, 0 elsewhere; a view into a buffer of its own.

    Only the n values are computed on (the mask holds 10-25% of a slab), flip and shift are one placement into
    a zero buffer padded by the shift, and float16 halves what batching copies: about 0.8 ms per CPU-preset slab
    on a 2-core Xeon, against 1.3 ms for converting the dense slab to float32 and passes over it (grain's input
    has to outrun the train step several times over, README "Training").
    """
    values = values.astype(np.float32)  # a copy: the caller's values are left alone
    if values.size:
        if config.gamma_log_range > 0:  # contrast: gamma on the in-mask values mapped to [0, 1]
            low, high = values.min(), values.max()
            span = max(float(high - low), 1e-6)
            gamma = np.exp(rng.uniform(-config.gamma_log_range, config.gamma_log_range))
            values -= low
            values *= np.float32(1 / span)
            values **= np.float32(gamma)
        else:
            low, span = np.float32(0), 1.0
        # back from [0, 1] and the gain and offset in one multiply-add: (v * span + low) * scale + shift
        scale = rng.uniform(1 - config.intensity_scale, 1 + config.intensity_scale)
        shift = rng.uniform(-config.intensity_shift, config.intensity_shift)
        values *= np.float32(span * scale)
        values += np.float32(low * scale + shift)
        if config.bias_field > 0:
            along_slices, plane = _bias_factors(inside.shape, rng, config.bias_field)
            # values are in C order, slice by slice: the depth factor repeats over each slice's count
            per_slice = inside.reshape(len(inside), -1).view(np.uint8).sum(axis=1, dtype=np.intp)  # bool as 0/1
            values *= np.repeat(along_slices, per_slice)
            values *= np.broadcast_to(plane, inside.shape)[inside]
        if config.noise_sd > 0:
            sd = np.float32(rng.uniform(0, config.noise_sd))
            noise = standard_normal(rng, values.size)
            noise *= sd
            values += noise
    flip = bool(config.flip_left_right) and rng.random() < 0.5
    pad = int(config.shift_voxels)
    dr, dc = rng.integers(-pad, pad + 1, size=2) if pad > 0 else (0, 0)
    slices, rows, cols = inside.shape
    buffer = np.zeros((slices, rows + 2 * pad, cols + 2 * pad), np.float16)
    # Where voxel (s, r, c) lands: slice s (or slices-1-s when flipped), row r + dr, column c + dc.
    target = buffer[:, pad + dr:pad + dr + rows, pad + dc:pad + dc + cols]
    (target[::-1] if flip else target)[inside] = values.astype(np.float16)
    return buffer[:, pad:pad + rows, pad:pad + cols]


def standard_normal(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n] float32 draws from N(0, 1) by the Box-Muller transform of float32 uniforms from `rng`.

    numpy's ziggurat (rng.standard_normal) was the costliest step of augmentation, about 0.22 ms for a slab's
    24,000 in-mask voxels; this takes 0.09. Uniforms have 24 bits, so draws beyond 5.8 sd (probability 7e-9)
    never come: irrelevant for noise whose sd is a few hundredths of the z-scored signal.
    """
    half = (n + 1) // 2
    uniform = rng.random(2 * half, dtype=np.float32)
    radius = np.log1p(-uniform[:half])  # 1 - u is in (0, 1]: the log is finite
    radius *= -2
    np.sqrt(radius, out=radius)
    angle = uniform[half:] * np.float32(2 * np.pi)
    out = np.empty(2 * half, np.float32)
    np.cos(angle, out=out[:half])
    np.sin(angle, out=out[half:])
    out[:half] *= radius
    out[half:] *= radius
    return out[:n]


def _bias_factors(shape, rng: np.random.Generator, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """exp of a random quadratic over the slab, coefficients ~ N(0, strength): a smooth gain of about +-strength,
    as its two factors (float32 [slices], float32 [rows, cols]); the field is their outer product.

    The quadratic's terms are z, y, x, z^2, y^2, x^2 and y*x (coordinates in [-1, 1]), so the field is
    exp(a z + d z^2) times a rows x cols plane: one multiply per voxel instead of seven passes and an exp.
    """
    c = rng.normal(0, strength, 7).astype(np.float32)  # one draw per term, in the order above
    z_terms, plane_terms = _quadratic_terms(tuple(shape))
    return np.exp(c[[0, 3]] @ z_terms), np.exp(np.tensordot(c[[1, 2, 4, 5, 6]], plane_terms, axes=1))



@functools.lru_cache(maxsize=8)
def _quadratic_terms(shape) -> tuple[np.ndarray, np.ndarray]:
    """(z and z^2 [2, slices], y, x, y^2, x^2, y*x [5, rows, cols]) over coordinates in [-1, 1], float32."""
    z, y, x = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    y, x = np.meshgrid(y, x, indexing="ij")
    terms = np.stack([z, z * z]), np.stack([y, x, y * y, x * x, y * x])
    for array in terms:
        array.flags.writeable = False  # shared between calls
    return terms
