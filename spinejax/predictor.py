"""New scans to spine ages with a model bundle (spinejax.bundle): the library behind spinejax.predict.

The input folder has the cohort layout (README, "Bring your own data"): dicom/ and/or nifti/ with masks/,
and optionally the reports table with its schema (then, where it gives the age, the corrected age's gap
too). Each scan is read, checked and preprocessed by the records stage's own functions and the bundle's plan
(spinejax.scans.prepare: list_inputs, prepare_scan, cut), so it meets the same rules and gets the
same reason codes; the model runs with the bundle's parameters in batches of the training run's size, a
batch at a time (memory stays that of one batch).

Writes into OUT (spinejax.output_folder: whole, never over the user's files):
    predictions.csv  one row per series: series_id (as you gave it: these outputs stay on your machine, so
                     nothing is keyed), where (its folder or file under the input), kind, status (ok or
                     refused), code and reason when refused, predicted_age (raw), corrected_age (the bundle's
                     bias correction), interval_low and interval_high (split-conformal, `level`; blank when
                     the model's validation split was too small for it), age and sag (when the table gives
                     the age), levels_missing (the region's vertebrae and discs absent from the mask),
                     qc_flags, qc_picture
    failures.csv     files that are not part of any series (not DICOM, damaged, ...), with their reason
    qc/<n>.png       mid-sagittal slice with the mask outline and the predicted age, per predicted scan
    index.html       the table with the pictures
QC flags: levels_missing (a partial scan: some of the region's levels absent), anatomy_cropped (the region is
larger than the model's grid), spacing_unlike_training (native voxel spacing more than 50% away from the
training records' median along some axis).
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pandas as pd
from tqdm import tqdm

from spinejax import bundle as bundle_format
from spinejax import losses, output_folder
from spinejax.cohort import reports_table
from spinejax.cohort import schema as cohort_schema
from spinejax.errors import InputError
from spinejax.scans import prepare, preprocess, walk
from spinejax.scans.refusal import Refusal

COLUMNS = ["series_id", "where", "kind", "status", "code", "reason", "predicted_age", "corrected_age", "interval_low",
           "interval_high", "interval_level", "age", "sag", "levels_missing", "qc_flags", "qc_picture"]


def make_predict_fn(bundle: bundle_format.Bundle):
    """jit: volume [batch, slices, rows, cols, 1] float32 -> predicted age [batch] years (as steps.predict_step)."""
    model, head = bundle.model(), bundle.head
    variables = jax.device_put(bundle.variables)

    @jax.jit
    def predict(volume):
        return losses.predicted_age(model.apply(variables, volume, train=False), head)

    return predict


def known_ages(input_dir: Path) -> tuple[dict[str, float], list]:
    """(series id -> age, rejected rows) from the folder's reports table through its schema, when it has one."""
    schema = cohort_schema.load(input_dir)
    if not (input_dir / schema.table).is_file():
        return {}, []
    table = reports_table.read(input_dir / schema.table, schema)
    return dict(zip(table.rows["series_id"], table.rows["age"].astype(float))), table.rejected


def qc_flags(prepared: prepare.PreparedScan, levels_missing: int, plan: preprocess.Plan, region: str,
             fingerprint: dict) -> list[str]:
    flags = ["levels_missing"] if levels_missing else []
    extent = np.asarray(preprocess.region_extent_mm(prepared.resampled[1], plan, region))
    if (extent > np.asarray(plan.grid(region)) * np.asarray(plan.spacing_mm)).any():
        flags.append("anatomy_cropped")
    median = fingerprint.get("native_spacing_mm_median")
    if median and (np.abs(np.asarray(prepared.native_spacing_mm) / np.asarray(median) - 1) > 0.5).any():
        flags.append("spacing_unlike_training")
    return flags


def predict_folder(bundle_dir, input_dir, out, level: float = 0.9, batch_size: int = 0,
                   progress: bool = True) -> dict:
    """Predicts every series of `input_dir` (module docstring); returns {'table', 'failures', 'rejected' (rows of
    the reports table not used), 'warnings', 'seconds'}. Scans are read, predicted and drawn a batch at a
    time, so memory stays that of one batch whatever the folder holds."""
    input_dir, out = Path(input_dir), Path(out)
    bundle = bundle_format.load(bundle_dir)
    widths = bundle.facts["interval"]["half_width_years"]
    if str(level) not in widths:
        raise InputError(f"--level={level}: the bundle has intervals at levels {', '.join(sorted(widths))}")
    half_width = widths[str(level)]
    warnings = [] if half_width is not None else [
        f"the model's validation split was too small to promise {level:.0%} intervals: none are given"]
    if not input_dir.is_dir() or not any((input_dir / k).is_dir() for k in ("dicom", "nifti")):
        raise InputError(f"{input_dir}: no dicom/ or nifti/ folder of scans (README, 'Bring your own data')")
    if out.resolve().is_relative_to(input_dir.resolve()):
        raise InputError(f"--out={out} lies inside --input: the next run would read the outputs as scans")
    plan, region = bundle_format.plan_of(bundle.facts), bundle.facts["region"]
    config = ml_collections.ConfigDict({"max_oblique_deg": bundle.facts["preprocessing"]["max_oblique_deg"],
                                        "regions": (region,)})
    batch_size = batch_size or bundle.facts["batch_size"]
    start = time.perf_counter()
    with output_folder.OutputFolder(out, "predictions") as folder:  # a bad --out is refused before any work
        folder.start({"bundle": bundle.facts["checkpoint_step"], "time": time.time()})
        (folder.partial / "qc").mkdir()
        inputs, listed = prepare.list_inputs(input_dir, config)
        ages, rejected = known_ages(input_dir)
        predict = make_predict_fn(bundle)
        rows, pending = [], []
        for item in tqdm(inputs, desc="scans", disable=not progress):
            row = {"series_id": item["series_id"], "where": item["where"], "kind": item["kind"], "status": "refused",
                   "code": "", "reason": "", "age": ages.get(item["series_id"], np.nan)}
            rows.append(row)
            prepared = prepare.prepare_scan(item, plan, config)
            if not isinstance(prepared, prepare.PreparedScan):
                row.update(code=prepared["code"], reason=prepared["message"])
                continue
            try:
                arrays, levels = prepare.cut(prepared, plan, region)
            except Refusal as error:
                row.update(code=error.code, reason=error.message)
                continue
            missing = len(preprocess.region_levels(region)) - len(levels)
            flags = qc_flags(prepared, missing, plan, region, bundle.facts["preprocessing"]["data_fingerprint"])
            row.update(status="ok", levels_missing=missing, qc_flags=",".join(flags),
                       qc_picture=f"qc/{len(rows) - 1:05d}.png")
            pending.append((row, arrays))
            if len(pending) == batch_size:
                _predict_and_draw(predict, pending, bundle, half_width, level, folder.partial)
                pending = []
        _predict_and_draw(predict, pending, bundle, half_width, level, folder.partial)
        table = pd.DataFrame(rows).reindex(columns=COLUMNS)
        table["levels_missing"] = table["levels_missing"].astype("Int64")
        failures = pd.DataFrame([{"where": f["where"], "code": f["code"], "reason": f["message"]} for f in listed],
                                columns=["where", "code", "reason"])
        table.to_csv(folder.partial / "predictions.csv", index=False, float_format="%.6f")
        failures.to_csv(folder.partial / "failures.csv", index=False)
        _index_html(folder.partial, table, bundle, level)
        folder.commit()
    return {"table": table, "failures": failures, "rejected": rejected, "warnings": warnings,
            "seconds": time.perf_counter() - start}


def _predict_and_draw(predict, pending: list, bundle: bundle_format.Bundle, half_width: float | None,
                      level: float, folder: Path) -> None:
    """Predicts a batch of (row, arrays), fills the rows and draws their QC pictures into `folder`."""
    if not pending:
        return
    volumes = [arrays["volume"].astype(np.float32) for _, arrays in pending]  # float16 as stored, as trained
    batch = np.zeros((bundle.facts["batch_size"] if len(volumes) <= bundle.facts["batch_size"] else len(volumes),
                      *bundle.grid, 1), np.float32)
    batch[:len(volumes), ..., 0] = np.stack(volumes)
    predicted = np.asarray(predict(batch))[:len(volumes)].astype(np.float64)
    corrected = bundle_format.corrected_age(bundle, predicted)
    width = np.nan if half_width is None else half_width
    for (row, _), raw, fixed in zip(pending, predicted, corrected):
        row.update(predicted_age=float(raw), corrected_age=float(fixed), interval_low=float(fixed - width),
                   interval_high=float(fixed + width), interval_level=level,
                   sag=float(fixed - row["age"]) if np.isfinite(row["age"]) else np.nan)
    _pictures(folder, pending)


def _pictures(folder: Path, pictures: list) -> None:
    """qc/<n>.png of each predicted scan: the slice through most of the mask, its outline, the ages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for row, arrays in pictures:
        volume, mask = arrays["volume"].astype(np.float32), arrays["mask"]
        mid = int(np.argmax(mask.sum(axis=(1, 2))))
        fig, ax = plt.subplots(figsize=(2.2, 6))
        ax.imshow(volume[mid], cmap="gray")
        ax.contour(mask[mid], [0.5], colors="red", linewidths=0.4)
        ax.set_title(f"predicted {row['corrected_age']:.1f} y" + (f"\nage {row['age']:.1f}" if np.isfinite(row["age"])
                                                                 else ""), fontsize=8)
        ax.set_axis_off()
        fig.savefig(folder / row["qc_picture"], dpi=90, bbox_inches="tight")
        plt.close(fig)


def _index_html(folder: Path, table: pd.DataFrame, bundle: bundle_format.Bundle, level: float) -> None:
    cells = []
    for r in table.itertuples():
        picture = f"<img src='{html.escape(r.qc_picture)}' height=240>" if isinstance(r.qc_picture, str) and \
            r.qc_picture else ""
        known = f"<br>age {r.age:.1f}, gap {r.sag:+.1f} y" if r.status == "ok" and np.isfinite(r.age) else ""
        text = (f"{r.corrected_age:.1f} y, {level:.0%}: [{r.interval_low:.1f}, {r.interval_high:.1f}]{known}"
                if r.status == "ok" else f"refused: {html.escape(str(r.code))}")
        cells.append(f"<figure>{picture}<figcaption>{html.escape(walk.printable(r.series_id))}<br>{text}"
                     f"{'<br>' + html.escape(str(r.qc_flags)) if isinstance(r.qc_flags, str) and r.qc_flags else ''}"
                     "</figcaption></figure>")
    facts = bundle.facts
    cohort = facts["training_cohort"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>spinejax predictions</title><style>"
            "body{font-family:sans-serif}figure{display:inline-block;margin:6px;text-align:center;font-size:12px}"
            "</style></head><body><h1>spinejax predictions</h1>"
            f"<p>Model: {html.escape(facts['region'])} spine, checkpoint step {facts['checkpoint_step']}, trained on "
            f"{cohort['train_records']} records aged {cohort['age_years']['min']:.0f}-{cohort['age_years']['max']:.0f}"
            f"; intervals: {html.escape(facts['interval']['method'])}"
            f"; bias correction: {html.escape(facts['bias_correction']['method'])}. Files in no series: "
            "failures.csv.</p>"
            + "".join(cells) + "</body></html>\n")
    (folder / "index.html").write_text(page)
