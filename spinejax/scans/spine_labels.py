"""Spine label convention of every mask spinejax reads or writes: TotalSpineSeg's.

TotalSpineSeg (Warszawer et al. 2025, github.com/neuropoly/totalspineseg) labels each vertebra and each
intervertebral disc of a spine MRI. Its final output uses the integer labels below, so a user's masks
made by TotalSpineSeg drop in unchanged:

    1 spinal cord, 2 spinal canal (CSF inside the dural sac, cord excluded)
    11-17  vertebrae C1-C7      21-32 vertebrae T1-T12     41-45 vertebrae L1-L5     50 sacrum
    63-67  discs C2-C3..C6-C7   71-82 discs C7-T1..T11-T12 91-95 discs T12-L1..L4-L5 100 disc L5-S1

A vertebra's label covers the whole bone (body and posterior elements); osteophytes belong to the bone
they grow from; a bulging disc keeps its disc label where it bulges into the canal. Label 0 is background.
This module is the only place these numbers live.
"""

from __future__ import annotations

CORD = 1
CANAL = 2
SACRUM = 50

_VERTEBRA_LABELS = {
    **{f"C{i}": 10 + i for i in range(1, 8)},
    **{f"T{i}": 20 + i for i in range(1, 13)},
    **{f"L{i}": 40 + i for i in range(1, 6)},
}

# Levels the pathology features and the phantoms cover: C2 to L5 vertebrae and the 23 discs below them
# (C2-C3 to L5-S1), as in radiology reports. C1 has no body and no disc above it.
VERTEBRAE: tuple[str, ...] = tuple(name for name in _VERTEBRA_LABELS if name != "C1")
DISC_LEVELS: tuple[str, ...] = tuple(
    f"{upper}-{lower}" for upper, lower in zip(VERTEBRAE, VERTEBRAE[1:] + ("S1",))
)

_DISC_LABELS = {
    **{f"C{i}-C{i + 1}": 61 + i for i in range(2, 7)},
    "C7-T1": 71,
    **{f"T{i}-T{i + 1}": 71 + i for i in range(1, 12)},
    "T12-L1": 91,
    **{f"L{i}-L{i + 1}": 91 + i for i in range(1, 5)},
    "L5-S1": 100,
}

LABELS: dict[str, int] = {
    "spinal_cord": CORD,
    "spinal_canal": CANAL,
    **{f"vertebra_{name}": value for name, value in _VERTEBRA_LABELS.items()},
    "sacrum": SACRUM,
    **{f"disc_{name}": value for name, value in _DISC_LABELS.items()},
}

REGIONS: tuple[str, ...] = ("cervical", "thoracic", "lumbar")


def vertebra_label(name: str) -> int:
    """Label of vertebra `name` ('C1'..'L5'); 'S1' is the sacrum."""
    if name == "S1":
        return SACRUM
    try:
        return _VERTEBRA_LABELS[name]
    except KeyError:
        raise ValueError(f"unknown vertebra {name!r}; expected C1-C7, T1-T12, L1-L5 or S1") from None


def disc_label(level: str) -> int:
    """Label of the disc at `level` ('C2-C3'..'L5-S1')."""
    try:
        return _DISC_LABELS[level]
    except KeyError:
        raise ValueError(f"unknown disc level {level!r}; expected one of {DISC_LEVELS}") from None


def region_of_level(level: str) -> str:
    """Spine region of a vertebra ('T4') or a disc ('T12-L1', named by its upper vertebra)."""
    head = level.split("-")[0]
    region = {"C": "cervical", "T": "thoracic", "L": "lumbar"}.get(head[:1])
    if region is None or head not in _VERTEBRA_LABELS:
        raise ValueError(f"unknown level {level!r}")
    return region


def labels_of_region(region: str) -> tuple[int, ...]:
    """Vertebra and disc labels that make up `region` ('cervical', 'thoracic' or 'lumbar')."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
    vertebrae = [vertebra_label(v) for v in _VERTEBRA_LABELS if region_of_level(v) == region]
    discs = [disc_label(d) for d in _DISC_LABELS if region_of_level(d) == region]
    return tuple(vertebrae + discs)
