"""One person's spine at one scan: level sizes, curves and the degeneration drawn from biological age.

Everything here is in millimetres along the spine (`s`, down from the top of C2) and across it (`t`,
towards anterior). The rendering (`render.py`) turns a `Spine` into voxels; the report (`findings.py`)
grades what was drawn here, so images and reports cannot disagree.

Degeneration of disc level l (0 young, about 1 at old age):

    d_l = clip(susceptibility_l * ((bio_age - 15) / 65) ** 1.3 + e_l, 0, 1.4)

with e_l a persistent per-person level offset, N(0, level_sd^2). Disc height loss, nucleus signal loss,
bulges, osteophytes, endplate irregularity, ligamentum flavum thickening, marrow change next to the
endplates and, at old age, wedge fractures and slips all grow with d_l or with bio_age.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spinejax.scans import spine_labels

N_LEVELS = len(spine_labels.VERTEBRAE)  # 23 vertebrae C2..L5 and 23 discs C2-C3..L5-S1

# Reference adult sizes (mm) of vertebrae C2..L5: posterior body height, AP depth, LR width.
_VERT_HEIGHT = np.array([30, 14, 14, 14, 14, 15] + [17, 18, 18.5, 19, 19.5, 20, 20.5, 21, 22, 23, 24, 25]
                        + [26, 27, 27, 27, 26], float)
_VERT_DEPTH = np.array([16, 16, 16, 17, 17, 18] + list(np.linspace(19, 30, 12)) + [31, 32, 33, 34, 34],
                       float)
_VERT_WIDTH = np.array([20, 20, 21, 22, 23, 25] + list(np.linspace(26, 40, 12)) + [42, 44, 46, 48, 50],
                       float)
# Disc heights (mm) C2-C3..L5-S1.
_DISC_HEIGHT = np.array([4.5, 5, 5.5, 5.5, 5.5, 5] + [4, 4, 4, 4.5, 4.5, 5, 5, 5.5, 6, 6.5, 7] + [8]
                        + [9, 10, 11, 12, 11], float)
# How strongly each disc level degenerates with age (lower cervical and lower lumbar the most).
_SUSCEPTIBILITY = np.array([0.5, 0.7, 0.85, 1.0, 0.9, 0.55] + [0.45, 0.45, 0.5, 0.55, 0.6, 0.6, 0.6, 0.6,
                           0.6, 0.55, 0.55] + [0.6] + [0.65, 0.75, 0.85, 1.0, 1.0], float)
_REGION = np.array([spine_labels.region_of_level(v) for v in spine_labels.VERTEBRAE])
# Region scale of bulges and osteophytes: thoracic discs bulge little.
_BULGE_SCALE = np.select([_REGION == "cervical", _REGION == "thoracic"], [0.75, 0.45], 1.0)
CONUS_LEVEL = spine_labels.DISC_LEVELS.index("L1-L2")  # the cord ends at the L1-L2 disc


@dataclasses.dataclass(frozen=True)
class AnatomyParams:
    """Parameters of anatomy and degeneration; written to ground_truth.json."""

    level_sd: float = 0.12  # per-level degeneration offset
    size_sd: float = 0.04  # person-to-person size variation (fraction)
    age_fracture_rate: float = 0.12  # chance of one osteoporotic wedge fracture at bio age 85 (women x1.5)
    age_listhesis_rate: float = 0.15  # chance of a grade 1 degenerative slip at L4-L5 at bio age 80
    marrow_base: float = 330.0  # T2 marrow signal at 25 years, arbitrary units
    marrow_per_year: float = 3.2  # fatty conversion


@dataclasses.dataclass(frozen=True)
class Spine:
    """A spine as drawn. Arrays over levels have 23 entries: vertebrae C2..L5 or discs C2-C3..L5-S1.

    Lengths in mm; intensities in arbitrary T2 units before acquisition scaling.
    """

    vert_height: np.ndarray  # posterior body height
    vert_depth: np.ndarray  # AP depth of the body
    vert_width: np.ndarray  # LR width of the body
    disc_height: np.ndarray  # height after degenerative loss
    disc_height_loss: np.ndarray  # fraction lost, 0..1
    degeneration: np.ndarray  # d_l
    nucleus_signal: np.ndarray  # T2 signal of the nucleus
    bulge_posterior: np.ndarray  # mm beyond the posterior body line
    bulge_anterior: np.ndarray
    osteophyte: np.ndarray  # anterior spur length at both endplates of the level; posterior is half
    endplate_irregularity: np.ndarray  # amplitude of the endplate waviness, mm
    flavum_thickening: np.ndarray  # mm the ligamentum flavum takes from the canal at the level
    modic_band: np.ndarray  # mm of altered marrow next to both endplates of the level
    fracture: np.ndarray  # per vertebra: fraction of anterior height lost (wedge), 0 = none
    listhesis: np.ndarray  # per disc level: anterior slip of the upper vertebra, fraction of depth
    marrow_signal: np.ndarray  # per vertebra
    canal_depth: np.ndarray  # per vertebra, AP diameter of the canal
    canal_width: np.ndarray
    cord_depth: np.ndarray
    lordosis_cervical: float  # mm of anterior bow
    kyphosis_thoracic: float  # mm of posterior bow
    lordosis_lumbar: float
    fat_thickness: float  # posterior subcutaneous fat, mm
    endplate_phase: np.ndarray  # [23, 2, 3] phases of the endplate waviness (upper, lower plate)
    texture_seed: int  # seeds marrow and soft-tissue texture

    def canal_narrowing(self) -> np.ndarray:
        """Per disc level: fraction of the canal's AP diameter taken by bulge, spurs and ligament."""
        upper = self.canal_depth
        intrusion = self.bulge_posterior + 0.5 * self.osteophyte + self.flavum_thickening
        return np.clip(intrusion / upper, 0.0, 1.0)


def _degeneration(bio_age: float, offsets: np.ndarray) -> np.ndarray:
    g = max(bio_age - 15.0, 0.0) / 65.0
    return np.clip(_SUSCEPTIBILITY * g**1.3 + offsets, 0.0, 1.4)


def draw_spine(person_seed: int, bio_age: float, sex: str, abnormal_kind: str,
               p: AnatomyParams = AnatomyParams()) -> Spine:
    """Draws the spine of one person at one scan.

    Everything persistent about the person (size, level offsets, which vertebra would fracture) comes
    from `person_seed`, so a follow-up scan of the same person at an older `bio_age` shows the same
    spine, further degenerated. `abnormal_kind` is '' for a normal spine or one of
    population.PopulationParams.abnormal_kinds.
    """
    rng = np.random.default_rng(person_seed)
    size = (1.04 if sex == "M" else 0.96) * (1.0 + p.size_sd * rng.standard_normal())
    offsets = rng.normal(0.0, p.level_sd, N_LEVELS)
    d = _degeneration(bio_age, offsets)
    noise = lambda scale: 1.0 + scale * rng.standard_normal(N_LEVELS)  # noqa: E731

    height_loss = np.clip(0.42 * np.minimum(d, 1.2) * noise(0.1), 0.0, 0.7)
    dd = np.clip(d - 0.2, 0.0, None)
    bulge_post = 4.2 * dd**1.3 * _BULGE_SCALE * np.clip(noise(0.25), 0.3, None)
    bulge_ant = 0.6 * bulge_post * noise(0.2)
    osteo = 5.5 * np.clip(d - 0.35, 0.0, None) ** 1.2 * _BULGE_SCALE * np.clip(noise(0.3), 0.2, None)
    irregular = np.clip(1.8 * np.clip(d - 0.25, 0.0, None) + 0.15 * rng.standard_normal(N_LEVELS), 0, 3)
    flavum = 2.6 * np.clip(d - 0.3, 0.0, None) * np.where(_REGION == "thoracic", 0.4, 1.0)
    modic = np.clip(9.0 * (d - 0.7), 0.0, 6.0)
    nucleus = np.clip(900.0 * (1.0 - 0.78 * np.minimum(d, 1.1)) * noise(0.06), 170.0, 1000.0)
    marrow = (p.marrow_base + p.marrow_per_year * (bio_age - 25.0) + 20.0 * rng.standard_normal()
              + 15.0 * rng.standard_normal(N_LEVELS))

    fracture = np.zeros(N_LEVELS)
    # Osteoporotic wedge fracture: persistent draw u, so a person who has one keeps it at follow-up.
    u_fracture, fracture_level = rng.random(), rng.integers(spine_labels.VERTEBRAE.index("T6"),
                                                            spine_labels.VERTEBRAE.index("L2") + 1)
    fracture_depth = rng.uniform(0.2, 0.35)
    rate = p.age_fracture_rate * (1.5 if sex == "F" else 0.7) * np.clip((bio_age - 55.0) / 30.0, 0, 1) ** 2
    if u_fracture < rate:
        fracture[fracture_level] = fracture_depth
    listhesis = np.zeros(N_LEVELS)
    l4 = spine_labels.DISC_LEVELS.index("L4-L5")
    u_slip, slip = rng.random(), rng.uniform(0.06, 0.2)
    if u_slip < p.age_listhesis_rate * np.clip((bio_age - 50.0) / 30.0, 0, 1):
        listhesis[l4] = slip

    # Non-age-related pathology, drawn from its own stream so normal anatomy stays the same.
    arng = np.random.default_rng([person_seed, 1])
    # Each kind is a constellation of findings, as in real reports, not a single abnormal grade.
    if abnormal_kind == "multiple_fractures":  # trauma or pathological: wedges, marrow oedema, broken plates
        first = arng.integers(spine_labels.VERTEBRAE.index("T5"), spine_labels.VERTEBRAE.index("L2"))
        levels = first + np.sort(arng.choice(4, size=arng.integers(2, 5), replace=False))
        fracture[levels] = arng.uniform(0.3, 0.55, len(levels))
        for v in levels:  # the discs above (v - 1) and below (v) a fractured body
            for disc in (v - 1, v):
                if 0 <= disc < N_LEVELS:
                    modic[disc] = max(modic[disc], arng.uniform(3.0, 6.0))
                    irregular[disc] = max(irregular[disc], arng.uniform(1.9, 2.8))
    elif abnormal_kind == "focal_stenosis":  # a large herniation narrowing the canal at one level
        level = spine_labels.DISC_LEVELS.index(
            arng.choice(["C4-C5", "C5-C6", "C6-C7", "L3-L4", "L4-L5"]))
        bulge_post[level] = arng.uniform(7.0, 10.0) * (0.8 if level < 6 else 1.0)
        flavum[level] += arng.uniform(2.0, 3.5)
        for neighbour in (level - 1, level + 1):
            bulge_post[neighbour] = max(bulge_post[neighbour], arng.uniform(3.0, 4.5))
    elif abnormal_kind == "spondylolisthesis":  # isthmic slip with a collapsed, degenerate disc
        level = spine_labels.DISC_LEVELS.index("L5-S1" if arng.random() < 0.7 else "L4-L5")
        listhesis[level] = arng.uniform(0.3, 0.6)
        height_loss[level] = max(height_loss[level], arng.uniform(0.45, 0.6))
        irregular[level] = max(irregular[level], arng.uniform(1.9, 2.6))
        modic[level] = max(modic[level], arng.uniform(3.0, 5.0))
        flavum[level] += arng.uniform(3.0, 5.0)
        osteo[level] = max(osteo[level], arng.uniform(2.5, 4.5))
    elif abnormal_kind:
        raise ValueError(f"unknown abnormal kind {abnormal_kind!r}")

    canal_depth = np.select([_REGION == "cervical", _REGION == "thoracic"], [13.5, 13.0], 16.0)
    canal_width = np.select([_REGION == "cervical", _REGION == "thoracic"], [22.0, 16.0], 22.0)
    cord_depth = np.where(_REGION == "cervical", 8.0, 6.5)
    age_excess = bio_age - 25.0
    return Spine(
        vert_height=_VERT_HEIGHT * size,
        vert_depth=_VERT_DEPTH * size,
        vert_width=_VERT_WIDTH * size,
        disc_height=_DISC_HEIGHT * size * (1.0 - height_loss),
        disc_height_loss=height_loss,
        degeneration=d,
        nucleus_signal=nucleus,
        bulge_posterior=bulge_post,
        bulge_anterior=bulge_ant,
        osteophyte=osteo,
        endplate_irregularity=irregular,
        flavum_thickening=flavum,
        modic_band=modic,
        fracture=fracture,
        listhesis=listhesis,
        marrow_signal=marrow,
        canal_depth=canal_depth * size * (1.0 + 0.06 * rng.standard_normal()),
        canal_width=canal_width * size,
        cord_depth=cord_depth * size,
        lordosis_cervical=float(max(9.0 + 3.0 * rng.standard_normal() - 0.04 * age_excess, 0.0)),
        kyphosis_thoracic=float(max(22.0 + 0.22 * age_excess + 5.0 * rng.standard_normal(), 5.0)),
        lordosis_lumbar=float(max(20.0 - 0.06 * age_excess + 4.0 * rng.standard_normal(), 4.0)),
        fat_thickness=float(np.clip(rng.normal(15.0, 6.0), 4.0, 35.0)),
        endplate_phase=rng.uniform(0.0, 2.0 * np.pi, (N_LEVELS, 2, 3)),
        texture_seed=int(rng.integers(2**31)),
    )
