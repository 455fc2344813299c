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
from collections.abc import Sequence

import numpy as np


def augment(volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, config) -> np.ndarray:
    """One random augmentation of one dense slab: `augment_inside` of its in-mask values.

    volume: [slices, rows, cols] float, z-scored inside the mask, 0 outside (canonical axes left->right,
    superior->inferior, anterior->posterior). mask: same shape, 0/1 or bool. Returns float16 [slices, rows, cols].
    """
    inside = np.asarray(mask) != 0
    return augment_inside(np.asarray(volume)[inside], inside, rng, config)


def augment_inside(values: np.ndarray, inside: np.ndarray, rng: np.random.Generator, config) -> np.ndarray:
    """One random augmentation of a slab given as its in-mask values (what spinejax.records stores):
    `augment_batch` of a batch of one. values: [n] float16 or float32, the slab at the n True voxels of `inside`
    (bool [slices, rows, cols]) in C order. Returns float16 [slices, rows, cols]."""
    return augment_batch([values], [inside], rng, config)[0]


def augment_batch(values: Sequence[np.ndarray], insides: Sequence[np.ndarray], rng: np.random.Generator,
                  config) -> np.ndarray:
    """One random augmentation of each slab of a batch, each given as its in-mask values.

    values[i]: [n_i] float16 or float32, slab i at the n_i True voxels of insides[i] in C order. insides[i]: bool
    [slices, rows, cols], the same shape for every slab. config: the `augment` block (ranges below; 0 turns a
    change off). Returns float16 [batch, slices, rows, cols], C-contiguous (the records' precision; the model casts
    its input on the device): each slab's changed values, computed in float32, placed in its (flipped, shifted)
    mask, 0 elsewhere. The caller's arrays are left alone.

    Per batch, not per slab: every slab's values are computed on in one float32 buffer, so a batch allocates a
    handful of arrays instead of a dozen per slab and is never stacked (after XLA has compiled a step in the
    process, fresh numpy allocations cost more: README "Training"). Each slab is then scattered into one reused
    float16 slab (a masked assignment into a contiguous array, its fast case) and copied, flipped and shifted,
    into the batch array; the copy's window drops what moves off the grid. Only in-mask values are cast to
    float16: numpy casts float32 to float16 one value at a time (1.8 ns a value, 0.26 ms a whole slab). The
    draws: per slab gamma, gain, offset, the 7 bias coefficients, noise sd, flip, row and column shift (each an
    array over the batch), then the noise.
    """
    count, shape = len(values), tuple(insides[0].shape)
    sizes = np.array([v.size for v in values], np.intp)
    ends = np.cumsum(sizes)
    work = np.concatenate([np.ravel(v) for v in values], dtype=np.float32)
    gammas = np.exp(rng.uniform(-config.gamma_log_range, config.gamma_log_range, count))
    gains = rng.uniform(1 - config.intensity_scale, 1 + config.intensity_scale, count)
    offsets = rng.uniform(-config.intensity_shift, config.intensity_shift, count)
    coefficients = rng.normal(0, config.bias_field, (count, 7)) if config.bias_field > 0 else None
    noise_sds = rng.uniform(0, config.noise_sd, count).astype(np.float32)
    flips = (rng.random(count) < 0.5) & bool(config.flip_left_right)
    pad = int(config.shift_voxels)
    moves = rng.integers(-pad, pad + 1, (count, 2)) if pad > 0 else np.zeros((count, 2), np.intp)
    if coefficients is not None:  # the batch's bias factors in two array operations, not two per slab
        along_slices, planes = _bias_factors_from(shape, coefficients)
        field = np.empty(shape, np.float32)
    for i in range(count):
        segment = work[ends[i] - sizes[i]:ends[i]]
        if not segment.size:
            continue
        if config.gamma_log_range > 0:  # contrast: gamma on the in-mask values mapped to [0, 1]
            low, high = segment.min(), segment.max()
            span = max(float(high - low), 1e-6)
            segment -= low
            segment *= np.float32(1 / span)
            np.power(segment, np.float32(gammas[i]), out=segment)
        else:
            low, span = np.float32(0), 1.0
        # back from [0, 1] and the gain and offset in one multiply-add: (v * span + low) * gain + offset
        segment *= np.float32(span * gains[i])
        segment += np.float32(low * gains[i] + offsets[i])
        if coefficients is not None:  # the field made densely (one multiply), read at the mask by one gather
            np.multiply(along_slices[i][:, None, None], planes[i], out=field)
            segment *= field[insides[i]]
    if config.noise_sd > 0 and work.size:
        noise = standard_normal(rng, work.size)
        noise *= np.repeat(noise_sds, sizes)
        work += noise
    out = np.zeros((count, *shape), np.float16)
    slab = np.empty(shape, np.float16)  # one slab unmoved: a contiguous scatter, then one strided copy
    for i in range(count):
        slab.fill(0)
        slab[insides[i]] = work[ends[i] - sizes[i]:ends[i]]  # rounded to float16 here, in-mask values only
        _place(out[i], slab, bool(flips[i]), int(moves[i, 0]), int(moves[i, 1]))
    return out


def _place(out: np.ndarray, slab: np.ndarray, flip: bool, dr: int, dc: int) -> None:
    """Copies `slab` into the zeros of `out` (both [slices, rows, cols]): voxel (s, r, c) lands at slice s
    (slices-1-s when flipped), row r + dr, column c + dc; what moves off the grid is dropped."""
    slices, rows, cols = slab.shape
    if abs(dr) >= rows or abs(dc) >= cols:  # everything moves off (slices of a negative stop would wrap around)
        return
    source = slab[:, max(0, -dr):rows - max(0, dr), max(0, -dc):cols - max(0, dc)]
    out[:, max(0, dr):rows - max(0, -dr), max(0, dc):cols - max(0, -dc)] = source[::-1] if flip else source


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


def _bias_factors_from(shape, coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exp of the quadratic with `coefficients` ([..., 7]; augmentation draws them ~ N(0, bias_field), a smooth gain
    of about +-bias_field) over a slab of `shape` [slices, rows, cols], as its two factors (float32 [..., slices] and
    [..., rows, cols]); the field is their outer product. A batch of coefficient rows gives a batch of factors.

    The quadratic's terms are z, y, x, z^2, y^2, x^2 and y*x (coordinates in [-1, 1]), so the field is
    exp(a z + d z^2) times a rows x cols plane: one multiply per voxel instead of seven passes and an exp.
    """
    c = np.asarray(coefficients, np.float32)
    z_terms, plane_terms = _quadratic_terms(tuple(shape))
    return np.exp(c[..., [0, 3]] @ z_terms), np.exp(np.tensordot(c[..., [1, 2, 4, 5, 6]], plane_terms, axes=1))


@functools.lru_cache(maxsize=8)
def _quadratic_terms(shape) -> tuple[np.ndarray, np.ndarray]:
    """(z and z^2 [2, slices], y, x, y^2, x^2, y*x [5, rows, cols]) over coordinates in [-1, 1], float32."""
    z, y, x = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    y, x = np.meshgrid(y, x, indexing="ij")
    terms = np.stack([z, z * z]), np.stack([y, x, y * y, x * x, y * x])
    for array in terms:
        array.flags.writeable = False  # shared between calls
    return terms
