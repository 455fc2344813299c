"""Checks spinejax.predict against spinejax.evaluate on the test split, from the raw scans.

    python -m analysis.prediction_check --stage=layout --cohort=C --records=R --secret_file=K --out=DIR
    python -m spinejax.predict --model=BUNDLE --input=DIR/scans --out=DIR/predicted
    python -m analysis.prediction_check --stage=compare --workdir=W --secret_file=K --out=DIR

layout: DIR/scans/ gets the test split's scans as the cohort holds them (DICOM files, NIfTI files and masks,
linked, not copied) with a reports table of their ages, so predict reads exactly what build_records read.
compare: joins DIR/predicted/predictions.csv to W/predictions/test.csv by keyed series id and writes
DIR/check.json: how many predictions equal evaluate's (to EQUAL_WITHIN_YEARS), the largest difference, and the
intervals' empirical coverage and mean width on the test split (split-conformal, fitted on validation).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from absl import app, flags

from spinejax.cohort import pseudonym, reports_table
from spinejax.errors import InputError, one_line_errors
from spinejax.scans import prepare

LAYOUT_MARKER = ".spinejax-layout"


def layout(cohort: Path, records: Path, secret: bytes, out: Path) -> int:
    """Links the test split's scans of `cohort` (by the records' keys) into out/scans; returns their number."""
    manifest = json.loads((records / "manifest.json").read_text())
    if manifest["secret_fingerprint"] != pseudonym.secret_fingerprint(secret):
        raise InputError(f"{records} was keyed with another secret")
    index = pd.read_csv(records / "index.csv", dtype=str, keep_default_na=False)
    test_keys = set(index.loc[index["split"] == "test", "series_key"])
    from configs import records as records_config

    inputs, _ = prepare.list_inputs(cohort, records_config.get_config())
    table = reports_table.read_cohort(cohort).rows
    scans = out / "scans"
    if (scans / LAYOUT_MARKER).is_file():  # our own earlier layout: links and a table, nothing of the user's
        shutil.rmtree(scans)
    elif scans.exists():
        raise InputError(f"{scans} exists and was not laid out by this check: choose another --out")
    scans.mkdir(parents=True)
    (scans / LAYOUT_MARKER).write_text("links to a cohort's test-split scans, made by analysis.prediction_check\n")
    rows = []
    for n, item in enumerate(i for i in inputs if pseudonym.series_key(i["series_id"], secret) in test_keys):
        if item["kind"] == "dicom":
            folder = scans / "dicom" / f"{n:05d}"
            folder.mkdir(parents=True)
            for k, path in enumerate(item["files"]):
                os.symlink(Path(path).resolve(), folder / f"{k:05d}.dcm")
        else:
            (scans / "nifti").mkdir(parents=True, exist_ok=True)
            os.symlink(Path(item["files"][0]).resolve(), scans / "nifti" / Path(item["files"][0]).name)
        (scans / "masks").mkdir(parents=True, exist_ok=True)
        os.symlink(Path(item["mask"]).resolve(), scans / "masks" / Path(item["mask"]).name)
        rows.append({"series_id": item["series_id"], "subject_id": table.loc[item["series_id"], "subject_id"],
                     "age": table.loc[item["series_id"], "age"]})
    pd.DataFrame(rows).to_csv(scans / "reports.csv", index=False)
    return len(rows)


# Both files hold ages to 0.001 years. The same model on the same voxels in another batch (oneDNN picks its CPU
# kernels by batch size) differs in float32 rounding, under 1e-4 years, which can cross a rounding edge: one unit
# of the last decimal is "equal"; a preprocessing or model difference is far larger.
EQUAL_WITHIN_YEARS = 0.0015


def compare(workdir: Path, secret: bytes, out: Path) -> dict:
    """check.json's content (module docstring)."""
    predicted = pd.read_csv(out / "predicted" / "predictions.csv", dtype={"series_id": str})
    predicted["series_key"] = [pseudonym.series_key(s, secret) for s in predicted["series_id"]]
    evaluated = pd.read_csv(workdir / "predictions" / "test.csv", dtype={"series_key": str})
    joined = evaluated.merge(predicted, on="series_key", how="left", suffixes=("_evaluate", "_predict"))
    difference = (joined["predicted_age_predict"].round(3) - joined["predicted_age_evaluate"]).abs()
    inside = (joined["interval_low"] <= joined["age_evaluate"]) & (joined["age_evaluate"] <= joined["interval_high"])
    result = {"test_records": len(evaluated), "predicted": int(joined["predicted_age_predict"].notna().sum()),
              "equal_to_evaluate": int((difference <= EQUAL_WITHIN_YEARS).sum()),
              "max_abs_difference_years": float(difference.max()),
              "interval_level": float(predicted["interval_level"].dropna().iloc[0]),
              "interval_coverage": float(inside.mean()),
              "interval_mean_width_years": float((joined["interval_high"] - joined["interval_low"]).mean())}
    (out / "check.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def define_flags():
    flags.DEFINE_enum("stage", None, ["layout", "compare"], "lay out the test scans, or compare the predictions")
    flags.DEFINE_string("cohort", None, "layout: the cohort folder")
    flags.DEFINE_string("records", None, "layout: the records folder")
    flags.DEFINE_string("workdir", None, "compare: the evaluated workdir")
    flags.DEFINE_string("secret_file", None, "the key of the records' ids")
    flags.DEFINE_string("out", None, "the check's folder")
    flags.mark_flags_as_required(["stage", "out"])


def main(argv):
    del argv
    f = flags.FLAGS
    out, secret = Path(f.out), pseudonym.load_secret(f.secret_file)
    if f.stage == "layout":
        print(f"{layout(Path(f.cohort), Path(f.records), secret, out)} test-split scans -> {out}/scans")
        return
    r = compare(Path(f.workdir), secret, out)
    print(f"predict against evaluate on the test split: {r['equal_to_evaluate']} of {r['test_records']} equal "
          f"(largest difference {r['max_abs_difference_years']:.4f} y); {r['interval_level']:.0%} intervals cover "
          f"{r['interval_coverage']:.1%} of test ages, mean width {r['interval_mean_width_years']:.1f} y "
          f"-> {out}/check.json")
    if np.isnan(r["max_abs_difference_years"]) or r["predicted"] < r["test_records"]:
        raise InputError("predict did not predict every test record")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
