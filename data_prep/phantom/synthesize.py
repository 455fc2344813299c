"""Writes a synthetic whole-spine MRI cohort: DICOM and NIfTI scans, spine masks, reports, hidden truth.

    python -m data_prep.synthesize --out=DIR --subjects=N --seed=S [--workers=W] [--nifti_share=0.2]

Layout (DESIGN.md, "Cohort folder"):
    DIR/dicom/<site>/...            one file per slice; nested patient/study/series folders or flat exports
    DIR/nifti/<series_id>.nii.gz    the share of scans given as NIfTI, in assorted axis layouts
    DIR/masks/<series_id>.nii.gz    TotalSpineSeg-convention label map on each scan's voxel grid
    DIR/reports.csv                 one row per series: ids, age, sex, site, lifestyle, 207 pathology grades
    DIR/reports_text.csv            the same rows with the free-text report instead of the grades, written in
                                    each site's style (data_prep.phantom.report_text), identity header and all
    DIR/cohort_schema.yaml          how to read reports.csv (spinejax.cohort.schema)
    DIR/ground_truth.json           the hidden truth (biological ages, planted effects, noise floor)

The same seed gives the same bytes whatever the number of workers. Work goes to DIR.partial/ and is
renamed to DIR when complete; a killed run, started again, keeps the series it had finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep import parallel
from data_prep.phantom import acquisition, anatomy, findings, identity, population, render, report_text, writers
from spinejax.cohort import schema as cohort_schema
from spinejax.errors import InputError

GENERATOR_VERSION = 1

@dataclasses.dataclass(frozen=True)
class CohortSpec:
    """Everything that determines a cohort's bytes."""

    subjects: int
    seed: int
    nifti_share: float = 0.2
    reports_only: bool = False  # reports.csv and truth only: for eligibility at paper scale, in seconds
    population: population.PopulationParams = population.PopulationParams()
    anatomy: anatomy.AnatomyParams = anatomy.AnatomyParams()

    def to_json(self) -> dict:
        """JSON-ready description (tuples become lists, as after a round trip through a file)."""
        return json.loads(json.dumps({
            "generator_version": GENERATOR_VERSION, **dataclasses.asdict(self),
            "site_protocols": {k: dataclasses.asdict(v) for k, v in acquisition.SITE_PROTOCOLS.items()}}))


def plan_series(spec: CohortSpec) -> tuple[pd.DataFrame, list[dict]]:
    """People and the series to draw: (subjects frame, one task dict per series, in output order)."""
    rng = np.random.default_rng([spec.seed, 0])
    subjects = population.sample_subjects(spec.subjects, rng, spec.population)
    scans = population.plan_scans(subjects, rng, spec.population)
    subjects["patient_name"] = identity.patient_names(rng, subjects["sex"].to_numpy())
    subjects["patient_id"] = identity.unique_numbers(rng, spec.subjects, 7, "MRN")
    first_day = identity.study_day(rng, spec.subjects)
    birth_day = first_day - np.rint(subjects["age"].to_numpy() * 365.25).astype(int)
    accessions = identity.unique_numbers(rng, len(scans) + 1, 8, "A")
    tasks = []
    for n, scan in enumerate(scans.itertuples()):
        person = subjects.loc[scan.subject]
        day = int(first_day[scan.subject] + np.rint((scan.age - person.age) * 365.25))
        age = round(identity.age_between(int(birth_day[scan.subject]), day), 2)
        first_of_study = scan.scan == 0 or scan.study == 1
        study_key = (spec.seed, int(scan.subject), int(scan.study))
        tasks.append({
            "index": n, "subject": int(scan.subject), "scan": int(scan.scan), "age": age,
            "bio_age": float(population.bio_age(age, person.lifestyle_shift, person.individual_shift)),
            "sex": person.sex, "site": person.site, "abnormal_kind": person.abnormal_kind,
            "who": writers.Identity(
                patient_name=person.patient_name, patient_id=person.patient_id,
                birth_date=identity.date_string(int(birth_day[scan.subject])), sex=person.sex,
                age_years=int(np.floor(age)),
                accession=accessions[n if first_of_study else n - 1],
                study_date=identity.date_string(day),
                study_uid=writers.make_uid("study", *study_key),
                series_uid=writers.make_uid("series", spec.seed, n),
                frame_uid=writers.make_uid("frame", spec.seed, n),
                series_number=3 + (scan.scan if scan.study == 0 else 0),
                institution={"site_A": "NORTH VALLEY CLINIC", "site_B": "ST MARY IMAGING",
                             "site_C": "RIVERSIDE HOSPITAL", "site_D": "EASTGATE MRI CENTRE"}[person.site]),
        })
    return subjects, tasks


def person_seed(seed: int, subject: int) -> int:
    return int(np.random.SeedSequence([seed, subject, 1]).generate_state(1)[0])


def draw_series(spec: CohortSpec, task: dict, root: Path) -> dict:
    """Draws and writes one series under `root`; returns its report row and its truth."""
    who: writers.Identity = task["who"]
    spine = anatomy.draw_spine(person_seed(spec.seed, task["subject"]), task["bio_age"], task["sex"],
                               task["abnormal_kind"], spec.anatomy)
    report = {"series_id": who.series_uid, "subject_id": who.patient_id, "age": task["age"],
              "sex": task["sex"], "site": task["site"], **findings.report(spine)}
    truth = {
        "series_id": who.series_uid, "subject": task["subject"], "scan": task["scan"], "age": task["age"],
        "bio_age": round(task["bio_age"], 3), "abnormal_kind": task["abnormal_kind"],
        "degeneration": np.round(spine.degeneration, 4).tolist(),
        "mean_disc_height_mm": round(float(spine.disc_height.mean()), 4),
        "fracture": np.round(spine.fracture, 4).tolist(), "listhesis": np.round(spine.listhesis, 4).tolist(),
    }
    if spec.reports_only:
        return {"report": report, "truth": {**truth, "file_format": None}}
    rng = np.random.default_rng([spec.seed, task["index"], 2])
    acq = acquisition.draw_acquisition(rng, task["site"], render.spine_length(spine), spec.nifti_share)
    image, labels = render.render(spine, acq, rng)
    stored = writers.to_stored(image, acq)
    series_id = who.series_uid
    if acq.file_format == "dicom":
        proto = acquisition.SITE_PROTOCOLS[acq.site]
        if proto.layout == "nested":
            folder = (root / "dicom" / acq.site / who.patient_id / f"{who.study_date}_{who.accession}"
                      / f"S{who.series_number:03d}_T2_SAG")
            numbers = rng.choice(9000, acq.n_slices, replace=False) + 1000
            names = [f"IM{v}" for v in numbers]
        else:
            folder = root / "dicom" / acq.site / f"export_{task['index'] // 40:03d}"
            names = [f"{writers.make_uid('file', spec.seed, task['index'], k)[-16:]}.dcm"
                     for k in range(acq.n_slices)]
        paths = writers.write_dicom_series(folder, stored, acq, who, names)
        scan_path = str(folder.relative_to(root))
        mask_acq = acq
    else:
        path = root / "nifti" / f"{series_id}.nii.gz"
        writers.atomic_write(path, writers.nifti_bytes(stored, acq, acq.rescale_slope, acq.rescale_intercept))
        paths, scan_path, mask_acq = [path], str(path.relative_to(root)), acq
    writers.atomic_write(root / "masks" / f"{series_id}.nii.gz", writers.nifti_bytes(labels, mask_acq))

    truth.update({
        "file_format": acq.file_format, "path": scan_path, "n_files": len(paths),
        "transfer_syntax": acq.transfer_syntax if acq.file_format == "dicom" else None,
        "shape_kji": [acq.n_slices, acq.rows, acq.cols],
        "spacing_kji": [acq.slice_spacing, acq.row_spacing, acq.col_spacing],
        "slice_thickness": acq.slice_thickness, "affine_lps_ijk": acq.affine_lps().round(6).tolist(),
        "instance_order": list(acq.instance_order), "nifti_axes": list(acq.nifti_axes),
        "nifti_flips": list(acq.nifti_flips),
        "rescale": [acq.rescale_slope, acq.rescale_intercept],
    })
    return {"report": report, "truth": truth}


def _worker(args: tuple[CohortSpec, dict, str]) -> dict:
    spec, task, root = args
    done = Path(root) / ".done" / f"{task['index']:06d}.json"
    if done.exists():  # finished before an interruption
        return json.loads(done.read_text())
    result = draw_series(spec, task, Path(root))
    if not spec.reports_only:  # a reports-only run takes seconds: nothing worth resuming
        writers.atomic_write(done, json.dumps(result).encode())
    return result


def _lifestyle() -> list[str]:
    return [name for name, _, _ in population.LIFESTYLE]


def schema_text(lifestyle: list[str], conditions: list[str]) -> str:
    """The cohort's schema (spinejax.cohort.schema), as a site would write it for this table."""
    exposures = "".join(f"  {name}: {{column: {name}, type: yes_no}}\n" for name in lifestyle)
    return ("# How spinejax reads reports.csv (docs/cohort_schema.md). Written by data_prep.synthesize.\n"
            f"spinejax_cohort_schema: {cohort_schema.FORMAT_VERSION}\n"
            "table: reports.csv\n"
            "columns: {series_id: series_id, subject_id: subject_id, age: age, sex: sex, site: site}\n"
            "age_range_years: [0, 120]\n"
            "exposures:  # lifestyle answers; blank is unanswered\n" + exposures +
            "pathology:\n"
            "  column_pattern: '{condition}__{level}'\n"
            f"  conditions: [{', '.join(conditions)}]\n"
            "  levels: L4-L5\n"
            "  grades: {'0': 0, '1': 1, '2': 2, '3': 3}\n"
            "  blank: reject\n")


def _style_truth() -> dict:
    return {"held_out": list(report_text.HELD_OUT), "sites": {k: list(v) for k, v in report_text.SITE_STYLES.items()}}


def reports_text(reports: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The reports table with each row's free-text report (column report_text) in place of its grades."""
    styles = report_text.site_styles(list(reports["site"]), seed)
    texts = report_text.write_reports(reports, report_text.STYLES, styles, seed)
    kept = reports[[c for c in reports.columns if "__" not in c]].copy()
    kept["report_text"] = texts["text"].to_numpy()
    return kept


def synthesize(out: Path, spec: CohortSpec, workers: int | None = None, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Writes the cohort to `out` (see module docstring); returns a summary dict."""
    truth_path = out / "ground_truth.json"
    if truth_path.exists():
        if json.loads(truth_path.read_text())["spec"] == spec.to_json():
            if not (out / "cohort_schema.yaml").exists():  # a cohort written before schemas: same table, add it
                (out / "cohort_schema.yaml").write_text(schema_text(_lifestyle(), list(findings.GRADING)))
            if not (out / "reports_text.csv").exists():  # one written before free-text reports: add them
                reports = pd.read_csv(out / "reports.csv", dtype={"sex": str})
                writers.atomic_write(out / "reports_text.csv", reports_text(reports, spec.seed).to_csv(
                    index=False).encode())
                truth = json.loads(truth_path.read_text())
                styles = report_text.site_styles(list(reports["site"]), spec.seed)
                truth["report_styles"] = _style_truth()
                truth["series"] = [{**s, "report_style": style} for s, style in zip(truth["series"], styles)]
                writers.atomic_write(truth_path, json.dumps(truth, indent=1).encode())
            return {"skipped": True, "out": str(out)}
        if not overwrite:
            raise InputError(f"{out} holds a different cohort (ground_truth.json differs); "
                                  "pass --overwrite to replace it")
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists, is not empty and is not a synthetic cohort; choose another --out")
    partial = out.with_name(out.name + ".partial")
    spec_file = partial / ".spec.json"
    if partial.exists() and (not spec_file.exists() or json.loads(spec_file.read_text()) != spec.to_json()):
        shutil.rmtree(partial)  # left by a run with other settings
    partial.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec.to_json()))

    start = time.perf_counter()
    subjects, tasks = plan_series(spec)
    workers = 1 if spec.reports_only else workers  # no images: not worth a pool
    jobs = [(spec, task, str(partial)) for task in tasks]
    results = list(parallel.map_jobs(_worker, jobs, workers, progress=progress, chunksize=2))
    elapsed = time.perf_counter() - start

    reports = pd.DataFrame([r["report"] for r in results])
    lifestyle = _lifestyle()
    answers = subjects.set_index("patient_id")[lifestyle]
    reports = reports.join(answers, on="subject_id")
    ordered = ["series_id", "subject_id", "age", "sex", "site", *lifestyle, *findings.feature_columns()]
    reports[ordered].to_csv(partial / "reports.csv", index=False, float_format="%.6g")
    texts = reports_text(pd.read_csv(partial / "reports.csv", dtype={"sex": str}), spec.seed)
    texts.to_csv(partial / "reports_text.csv", index=False)
    (partial / "cohort_schema.yaml").write_text(schema_text(lifestyle, list(findings.GRADING)))

    floor = population.noise_floor(spec.population, seed=spec.seed)
    series_truth = [{**r["truth"], "report_style": style}
                    for r, style in zip(results, report_text.site_styles(list(reports["site"]), spec.seed))]
    ages = np.array([t["age"] for t in series_truth])
    bios = np.array([t["bio_age"] for t in series_truth])
    effects = dict(spec.population.lifestyle_effects)
    truth = {
        "spec": spec.to_json(),
        "noise_floor": {**floor, "cohort_bio_as_age_mae": float(np.mean(np.abs(bios - ages)))},
        "planted_effects_years": effects,
        "counts": {"subjects": spec.subjects, "series": len(tasks),
                   "dicom_series": sum(t["file_format"] == "dicom" for t in series_truth),
                   "nifti_series": sum(t["file_format"] == "nifti" for t in series_truth),
                   "abnormal_subjects": int(subjects["abnormal"].sum())},
        "subjects": [
            {"subject": i, "subject_id": row.patient_id, "sex": row.sex, "site": row.site,
             "lifestyle_shift": round(row.lifestyle_shift, 4), "individual_shift": round(row.individual_shift, 4),
             "abnormal": bool(row.abnormal), "abnormal_kind": row.abnormal_kind}
            for i, row in enumerate(subjects.itertuples())],
        "report_styles": _style_truth(),
        "series": series_truth,
    }
    (partial / "ground_truth.json").write_text(json.dumps(truth, indent=1))
    shutil.rmtree(partial / ".done", ignore_errors=True)
    spec_file.unlink()
    os.replace(partial, out)
    return {"skipped": False, "out": str(out), "series": len(tasks), "seconds": elapsed,
            "subjects_per_minute": spec.subjects / elapsed * 60.0, "noise_floor": truth["noise_floor"]}
