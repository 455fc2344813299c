"""A hospital's cohort, end to end, as a site would run it: its own column names and codings (through its
cohort schema), categorical and differently named lifestyle answers, grades written as words, a free-text
column, a held-out hospital for external validation, about 60 people, and every command run from a folder
outside the repository with relative paths.

Layout built here (the images are a synthetic cohort's, re-labelled as a site would export them):
    work/                       the current directory of every command
      hospital/export/          the cohort folder
        dicom/ nifti/ masks/    as in README "Bring your own data"
        ris_export.csv          SeriesUID (the file name for NIfTI), PatientKey, AgeAtScan (DICOM 045Y),
                                Gender (1/2), Hospital, Smoker (never/former/current), HeavyLabour (Y/N),
                                Referrer (free text), then one column per finding, named "<level> <finding>"
                                (L4-5 notation), graded in words
        cohort_schema.yaml      how to read it
      secret.key
      records/ eligibility/ train/   the stages' outputs
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.phantom import synthesize
from spinejax.cohort import pathology_features

REPO = Path(__file__).parents[1]
HOSPITALS = {"site_A": "North Valley Hospital", "site_B": "St Elsewhere", "site_C": "Harbour Clinic",
             "site_D": "Harbour Clinic"}
WORDS = {"disc_bulge": "bulge", "disc_desiccation": "desiccation", "disc_height_loss": "height loss",
         "disc_osteophyte": "osteophyte", "canal_stenosis": "stenosis", "endplate_irregularity": "endplate",
         "listhesis": "listhesis", "fracture": "fracture", "marrow_change": "marrow"}
SCHEMA = """\
# North Valley / St Elsewhere / Harbour spine MRI export
spinejax_cohort_schema: 1
table: ris_export.csv
columns: {series_id: SeriesUID, subject_id: PatientKey, age: AgeAtScan, sex: Gender, site: Hospital}
sex_values: {"1": M, "2": F}
age_range_years: [18, 100]
exposures:
  smoking: {column: Smoker, type: categorical, levels: [never, former, current], reference: never}
  heavy_work: {column: HeavyLabour, type: yes_no}
pathology:
  column_pattern: "{level} {condition}"
  conditions: WORDS
  levels: L4-5
  grades: {none: 0, mild: 1, moderate: 2, severe: 3}
""".replace("WORDS", json.dumps(WORDS))
LEAKS = ("North Valley", "St Elsewhere", "Harbour", "Dr ", "Smoker", "HeavyLabour", "PatientKey", "SeriesUID",
         "ris_export")


def _site_table(reports: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The synthetic table as the site's RIS exports it."""
    smoked = reports["smoking"]
    never_or_former = np.where(rng.random(len(reports)) < 0.5, "never", "former")
    out = pd.DataFrame({
        "SeriesUID": reports["series_id"], "PatientKey": "PK" + reports["subject_id"].astype(str),
        "AgeAtScan": [f"{int(a):03d}Y" for a in reports["age"]],
        "Gender": reports["sex"].map({"M": "1", "F": "2"}), "Hospital": reports["site"].map(HOSPITALS),
        "Smoker": np.where(smoked.isna(), "", np.where(smoked == 1, "Current", never_or_former)),
        "HeavyLabour": reports["physical_work"].map({1.0: "Y", 0.0: "N"}).fillna(""),
        "Referrer": [f"Dr {n} called re: patient" for n in rng.choice(["Okafor", "Lindqvist", "Tanaka"], len(reports))],
    })
    words = {0: "none", 1: "mild", 2: "moderate", 3: "severe"}
    for column in pathology_features.feature_columns(reports):
        condition, level = column.split("__")
        upper, _, lower = level.partition("-")
        notation = f"{upper}-{lower[1:] if lower and lower[0] == upper[0] else lower}" if lower else level
        out[f"{notation} {WORDS[condition]}"] = reports[column].map(words)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The work folder with the hospital's export and a key; the synthetic source is elsewhere."""
    root = tmp_path_factory.mktemp("site")
    source = root / "synthetic"
    synthesize.synthesize(source, synthesize.CohortSpec(subjects=60, seed=13, nifti_share=0.3), workers=2,
                          progress=False)
    work = root / "work"
    export = work / "hospital" / "export"
    for folder in ("dicom", "nifti", "masks"):
        shutil.copytree(source / folder, export / folder)
    reports = pd.read_csv(source / "reports.csv", dtype={"series_id": str, "subject_id": str})
    table = _site_table(reports, np.random.default_rng(0))
    table.to_csv(export / "ris_export.csv", index=False)
    (export / "cohort_schema.yaml").write_text(SCHEMA)
    (work / "secret.key").write_text("a-site-secret-of-32-characters-or-more-0123\n")
    return work, reports


def _run(work: Path, *args: str, timeout: int = 600) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=work, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    return done.stdout + done.stderr


def test_a_hospital_export_runs_end_to_end_from_outside_the_repository(site):
    work, reports = site
    assert not (work / "configs").exists() and REPO not in work.parents
    out = _run(work, "data_prep.build_records", "--input=hospital/export", "--out=records",
               "--secret_file=secret.key", "--config.workers=2", "--config.test_sites=('St Elsewhere',)")
    assert "1 column(s) of ris_export.csv not named by cohort_schema.yaml, not read: Referrer" in out
    manifest = json.loads((work / "records" / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["rows"] == len(reports) and counts["rows_used"] + counts["rows_rejected"] == counts["rows"]
    assert counts["inputs"] == counts["processed"] + counts["failed"] and counts["processed"] >= 0.9 * len(reports)
    declared = json.loads((work / "records" / "cohort_schema.json").read_text())
    assert declared["exposures"] == {"smoking": {"type": "categorical", "levels": ["never", "former", "current"],
                                                 "reference": "never"}, "heavy_work": {"type": "yes_no"}}
    exported = pd.read_csv(work / "records" / "reports.csv", keep_default_na=False)
    assert {"smoking", "heavy_work", "disc_bulge__L4-L5", "canal_stenosis__T12-L1"} <= set(exported.columns)
    assert set(exported["smoking"]) <= {"never", "former", "current", ""} and "current" in set(exported["smoking"])
    # The held-out hospital is the test split, and only it.
    index = pd.read_csv(work / "records" / "index.csv")
    test_sites = set(index.loc[index["split"] == "test", "site"])
    assert len(test_sites) == 1 and test_sites.isdisjoint(set(index.loc[index["split"] != "test", "site"]))

    out = _run(work, "data_prep.eligibility", "--input=hospital/export", "--out=eligibility",
               "--secret_file=secret.key")
    summary = json.loads((work / "eligibility" / "summary.json").read_text())
    assert summary["counts"]["eligible"] > 0, out  # a small cohort is never left with no one, silently
    if summary["counts"]["small_cohort_fallback"]:
        assert "WARNING: no common cluster" in out

    _run(work, "spinejax.main", f"--config={REPO / 'configs' / 'default.py'}:cpu", "--workdir=train",
         "--config.data.records_dir=records", "--config.data.eligibility_csv=eligibility/eligibility.csv",
         "--config.num_train_steps=6", "--config.eval_every=6", "--config.checkpoint_every=6", "--config.log_every=3",
         "--config.batch_size=8", "--config.data.worker_count=0", "--config.optimizer.warmup_steps=2")
    config = json.loads((work / "train" / "config.json").read_text())
    assert config["data"]["records_dir"] == str(work / "records")  # absolute: later stages run from anywhere
    _run(work, "spinejax.evaluate", "--workdir=train")
    predictions = pd.concat([pd.read_csv(p) for p in (work / "train" / "predictions").glob("*.csv")])
    assert predictions["predicted_age"].notna().all() and set(predictions["split"]) == {"train", "validation", "test"}

    out = _run(work.parent, "analysis.report", "--workdir=work/train", "--pooled", "--eligibility_dir=work/eligibility")
    associations = pd.read_csv(work / "train" / "analysis" / "associations.csv").set_index("term")
    smoking = associations.loc[["smoking=former", "smoking=current"]]
    assert (smoking["reference"] == "never").all() and (smoking["kind"] == "exposure").all()
    assert associations.loc["heavy_work", "level"] == "yes" and "disc_bulge" in associations.index
    assert (work / "train" / "analysis" / "report.html").stat().st_size > 50_000

    # Nothing of the site's own words in any output: hospital names, column names, the referrer's text.
    for path in [*work.joinpath("records").rglob("*"), *work.joinpath("eligibility").rglob("*"),
                 *work.joinpath("train").rglob("*")]:
        if path.is_file() and path.suffix in {".csv", ".json", ".html", ".txt", ".md"}:
            text = path.read_text(errors="ignore")
            found = [leak for leak in LEAKS if leak in text]
            assert not found, f"{path.relative_to(work)} holds {found}"
