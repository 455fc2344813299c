"""From a scan and its label map in the canonical frame to one fixed-size, masked, normalised region crop.

The preprocessing plan (nnU-Net's idea: decided once, saved with the records, reused unchanged at
evaluation) fixes the target spacing, the grid of each region, the mask dilation and the intensity
clipping. Its hash travels in every record so stale records are refused.

Steps, once per series (`resample`):
1. Crop the canonical scan to the spine plus what any region's grid can reach, so resampling touches
   only what can be kept.
2. Resample to the plan's spacing: linear for the image, nearest for labels (no invented labels).
3. Mask: every spine structure (vertebrae, discs, canal, cord), dilated by `mask_dilation_mm` as the
   paper did after nnU-Net; everything else is zeroed.
Then per region, whole spine, cervical, thoracic, lumbar (`cut_region`):
4. Centre the region's bounding box (its vertebrae and discs) in the plan's grid, cropping or padding.
5. Intensity: clip to robust percentiles within the mask, then z-score within the mask.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from spinejax.scans import resampling, spine_labels
from spinejax.scans.canonical import Volume
from spinejax.scans.refusal import Refusal

REGIONS = ("whole", "cervical", "thoracic", "lumbar")
_SPINE_STRUCTURES = tuple(sorted(set(spine_labels.LABELS.values())))


def region_labels(region: str) -> tuple[int, ...]:
    """Vertebra and disc labels whose extent defines the crop of `region`."""
    if region == "whole":
        return tuple(v for v in _SPINE_STRUCTURES if v not in (spine_labels.CORD, spine_labels.CANAL))
    return spine_labels.labels_of_region(region)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Preprocessing plan (values: configs/records.py). Axes are the canonical ones: slices L->R, rows
    S->I, columns A->P; spacing and margins in mm; grids in voxels per region."""

    spacing_mm: tuple[float, float, float]
    grids: tuple[tuple[str, tuple[int, int, int]], ...]
    mask_dilation_mm: float
    clip_percentiles: tuple[float, float]
    crop_margin_mm: float
    min_slices: int  # fewer sagittal slices than this is not a whole-spine slab: refused
    max_missing_level_share: float  # a region missing more of its vertebrae and discs than this is refused

    def grid(self, region: str) -> tuple[int, int, int]:
        return dict(self.grids)[region]

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        """The plan to_json wrote (a records manifest's or a model bundle's)."""
        return cls(spacing_mm=tuple(data["spacing_mm"]), grids=tuple((r, tuple(g)) for r, g in data["grids"]),
                   mask_dilation_mm=data["mask_dilation_mm"], clip_percentiles=tuple(data["clip_percentiles"]),
                   crop_margin_mm=data["crop_margin_mm"], min_slices=data["min_slices"],
                   max_missing_level_share=data["max_missing_level_share"])

    def fingerprint(self) -> str:
        """16 hex characters that change whenever anything in the plan changes."""
        text = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(text).hexdigest()[:16]


class RegionError(Refusal):
    """The label map lacks what a region needs (code and message: spinejax.scans.refusal)."""


def region_levels(region: str) -> tuple[str, ...]:
    """Names of the vertebrae (C2..L5) and discs (C2-C3..L5-S1) that make up `region`, top to bottom."""
    names = [n for pair in zip(spine_labels.VERTEBRAE, spine_labels.DISC_LEVELS) for n in pair]
    return tuple(n for n in names if region == "whole" or spine_labels.region_of_level(n) == region)


def _label_of(name: str) -> int:
    return spine_labels.disc_label(name) if "-" in name else spine_labels.vertebra_label(name)


def coverage(present_labels: set[int], plan: Plan, region: str) -> tuple[str, ...]:
    """The levels of `region` (region_levels) whose label is among `present_labels` (the labels of the
    native-resolution mask). Raises RegionError 'region_absent' when none are, 'region_partial' when more
    than plan.max_missing_level_share of them are missing: a lumbar-only scan is not a whole-spine record."""
    levels = region_levels(region)
    present = tuple(n for n in levels if _label_of(n) in present_labels)
    if not present:
        raise RegionError("region_absent", f"no {region} vertebra or disc labels in the mask")
    missing = len(levels) - len(present)
    if missing > plan.max_missing_level_share * len(levels):
        raise RegionError("region_partial", f"{missing} of the {len(levels)} {region} vertebrae and discs are "
                                            f"absent from the mask (at most {plan.max_missing_level_share:.0%})")
    return present


def resample(scan: Volume, labels: Volume, plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan and labels (canonical, same grid) resampled to the plan's spacing, cropped to the spine plus
    a margin, with the dilated spine mask: (image float32, labels, mask bool), all [s, r, c]."""
    if scan.data.shape != labels.data.shape:
        raise RegionError("mask_grid", f"mask shape {labels.data.shape} differs from scan shape {scan.data.shape}")
    spine = np.isin(labels.data, _SPINE_STRUCTURES, kind="table")
    if not spine.any():
        raise RegionError("mask_no_spine", "the mask holds no spine labels")
    spacing, target = scan.spacing, np.asarray(plan.spacing_mm, float)
    # Crop to what any region's grid can reach around the spine, so resampling skips the rest.
    reach = max(np.max(g) for _, g in plan.grids) * target.max() / 2.0 + plan.crop_margin_mm
    low, high = resampling.bounding_box(spine)
    start = np.maximum(np.floor(low - reach / spacing).astype(int), 0)
    stop = np.minimum(np.ceil(high + reach / spacing).astype(int), scan.data.shape)
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    shape = resampling.zoom_shape(scan.data[box].shape, spacing / target)
    image = resampling.zoom_linear(scan.data[box], shape)
    label = resampling.zoom_nearest(labels.data[box], shape)
    mask = resampling.dilate_mm(np.isin(label, _SPINE_STRUCTURES, kind="table"), target, plan.mask_dilation_mm)
    return image, label, mask


def cut_region(image: np.ndarray, label: np.ndarray, mask: np.ndarray, plan: Plan, region: str
               ) -> dict[str, np.ndarray]:
    """The region's bounding box centred in its grid, cropped or zero-padded, then z-scored in the mask.

    Returns {'volume': [grid] float16, 'mask': [grid] uint8, 'labels': [grid] uint8 (TotalSpineSeg's spine
    structures inside the mask; 0 elsewhere and for any other label),
    'spacing_mm': [3] float32}.
    """
    grid = np.asarray(plan.grid(region))
    in_region = np.isin(label, region_labels(region))
    if not in_region.any():
        raise RegionError("region_absent", f"no {region} vertebra or disc labels in the mask")
    low, high = resampling.bounding_box(in_region)
    offset = np.round((low + high) / 2.0 - grid / 2.0).astype(int)
    out_image = np.zeros(grid, np.float32)
    out_mask = np.zeros(grid, bool)
    out_label = np.zeros(grid, np.uint8)
    src = tuple(slice(max(o, 0), min(o + g, n)) for o, g, n in zip(offset, grid, image.shape))
    dst = tuple(slice(s.start - o, s.stop - o) for s, o in zip(src, offset))
    known = np.isin(label[src], _SPINE_STRUCTURES, kind="table")  # a site's own structures (label 300) would wrap
    out_image[dst], out_mask[dst], out_label[dst] = image[src], mask[src], np.where(known, label[src], 0)
    out_label[~out_mask] = 0  # labels where the model sees the image; a record stores only the in-mask values
    inside = out_image[out_mask]
    if inside.size < 10:
        raise RegionError("region_too_small", f"only {inside.size} voxels inside the {region} spine mask")
    lo, hi = np.percentile(inside, plan.clip_percentiles)
    clipped = np.clip(inside, lo, hi)
    scale = clipped.std()
    out_image[:] = 0.0
    out_image[out_mask] = (clipped - clipped.mean()) / (scale if scale > 0 else 1.0)
    return {"volume": out_image.astype(np.float16), "mask": out_mask.astype(np.uint8), "labels": out_label,
            "spacing_mm": np.asarray(plan.spacing_mm, np.float32)}


def preprocess_region(scan: Volume, labels: Volume, plan: Plan, region: str) -> dict[str, np.ndarray]:
    """One region crop from a canonical scan and label map (see `resample` and `cut_region`)."""
    return cut_region(*resample(scan, labels, plan), plan, region)


def region_extent_mm(label: np.ndarray, plan: Plan, region: str) -> list[float]:
    """Size (mm) of the region's vertebrae-and-discs bounding box in resampled labels, per axis."""
    present = np.isin(label, region_labels(region))
    if not present.any():
        return [0.0, 0.0, 0.0]
    low, high = resampling.bounding_box(present)
    return [float(v) for v in (high - low) * np.asarray(plan.spacing_mm)]
