"""Renders a drawn spine (`anatomy.Spine`) into a sagittal T2-weighted slab and its label map.

The phantom is analytic: every voxel centre is located in the spine's own coordinates (s: mm along the
centreline down from the top of C2; t: mm across it, positive anterior; x: mm left of the midline) and
tissue is decided there, so any geometry (spacing, tilt, flips, slice order) renders the same anatomy.
Because slabs are tilted only about the left-right axis, (s, t) are computed once per slice plane and
each slice differs only in x: structures carry a half-width in x per (s, t) pixel, and a slice of
thickness T covers a structure by the overlap of [x - T/2, x + T/2] with [-hw, hw] (partial volume).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from data_prep.phantom.acquisition import Acquisition
from data_prep.phantom.anatomy import CONUS_LEVEL, N_LEVELS, Spine
from spinejax.scans import spine_labels

SACRUM_HEIGHT = 60.0  # mm drawn below the L5-S1 disc

# T2 signal of tissues, arbitrary units (CSF brightest; fat bright on fast spin echo T2).
CSF, CORD, ANNULUS, CORTEX, LIGAMENT = 950.0, 430.0, 170.0, 70.0, 110.0
FAT, MUSCLE, NECK, MEDIASTINUM, ABDOMEN, PELVIS, HEAD, AIR = 680.0, 290.0, 320.0, 240.0, 380.0, 330.0, 420.0, 0.0


def spine_length(spine: Spine) -> float:
    """Length (mm) from the top of C2 to the top of S1 along the centreline."""
    return float(spine.vert_height.sum() + spine.disc_height.sum())


def _segments(spine: Spine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heights at t=0, slopes dh/dt, and depths of the 47 segments C2, C2-C3, C3, ..., L5-S1, sacrum."""
    heights = np.empty(2 * N_LEVELS + 1)
    slopes = np.zeros_like(heights)
    f = spine.fracture
    heights[0:-1:2] = spine.vert_height * (1.0 - f / 2.0)  # a wedge keeps its posterior height
    heights[1:-1:2] = spine.disc_height
    heights[-1] = SACRUM_HEIGHT
    wedge = -spine.vert_height * f / spine.vert_depth  # height change per mm towards anterior
    slopes[0:-1:2] = wedge
    slopes[1:-1:2] += -wedge / 2.0  # the discs on both sides open anteriorly, keeping the column straight
    slopes[1:-2:2] += -wedge[1:] / 2.0
    depth_disc = (spine.vert_depth + np.append(spine.vert_depth[1:], spine.vert_depth[-1])) / 2.0
    depths = np.empty_like(heights)
    depths[0:-1:2], depths[1:-1:2], depths[-1] = spine.vert_depth, depth_disc, spine.vert_depth[-1] * 0.9
    return heights, slopes, depths


def _centreline(spine: Spine, top_y: float, top_z: float, length: float):
    """Dense centreline: arrays (s, y, z, tangent_y, tangent_z), s = 0 at the top of C2."""
    zeta = np.arange(-150.0, length + 250.0, 0.5)  # depth below the top of C2 along z, mm
    v, d = spine.vert_height, spine.disc_height
    ends = np.cumsum(np.ravel(np.column_stack([v, d])))
    c_end, t_end, l_end = ends[11], ends[35], ends[45]  # C7-T1, T12-L1, L5-S1 discs

    def bow(lo: float, hi: float) -> np.ndarray:
        u = np.clip((zeta - lo) / (hi - lo), 0.0, 1.0)
        return np.sin(np.pi * u)

    y = (top_y - spine.lordosis_cervical * bow(0.0, c_end) + spine.kyphosis_thoracic * bow(c_end, t_end)
         - spine.lordosis_lumbar * bow(t_end, l_end))
    y = y + 0.7 * np.clip(zeta - l_end, 0.0, None)  # the sacrum turns backwards
    z = top_z - zeta
    step = np.hypot(np.diff(y), np.diff(z))
    s = np.concatenate([[0.0], np.cumsum(step)])
    s -= np.interp(0.0, zeta, s)
    ty, tz = np.gradient(y, s), np.gradient(z, s)
    norm = np.hypot(ty, tz)
    return s, y, z, ty / norm, tz / norm


def _spine_coordinates(y: np.ndarray, z: np.ndarray, line) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) of points (y, z): foot point on the centreline by Gauss-Newton from s(z)."""
    s_line, y_line, z_line, ty, tz = line
    s = np.interp(-z, -z_line, s_line)  # z falls along the line
    for _ in range(2):
        cy, cz = np.interp(s, s_line, y_line), np.interp(s, s_line, z_line)
        s = np.clip(s + (y - cy) * np.interp(s, s_line, ty) + (z - cz) * np.interp(s, s_line, tz),
                    s_line[0], s_line[-1])
    cy, cz = np.interp(s, s_line, y_line), np.interp(s, s_line, z_line)
    tangent_y, tangent_z = np.interp(s, s_line, ty), np.interp(s, s_line, tz)
    t = (y - cy) * tangent_z - (z - cz) * tangent_y  # anterior normal is (tz, -ty)
    return s, t


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth random field of unit scale over a 2D image, correlation length about `cell` pixels."""
    coarse = rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2))
    return ndimage.zoom(coarse, (shape[0] / coarse.shape[0], shape[1] / coarse.shape[1]), order=1,
                        grid_mode=True, mode="grid-wrap")


_WAVE_T = np.arange(-60.0, 60.0, 0.25)  # mm across the spine where endplates can be wavy


def _wave_table(phases: np.ndarray) -> np.ndarray:
    """Endplate waviness of unit amplitude, [boundaries, len(_WAVE_T)], from phases [boundaries, 3]."""
    t = _WAVE_T[None, :]
    return (np.sin(2 * np.pi * t / 9.0 + phases[:, :1]) + 0.6 * np.sin(2 * np.pi * t / 4.5 + phases[:, 1:2])
            + 0.3 * np.sin(2 * np.pi * t / 2.5 + phases[:, 2:])) / 1.9


def render(spine: Spine, acq: Acquisition, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws the slab.

    Returns (image [n_slices, rows, cols] float32 in scanner units after gain, bias and Rician noise,
    labels [n_slices, rows, cols] uint8 in the TotalSpineSeg convention), slices in increasing order
    along the slice normal.
    """
    rows, cols = acq.rows, acq.cols
    jj, ii = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64),
                         indexing="ij")
    row_dir, col_dir = np.asarray(acq.row_dir), np.asarray(acq.col_dir)
    y = acq.origin[1] + ii * acq.col_spacing * row_dir[1] + jj * acq.row_spacing * col_dir[1]
    z = acq.origin[2] + ii * acq.col_spacing * row_dir[2] + jj * acq.row_spacing * col_dir[2]
    slice_x = acq.slice_positions()[:, 0] - acq.spine_top[0]

    line = _centreline(spine, acq.spine_top[1], acq.spine_top[2], spine_length(spine))
    s, t = _spine_coordinates(y, z, line)
    geometry = _Geometry(spine)
    tex = np.random.default_rng(spine.texture_seed)
    marrow_texture = _smooth_field(tex, (rows, cols), 6)
    background = _background(spine, geometry, s, t, _smooth_field(tex, (rows, cols), 10))

    # Structures live in a band around the spine; elsewhere every slice shows the background.
    band = np.flatnonzero((t > -90.0) & (t < 45.0) & (s > -40.0) & (s < geometry.bound0[-1] + 5.0))
    hw, labels1d, signal1d = _structures(spine, geometry, s.ravel()[band], t.ravel()[band],
                                         marrow_texture.ravel()[band])
    occupied = hw.max(axis=0) > 0
    pixels, hw, labels1d, signal1d = band[occupied], hw[:, occupied], labels1d[:, occupied], signal1d[:, occupied]

    image = np.broadcast_to(background.astype(np.float32), (acq.n_slices, rows, cols)).copy()
    labels = np.zeros((acq.n_slices, rows, cols), np.uint8)
    half_thick = acq.slice_thickness / 2.0
    for k_slice, x in enumerate(slice_x):
        # Overlap of the slab [x - T/2, x + T/2] with each structure's [-hw, hw], as a fraction of T.
        cover = np.clip((np.minimum(x + half_thick, hw) - np.maximum(x - half_thick, -hw))
                        / acq.slice_thickness, 0.0, 1.0)
        value = image[k_slice].reshape(-1)[pixels]
        lab = np.zeros(len(pixels), np.uint8)
        inside = np.abs(x) < hw
        for index in range(len(hw)):
            value += cover[index] * (signal1d[index] - value)
            np.copyto(lab, labels1d[index], where=inside[index])
        image[k_slice].reshape(-1)[pixels] = value
        labels[k_slice].reshape(-1)[pixels] = lab

    image = ndimage.gaussian_filter(image, sigma=(0.0, 0.6, 0.6), truncate=2.0)  # in-plane PSF, 3 taps
    image *= _bias(acq, y, z)[None] * acq.gain
    sd = acq.noise * CSF * acq.gain
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= sd
    image += noise
    rng.standard_normal(image.shape, dtype=np.float32, out=noise)
    noise *= sd
    np.hypot(image, noise, out=image)  # magnitude of complex Gaussian noise: Rician
    return image, labels


class _Geometry:
    """Segment layout of a spine along s: boundaries, their tilt with t, depths, posterior elements."""

    def __init__(self, spine: Spine):
        heights, slopes, depths = _segments(spine)
        self.n_seg = len(heights)
        self.bound0 = np.concatenate([[0.0], np.cumsum(heights)])  # 48 boundaries at t = 0
        self.bound_slope = np.concatenate([[0.0], np.cumsum(slopes)])
        self.centres = (self.bound0[:-1] + self.bound0[1:]) / 2.0
        self.depths = depths
        amplitude = np.zeros(self.n_seg + 1)
        amplitude[1:-1:2] = spine.endplate_irregularity  # top of disc l = boundary 2l+1
        amplitude[2:-1:2] = spine.endplate_irregularity  # bottom of disc l = boundary 2l+2
        phases = np.zeros((self.n_seg + 1, 3))
        phases[1:-1:2], phases[2:-1:2] = spine.endplate_phase[:, 0], spine.endplate_phase[:, 1]
        self.wave = amplitude[:, None] * _wave_table(phases)

    def along(self, s: np.ndarray, per_vertebra: np.ndarray) -> np.ndarray:
        """A per-vertebra quantity interpolated along s."""
        return np.interp(s, self.centres[0:-1:2], per_vertebra)

    def depth(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s, self.centres, self.depths)

    def canal_back(self, spine: Spine, s: np.ndarray) -> np.ndarray:
        return -self.depth(s) / 2.0 - self.along(s, spine.canal_depth)


def _structures(spine: Spine, geometry: _Geometry, s: np.ndarray, t: np.ndarray, marrow_texture: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Structures at pixels (s, t) [n] (mm): (half-width in x [S, n] mm, label [S, n] uint8, signal [S, n]).

    Structures in increasing priority: airway, posterior elements, ligamentum flavum, canal, cord,
    vertebral bodies, discs.
    """
    g = geometry
    n_seg, bound0 = g.n_seg, g.bound0
    depth = g.depth(s)

    # Slips: everything above a slipped disc moves anteriorly, ramping across the disc.
    shift = np.zeros_like(s)
    for level in np.flatnonzero(spine.listhesis):
        top, bottom = bound0[2 * level + 1], bound0[2 * level + 2]
        ramp = np.clip((bottom - s) / (bottom - top), 0.0, 1.0)
        shift += spine.listhesis[level] * spine.vert_depth[level] * ramp
    t = t - shift
    t_clip = np.clip(t, -depth / 2.0, depth / 2.0)
    t_index = np.clip(np.round((t - _WAVE_T[0]) / 0.25).astype(np.intp), 0, len(_WAVE_T) - 1)

    def boundary(b: np.ndarray) -> np.ndarray:
        b = np.clip(b, 0, n_seg)
        return bound0[b] + g.bound_slope[b] * t_clip + g.wave[b, t_index]

    # Which segment: boundaries at t = 0, then wedges and wavy endplates move pixels by a segment or two.
    k = np.searchsorted(bound0[1:], s, side="right")
    for _ in range(2):
        k = np.where(s < boundary(k), k - 1, np.where(s >= boundary(k + 1), k + 1, k))
    k = np.clip(k, -1, n_seg)  # -1 above C2, n_seg below the sacrum
    top, bottom = boundary(k), boundary(k + 1)
    level = np.clip(k // 2, 0, N_LEVELS - 1)
    is_vertebra = (k >= 0) & (k < n_seg - 1) & (k % 2 == 0)
    is_disc = (k >= 0) & (k % 2 == 1)
    is_sacrum = k == n_seg - 1
    u = np.clip((s - top) / np.maximum(bottom - top, 1e-3), 0.0, 1.0)  # position within the segment

    width = g.along(s, spine.vert_width)
    canal_depth, canal_width = g.along(s, spine.canal_depth), g.along(s, spine.canal_width)
    canal_front = -depth / 2.0
    canal_back = canal_front - canal_depth
    vert_labels = np.array([spine_labels.vertebra_label(v) for v in spine_labels.VERTEBRAE], np.uint8)
    structures = []  # (half-width in x, label, signal), lowest priority first

    airway = (k <= 11) & (s > -30) & (t > depth / 2.0 + 5.0) & (t < depth / 2.0 + 19.0)
    structures.append((np.where(airway, 9.0, 0.0), np.zeros_like(vert_labels, shape=s.shape),
                       np.full_like(s, AIR)))

    # Posterior elements: lamina and spinous process behind the canal, sloping down; pedicles beside it.
    index = np.arange(N_LEVELS)
    pe_shift = np.select([index < 6, index < 18], [2.0, 9.0], 3.0)
    pe_length = np.select([index < 6, index < 18], [24.0, 32.0], 34.0)
    pe_start = bound0[0:-1:2][:N_LEVELS] + pe_shift
    pe_height = 0.75 * spine.vert_height
    v_pe = np.clip(np.searchsorted(pe_start, s) - 1, 0, N_LEVELS - 1)
    depth_back = np.clip((canal_back - t) / pe_length[v_pe], 0.0, 2.0)
    half = pe_height[v_pe] / 2.0 * (1.0 - 0.55 * depth_back)
    centre = pe_start[v_pe] + pe_height[v_pe] / 2.0 + 0.35 * pe_height[v_pe] * depth_back
    in_pe = (depth_back > 0.0) & (depth_back <= 1.0) & (np.abs(s - centre) < half) & (s >= 0)
    pe_hw = np.where(depth_back < 0.2, canal_width / 2.0 + 3.0, 3.5)
    in_pedicle = is_vertebra & (t >= canal_back) & (t < canal_front) & (u < 0.6)
    pe_rim = (np.abs(s - centre) > half - 1.3) | (depth_back > 0.93)
    structures.append((
        np.where(in_pe, pe_hw, np.where(in_pedicle, canal_width / 2.0 + 6.0, 0.0)),
        np.where(in_pe, vert_labels[v_pe], vert_labels[level]),
        np.where(in_pe & pe_rim, CORTEX, 0.9 * spine.marrow_signal[np.where(in_pe, v_pe, level)]),
    ))

    # Ligamentum flavum thickening and the canal: what the disc and spurs leave is CSF.
    lf = np.where(is_disc, spine.flavum_thickening[level] * np.sin(np.pi * u) ** 0.5, 0.0)
    in_canal_span = (s >= -15.0) & (s < bound0[-1] - 10.0)
    canal_mid = (canal_front + canal_back) / 2.0
    canal_shape = np.clip(1.0 - (np.abs(t - canal_mid) / (canal_depth / 2.0)) ** 3, 0.0, 1.0) ** (1 / 3)
    in_lf = in_canal_span & (t >= canal_back) & (t < canal_back + lf)
    structures.append((np.where(in_lf, canal_width / 2.0, 0.0), np.zeros_like(vert_labels, shape=s.shape),
                       np.full_like(s, LIGAMENT)))
    in_canal = in_canal_span & (t >= canal_back + lf) & (t < canal_front)
    structures.append((np.where(in_canal, canal_width / 2.0 * canal_shape, 0.0),
                       np.full(s.shape, spine_labels.CANAL, np.uint8), np.full_like(s, CSF)))

    # Cord: centred in what is left of the canal, squeezed where a bulge narrows it; ends at the conus.
    bulge_here = np.where(is_disc, spine.bulge_posterior[level] * np.sin(np.pi * u) ** 0.6, 0.0)
    front_eff, back_eff = canal_front - bulge_here, canal_back + lf
    cord_centre = (front_eff + back_eff) / 2.0
    conus = bound0[2 * CONUS_LEVEL + 2]
    taper = np.clip((conus - s) / 20.0, 0.0, 1.0)
    cord_radius = np.minimum(g.along(s, spine.cord_depth) / 2.0 * taper, 0.45 * (front_eff - back_eff))
    cord_r = np.abs(t - cord_centre) / np.maximum(cord_radius, 1e-3)
    in_cord = in_canal_span & (s < conus) & (cord_r < 1.0)
    cord_width = np.where(s < bound0[12], 6.0, 4.5) * taper
    structures.append((np.where(in_cord, cord_width * np.sqrt(np.clip(1 - cord_r**2, 0, 1)), 0.0),
                       np.full(s.shape, spine_labels.CORD, np.uint8), np.full_like(s, CORD)))

    # Vertebral bodies (and sacrum) with cortex, osteophytes at the corners and Modic bands.
    dist_top, dist_bottom = s - top, bottom - s
    near_top = dist_top < dist_bottom
    disc_above, disc_below = np.clip(level - 1, 0, N_LEVELS - 1), level
    osteo = np.where(near_top, np.where(level > 0, spine.osteophyte[disc_above], 0.0),
                     spine.osteophyte[disc_below])
    modic = np.where(near_top, np.where(level > 0, spine.modic_band[disc_above], 0.0),
                     spine.modic_band[disc_below])
    dist_plate = np.minimum(dist_top, dist_bottom)
    sacral_depth = np.where(is_sacrum, depth * np.clip(1.0 - 0.55 * u, 0.3, 1.0), depth)
    in_body = (is_vertebra | is_sacrum) & (np.abs(t) <= sacral_depth / 2.0)
    spur_front = is_vertebra & (t > depth / 2.0) & (dist_plate < osteo - (t - depth / 2.0))
    spur_back = is_vertebra & (t < -depth / 2.0) & (dist_plate < 0.5 * osteo - (-depth / 2.0 - t))
    body = in_body | spur_front | spur_back
    body_shape = np.clip(1.0 - np.abs(2.0 * t / sacral_depth) ** 4, 0.0, 1.0) ** 0.25
    body_hw = np.where(in_body, width / 2.0 * body_shape, np.where(body, width / 4.0, 0.0))
    rim = np.minimum(dist_plate, sacral_depth / 2.0 - np.abs(t))
    marrow = np.where(is_sacrum, spine.marrow_signal[-1], spine.marrow_signal[level]) * (
        1.0 + 0.08 * marrow_texture)
    body_signal = np.where(dist_plate < modic, marrow + 180.0, marrow)
    body_signal = np.where((rim < 1.2) | ~in_body, CORTEX + 60.0 * ~in_body, body_signal)
    body_label = np.where(is_sacrum, spine_labels.SACRUM, vert_labels[level]).astype(np.uint8)
    structures.append((body_hw, body_label, body_signal))

    # Discs: annulus, a bright nucleus fading with degeneration, bulges front and back.
    bulge_front = np.where(is_disc, spine.bulge_anterior[level] * np.sin(np.pi * u) ** 0.6, 0.0)
    extent = np.where(t < 0, depth / 2.0 + bulge_here, depth / 2.0 + bulge_front)
    in_disc = is_disc & (np.abs(t) < extent)
    disc_width = (spine.vert_width[level] + spine.vert_width[np.clip(level + 1, 0, N_LEVELS - 1)]) / 2.0
    disc_hw = np.where(in_disc, disc_width / 2.0 * np.clip(1.0 - np.abs(t / extent) ** 4, 0, 1) ** 0.25, 0.0)
    r2 = ((u - 0.5) / 0.32) ** 2 + ((t + 0.05 * depth) / (0.33 * depth)) ** 2
    nucleus = np.clip(1.6 * (1.0 - r2), 0.0, 1.0)
    disc_signal = ANNULUS + (spine.nucleus_signal[level] - ANNULUS) * nucleus
    disc_labels = np.array([spine_labels.disc_label(d) for d in spine_labels.DISC_LEVELS], np.uint8)
    structures.append((disc_hw, disc_labels[level], disc_signal))

    return (np.stack([st[0] for st in structures]).astype(np.float32),
            np.stack([st[1] for st in structures]).astype(np.uint8),
            np.stack([st[2] for st in structures]).astype(np.float32))


def _background(spine: Spine, geometry: _Geometry, s: np.ndarray, t: np.ndarray, texture: np.ndarray
                ) -> np.ndarray:
    """Soft tissue around the spine (same in every slice): muscle, fat, air, neck, chest, abdomen."""
    bound0 = geometry.bound0
    cervical_end, thoracic_end, sacrum_end = bound0[12], bound0[36], bound0[-1]
    muscle = np.interp(s, [0.0, cervical_end, sacrum_end], [55.0, 60.0, 75.0])
    skin_back = geometry.canal_back(spine, s) - muscle
    fat_back = skin_back - spine.fat_thickness
    front_tissue = np.select([s < 0, s < cervical_end, s < thoracic_end, s < sacrum_end],
                             [HEAD, NECK, MEDIASTINUM, ABDOMEN], PELVIS)
    skin_front = geometry.depth(s) / 2.0 + np.select([s < -40, s < cervical_end], [90.0, 60.0], 180.0)
    out = np.where(t > 0, front_tissue * (1.0 + 0.12 * texture), MUSCLE * (1.0 + 0.06 * texture))
    out = np.where((t < skin_back) & (t >= fat_back), FAT, out)
    out = np.where((t < fat_back) | (t > skin_front), AIR, out)
    out = np.where((t > skin_front - 12.0) & (t <= skin_front), FAT, out)
    return out


def _bias(acq: Acquisition, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Smooth coil sensitivity over the slice plane: posterior coil falloff plus a low-order drift."""
    yn = (y - y.mean()) / (np.ptp(y) / 2.0 + 1e-6)
    zn = (z - z.mean()) / (np.ptp(z) / 2.0 + 1e-6)
    a = acq.bias_coefficients
    return np.exp(a[0] * yn + a[1] * zn + a[2] * yn * zn + a[3] * zn**2 + 0.5 * abs(a[4]) * (yn - 1.0)
                  ).astype(np.float32)
