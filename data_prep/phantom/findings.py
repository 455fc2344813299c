"""The radiology report of a drawn spine: condition x level x severity, graded from what was drawn.

Each feature column is `<condition>__<level>` holding a severity grade: 0 none, 1 mild, 2 moderate,
3 severe. Seven disc-level conditions over the 23 disc levels C2-C3..L5-S1 and two vertebra conditions
over the 23 vertebrae C2..L5 make 207 columns, the paper's "about 215 pathology features".
Grades come from fixed thresholds on the drawn measurements (documented in `GRADING`), the way a
radiologist grades a bulge by its size or a fracture by the Genant height-loss classes.
"""

from __future__ import annotations

import numpy as np

from data_prep.phantom.anatomy import Spine
from spinejax.scans import spine_labels

# condition -> (what is measured, [mild, moderate, severe] lower thresholds, levels)
GRADING: dict[str, tuple[str, tuple[float, float, float], str]] = {
    "disc_bulge": ("posterior bulge beyond the body line, mm", (1.5, 3.0, 5.0), "disc"),
    "disc_desiccation": ("loss of nucleus T2 signal against a young disc (900), fraction",
                         (0.3, 0.5, 0.7), "disc"),
    "disc_height_loss": ("loss of disc height, fraction", (0.15, 0.3, 0.45), "disc"),
    "disc_osteophyte": ("anterior osteophyte length at the level's endplates, mm", (1.0, 2.5, 4.0), "disc"),
    "canal_stenosis": ("share of the canal's AP diameter taken by bulge, spurs and ligament",
                       (0.25, 0.45, 0.65), "disc"),
    "endplate_irregularity": ("amplitude of endplate waviness, mm", (0.6, 1.2, 1.8), "disc"),
    "listhesis": ("anterior slip of the upper vertebra, fraction of its depth (Meyerding grades)",
                  (0.05, 0.25, 0.5), "disc"),
    "fracture": ("anterior vertebral height loss, fraction (Genant grades)", (0.2, 0.25, 0.4), "vertebra"),
    "marrow_change": ("band of endplate marrow change (Modic type 2), mm", (0.5, 2.5, 4.5), "vertebra"),
}
CONDITIONS: tuple[str, ...] = tuple(GRADING)


def feature_columns() -> list[str]:
    """All 207 feature column names, in a fixed order."""
    columns = []
    for condition, (_, _, kind) in GRADING.items():
        levels = spine_labels.DISC_LEVELS if kind == "disc" else spine_labels.VERTEBRAE
        columns += [f"{condition}__{level}" for level in levels]
    return columns


def grade(values: np.ndarray, thresholds: tuple[float, float, float]) -> np.ndarray:
    """Severity grade 0-3 of each measurement: the number of thresholds it reaches."""
    return np.searchsorted(np.asarray(thresholds), values, side="right").astype(np.int8)


def measurements(spine: Spine) -> dict[str, np.ndarray]:
    """What each condition measures, per level (23 values each), from the drawn spine."""
    # A vertebra's marrow change is the wider Modic band of the two discs it touches.
    modic_above = np.concatenate([[0.0], spine.modic_band[:-1]])
    return {
        "disc_bulge": spine.bulge_posterior,
        "disc_desiccation": 1.0 - spine.nucleus_signal / 900.0,
        "disc_height_loss": spine.disc_height_loss,
        "disc_osteophyte": spine.osteophyte,
        "canal_stenosis": spine.canal_narrowing(),
        "endplate_irregularity": spine.endplate_irregularity,
        "listhesis": spine.listhesis,
        "fracture": spine.fracture,
        "marrow_change": np.maximum(spine.modic_band, modic_above),
    }


def report(spine: Spine) -> dict[str, int]:
    """Feature column -> severity grade for one drawn spine."""
    row = {}
    measured = measurements(spine)
    for condition, (_, thresholds, kind) in GRADING.items():
        levels = spine_labels.DISC_LEVELS if kind == "disc" else spine_labels.VERTEBRAE
        for level, severity in zip(levels, grade(measured[condition], thresholds)):
            row[f"{condition}__{level}"] = int(severity)
    return row
