"""One cohort folder's scans, listed and read by one set of rules: the records stage and predict share it.

A cohort folder (docs/ingestion.md) holds DICOM series under `dicom/`, NIfTI scans under `nifti/` and
masks under `masks/<series id>.nii[.gz]`. `list_inputs` finds each series once; `prepare_scan` reads one,
checks it against its mask and resamples both to the preprocessing plan's grid; `cut` crops one region.
A scan that cannot be used is a failure row {'code', 'message'} with a code from docs/ingestion.md, never
an exception.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np

from spinejax.scans import canonical, dicom_series, preprocess, walk
from spinejax.scans.refusal import Refusal

_NIFTI = re.compile(r"^(?P<stem>.+)\.nii(\.gz)?$", re.IGNORECASE)


def plan_from(config: ml_collections.ConfigDict) -> preprocess.Plan:
    """The preprocessing plan of a records config (configs/records.py)."""
    return preprocess.Plan(
        spacing_mm=tuple(config.spacing_mm), grids=tuple((r, tuple(config.grids[r])) for r in config.regions),
        mask_dilation_mm=config.mask_dilation_mm, clip_percentiles=tuple(config.clip_percentiles),
        crop_margin_mm=config.crop_margin_mm, min_slices=int(config.min_slices),
        max_missing_level_share=float(config.max_missing_level_share))


def nifti_files(folder: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """(series id -> NIfTI files under `folder`, in path order; other files and unlistable folders)."""
    found = {}
    paths, other = walk.files_under(folder)
    for path in paths:
        match = _NIFTI.match(path.name)
        if match:
            found.setdefault(match.group("stem"), []).append(path)
        else:
            other.append(path)
    return found, other


def failure_row(kind: str, where: str, code: str, message: str, series_id: str = "", region: str = "") -> dict:
    """A failure row of a listed input, file or region (`where` is relative to the cohort folder)."""
    return {"kind": kind, "where": where, "series_id": series_id, "region": region, "code": code,
            "message": message}


def list_inputs(cohort: Path, config: ml_collections.ConfigDict, map_files: Callable = map
                ) -> tuple[list[dict], list[dict]]:
    """(inputs to process, failures found while listing), both in a fixed order.

    An input: kind ('dicom' or 'nifti'), series_id, where (relative path), files, mask (path, None when
    absent, 'ambiguous' when two masks share the id) and, for DICOM, the SeriesFiles. map_files reads the
    DICOM headers (dicom_series.find_series)."""
    failures, candidates = [], []
    dicom_root = cohort / "dicom"
    if dicom_root.is_dir():
        found, bad_files = dicom_series.find_series(dicom_root, config.max_oblique_deg, map_files)
        for f in bad_files:
            failures.append(failure_row("file", str(f.path.relative_to(cohort)), f.code, f.message))
        for series in found:
            where = str(series.files[0].parent.relative_to(cohort))
            if series.part > 0:
                failures.append(failure_row(
                    "dicom", where, "other_part", f"{len(series.slices)} slice(s) of another orientation or matrix "
                    "sharing the SeriesInstanceUID of a series (a localizer?): split off", series.series_uid))
                continue
            candidates.append({"kind": "dicom", "series_id": series.series_uid, "where": where,
                               "files": [str(p) for p in series.files], "series": series})
    scans, others = nifti_files(cohort / "nifti")
    for path in others:
        code, message = (("unreadable_file", "a folder that cannot be listed (permission denied)") if path.is_dir()
                         else ("not_nifti", "not a NIfTI file (.nii or .nii.gz) in nifti/"))
        failures.append(failure_row("file", str(path.relative_to(cohort)), code, message))
    for series_id, paths in scans.items():
        for path in sorted(paths, key=lambda p: (not p.name.lower().endswith(".gz"), str(p))):
            candidates.append({"kind": "nifti", "series_id": series_id, "where": str(path.relative_to(cohort)),
                               "files": [str(path)]})
    masks, _ = nifti_files(cohort / "masks")  # a mask that cannot be found is 'no_mask' for its series
    inputs, taken = [], set()
    preference = lambda c: (c["kind"] != "dicom", c["series_id"], not c["where"].lower().endswith(".gz"), c["where"])
    for item in sorted(candidates, key=preference):
        if item["series_id"] in taken:
            failures.append(failure_row(item["kind"], item["where"], "duplicate_series", "the same series id as "
                                     "another input (DICOM is kept before NIfTI, .nii.gz before .nii)",
                                     item["series_id"]))
            continue
        taken.add(item["series_id"])
        paths = masks.get(item["series_id"], [])
        item["mask"] = str(paths[0]) if len(paths) == 1 else ("ambiguous" if paths else None)
        inputs.append(item)
    return inputs, failures


def refused(error: Refusal, region: str = "", mask: bool = False) -> dict:
    """The failure {'region', 'code', 'message'} of a refusal; a mask's own problems are 'unreadable_mask'."""
    if mask and error.code not in ("mask_not_labels",):
        return {"region": region, "code": "unreadable_mask", "message": f"mask: {error.message}"}
    return {"region": region, "code": error.code, "message": error.message}


def load_scan(item: dict) -> canonical.Volume:
    """The scan of one listed input, not yet canonical. Raises Refusal."""
    if item["kind"] == "dicom":
        return dicom_series.load_series(item["series"])
    return canonical.load_nifti(item["files"][0])


@dataclasses.dataclass
class PreparedScan:
    """A scan and its mask resampled to the plan's spacing (preprocess.resample), before any region is cut."""

    resampled: tuple
    present_labels: set
    native_spacing_mm: list[float]
    content_sha256: str  # of the canonical voxels: the same scan under two ids


def prepare_scan(item: dict, plan: preprocess.Plan, config: ml_collections.ConfigDict) -> PreparedScan | dict:
    """One listed input read, checked against its mask and resampled; or a failure {'region', 'code',
    'message'}. Pure apart from reading the input's files; a refusal is a failure, never an exception. The
    records stage and spinejax.predict both go through it, so a scan is read by one set of rules."""
    def failed(code: str, message: str) -> dict:
        return {"region": "", "code": code, "message": message}

    if item["kind"] == "dicom" and not dicom_series.is_sagittal(item["series"].orientation, config.max_oblique_deg):
        return failed("not_sagittal", f"the slice normal is more than {config.max_oblique_deg:g} degrees from "
                                      "left-right: not a sagittal series")
    try:
        scan = canonical.to_canonical(load_scan(item))
    except Refusal as error:
        return refused(error)
    if scan.data.shape[0] < plan.min_slices:
        return failed("too_few_slices", f"{scan.data.shape[0]} sagittal slice(s); the plan needs at least "
                                        f"{plan.min_slices} to cover the spine from side to side")
    if float(scan.data.max()) == float(scan.data.min()):
        return failed("constant_image", "every voxel has the same value (a blank image or RescaleSlope 0)")
    if item["mask"] is None:
        return failed("no_mask", "no mask masks/<series id>.nii.gz for this series")
    if item["mask"] == "ambiguous":
        return failed("ambiguous_mask", "two masks for this series id (.nii and .nii.gz, or in two folders)")
    try:
        labels = canonical.to_canonical(canonical.load_nifti(item["mask"], is_label=True))
    except Refusal as error:
        return refused(error, mask=True)
    if scan.data.shape != labels.data.shape or not np.allclose(scan.affine_lps, labels.affine_lps, atol=0.1):
        offset = float(np.abs(scan.affine_lps - labels.affine_lps).max()) if scan.data.shape == labels.data.shape else 0
        return failed("mask_grid", f"mask grid {labels.data.shape} does not match the scan's {scan.data.shape}"
                                   + (f" (position or spacing differ by up to {offset:.2f} mm)" if offset else ""))
    try:
        resampled = preprocess.resample(scan, labels, plan)
    except Refusal as error:
        return refused(error)
    present = set(np.flatnonzero(np.bincount(labels.data.ravel().clip(0, 65535))).tolist())
    return PreparedScan(resampled, present, [float(v) for v in scan.spacing],
                        hashlib.sha256(scan.data.tobytes()).hexdigest())


def cut(prepared: PreparedScan, plan: preprocess.Plan, region: str) -> tuple[dict, list[str]]:
    """(the region's arrays (preprocess.cut_region), the levels its mask holds). Raises Refusal."""
    levels = preprocess.coverage(prepared.present_labels, plan, region)
    return preprocess.cut_region(*prepared.resampled, plan, region), levels

