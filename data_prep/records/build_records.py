"""A cohort folder to de-identified, region-cropped ArrayRecord shards.

    python -m data_prep.build_records --input=COHORT_DIR --out=RECORDS_DIR [--config=configs/records.py]
        [--secret_file=PATH]

Inputs: every DICOM series under COHORT_DIR/dicom (spinejax.scans.dicom_series: classic and Enhanced MR, any
nesting) and every NIfTI scan under COHORT_DIR/nifti (`.nii` or `.nii.gz`, any letter case, subfolders
allowed; the series id is the file name without its extension), each with its mask
COHORT_DIR/masks/<series id>.nii[.gz] and its row of the reports table (COHORT_DIR/reports.csv, or the
table its cohort schema names: spinejax.cohort.schema, spinejax.cohort.reports_table).
Each input becomes records (one per region) or one failure row with a reason code; a region that cannot be
cut (a lumbar-only scan has no whole spine) is a failure row of its own. The codes are listed in
docs/ingestion.md. The same series reachable twice (DICOM and its NIfTI, `X.nii` and `X.nii.gz`)
gives one set of records; so does the same voxel data under two ids.

Outputs in RECORDS_DIR (spinejax.output_folder: written whole, never over the user's files, one run at a time):
    <region>/<split>-NNNNN-of-MMMMM.array_record   records (spinejax.records), group_size:1
    index.csv        one row per record: keys, split, region, age, sex, site, levels_missing, cropped, shard, position
    failures.csv     one row per input, file or region not made into records: input_key, kind, region, code, reason
    rejections.csv   one row per reports table row not used: line, series_key, code, column, reason
    reports.csv      the used rows keyed by series, under spinejax's names, declared columns only (for the analysis)
    cohort_schema.json  what each exposure and covariate is (type, levels, reference), the conditions
    manifest.json    plan, counts (inputs = processed + failed; rows = used + rejected), fingerprints, versions
    qc_<region>.png  mid-sagittal slices of random records with the mask outline
De-identification: outputs hold keyed hashes, numbers, spinejax's own words and declared categories only;
no name, id, date, accession number, UID, path, header value, cell text or exception text.
Freshness: the output is up to date only when every input file (size and modification time), mask, reports
row, the plan and config, the secret (by a keyed fingerprint) and the code's version are unchanged;
otherwise everything is rebuilt, and the run says so. Work is cached per input (under a key of all of
these) in RECORDS_DIR.partial/, so a killed run, started again, redoes only unfinished inputs; the bytes
do not depend on the worker count.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
from array_record.python.array_record_module import ArrayRecordWriter

from data_prep import parallel
from data_prep.records import splits
from spinejax import output_folder, records
from spinejax.cohort import pseudonym, reports_table
from spinejax.errors import DEBUG_ENV, InputError
from spinejax.scans import prepare, preprocess
from spinejax.scans.refusal import Refusal

BUILD_VERSION = 4  # what a record holds for the same input and plan; bump when that changes (4: float32
# separable resampling; labels other than spine structures dropped)
LIBRARIES = ("numpy", "scipy", "pydicom", "nibabel", "array-record", "pylibjpeg", "pylibjpeg-libjpeg",
             "pylibjpeg-openjpeg", "pylibjpeg-rle")
INTERNAL = ("internal_error", "an unexpected error in spinejax (a bug, or out of memory): rerun with "
            "SPINEJAX_DEBUG=1 to see it")
TRANSIENT = ("internal_error", "io_error")  # codes that may not recur: a folder holding them is never up to date


def read_reports(cohort: Path, config: ml_collections.ConfigDict) -> reports_table.ReportsTable:
    """The cohort's table through its schema (config.schema_file, else COHORT_DIR/cohort_schema.yaml)."""
    return reports_table.read_cohort(cohort, config.schema_file)


def _stat(path: str) -> list:
    """What says a file changed: size, modification and status-change times (a `cp -p` of a corrected file
    keeps size and mtime, not ctime). A file gone since listing keys as absent; reading it then fails."""
    try:
        info = os.stat(path)
    except OSError:
        return [path, None]
    return [path, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def input_key(item: dict, report: dict | None, stamp: str, secret: bytes) -> str:
    """Keyed hash of everything one input's result depends on: its files and mask (size and modification
    time), its reports row, and the run's stamp (plan, config, code version, secret fingerprint)."""
    files = [_stat(f) for f in item["files"]]
    mask = _stat(item["mask"]) if item["mask"] not in (None, "ambiguous") else item["mask"]
    text = json.dumps([stamp, item["kind"], item["series_id"], files, mask, report], sort_keys=True, default=str)
    return pseudonym.keyed_hash(text, secret, "input-content")


def process_input(item: dict, report: dict, plan: preprocess.Plan, config: ml_collections.ConfigDict,
                  secret: bytes) -> dict:
    """One input to its records or failures: {'records': [...], 'failures': [...], 'native_spacing_mm',
    'content_sha256' (of the canonical voxels, to find the same scan under two ids)}."""
    prepared = prepare.prepare_scan(item, plan, config)
    if not isinstance(prepared, prepare.PreparedScan):
        return {"records": [], "failures": [prepared]}
    subject_key = pseudonym.subject_key(report["subject_id"], secret)
    series_key = pseudonym.series_key(item["series_id"], secret)
    split = report["split"]
    out = {"records": [], "failures": [], "native_spacing_mm": prepared.native_spacing_mm,
           "content_sha256": prepared.content_sha256}
    for region in config.regions:
        try:
            arrays, levels = prepare.cut(prepared, plan, region)
        except Refusal as error:
            out["failures"].append(prepare.refused(error, region))
            continue
        fields = {**arrays, "schema_version": records.SCHEMA_VERSION, "plan_hash": plan.fingerprint(),
                  "subject_key": subject_key, "series_key": series_key, "split": split, "region": region,
                  "age": float(report["age"]), "sex": report["sex"], "site": report["site"],
                  "levels_present": ",".join(levels)}
        out["records"].append({"region": region, "split": split, "series_key": series_key,
                               "levels_missing": len(preprocess.region_levels(region)) - len(levels),
                               "extent_mm": preprocess.region_extent_mm(prepared.resampled[1], plan, region),
                               "bytes": records.encode(fields)})
    return out


# Below this many files, starting worker processes costs more than reading the headers in one (about 1 ms each).
LISTING_POOL_MIN_FILES = 2000


def _read_headers(workers: int, progress: bool, read: Callable, paths: list) -> list:
    """read(path) for every path, in order: in a pool of `workers` processes for an archive's worth of files."""
    if len(paths) < LISTING_POOL_MIN_FILES:
        return list(map(read, paths))
    return list(parallel.map_jobs(read, paths, workers, desc="files", progress=progress, chunksize=64))


def _cache_path(partial: Path, key: str) -> Path:
    return partial / ".cache" / f"{key}.npz"


def process_job(job: tuple, plan: preprocess.Plan, config: ml_collections.ConfigDict, partial: str,
                secret: bytes) -> str:
    """The per-input step every engine maps: one input (key, item, report row) processed into its cache file
    (kept when already there: a rerun or a retried bundle redoes nothing and duplicates nothing); returns its
    key. The file appears whole or not at all (written aside, then renamed)."""
    key, item, report = job
    path = _cache_path(Path(partial), key)
    if path.exists():
        return key
    try:
        result = process_input(item, report, plan, config, secret)
    except Exception:  # noqa: BLE001 - a bug must not lose the batch; SPINEJAX_DEBUG shows it
        if os.environ.get(DEBUG_ENV):
            raise
        result = {"records": [], "failures": [{"region": "", "code": INTERNAL[0], "message": INTERNAL[1]}]}
    blobs = {f"r{n}": np.frombuffer(r["bytes"], np.uint8) for n, r in enumerate(result["records"])}
    meta = json.dumps({"records": [{k: v for k, v in r.items() if k != "bytes"} for r in result["records"]],
                       **{k: v for k, v in result.items() if k != "records"}})
    tmp = path.with_name(path.name + f".tmp{uuid.uuid4().hex}.npz")  # unique across hosts sharing the folder
    np.savez(tmp, meta=np.frombuffer(meta.encode(), np.uint8), **blobs)  # arrays only: no pickle
    os.replace(tmp, path)
    return key


def _meta(partial: Path, key: str) -> dict:
    with np.load(_cache_path(partial, key)) as cached:  # reads the meta member only
        return json.loads(cached["meta"].tobytes())


def plan_shards(partial: str, inputs: list[tuple[str, bool]], shards_per_split: int
                ) -> tuple[list[tuple[str, str, dict | None]], dict[str, list[tuple[str, int]]]]:
    """What becomes of each input, and what each shard holds, from the cache's metadata alone (no voxels).

    inputs: (key, has a usable reports row) per input, in input order. Returns (per input, in that order:
    (fate, key, meta), fate 'no_row' (meta None), 'duplicate_scan' (the same voxels as an earlier input) or
    'done'),
    and shard path (relative to the output folder) -> [(input key, record number)] in input order: a record's
    position in its shard. Every engine writes the shards from this, so the bytes do not depend on the engine.
    """
    partial, fates, shards, seen_content = Path(partial), [], {}, set()
    for key, has_row in inputs:
        if not has_row:
            fates.append(("no_row", key, None))
            continue
        meta = _meta(partial, key)
        if meta["records"] and meta["content_sha256"] in seen_content:
            fates.append(("duplicate_scan", key, meta))
            continue
        if meta["records"]:
            seen_content.add(meta["content_sha256"])
        fates.append(("done", key, meta))
        for m, record in enumerate(meta["records"]):
            shard = int(record["series_key"][:8], 16) % shards_per_split
            name = f"{record['region']}/{record['split']}-{shard:05d}-of-{shards_per_split:05d}.array_record"
            shards.setdefault(name, []).append((key, m))
    return fates, shards


def write_shard(partial: str, name: str, entries: list[tuple[str, int]]) -> str:
    """One shard file, written whole from the cache (aside, then renamed: a retried write leaves one file)."""
    path = Path(partial) / name
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{uuid.uuid4().hex}")
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    for key, m in entries:
        with np.load(_cache_path(Path(partial), key)) as cached:
            writer.write(cached[f"r{m}"].tobytes())
    writer.close()
    os.replace(tmp, path)
    return name


class LocalEngine:
    """Runs the per-input step and the shard writing on this machine: a pool of `workers` processes."""

    def __init__(self, workers: int = 0, progress: bool = True):
        self.workers, self.progress = workers, progress

    def run(self, jobs: list[tuple], plan: preprocess.Plan, config: ml_collections.ConfigDict, partial: str,
            secret: bytes, shards_of: Callable[[], tuple]) -> None:
        """Every job through process_job, then every shard of shards_of() (plan_shards) through write_shard."""
        step = functools.partial(process_job, plan=plan, config=config, partial=partial, secret=secret)
        list(parallel.map_jobs(step, jobs, self.workers, desc="series", progress=self.progress))
        for name, entries in shards_of()[1].items():
            write_shard(partial, name, entries)


def site_code(site: str, secret: bytes, declared: bool) -> str:
    """A site as it may appear in outputs: its declared code, else a keyed code ('' when unknown)."""
    if declared or not site:
        return site
    return "site-" + pseudonym.keyed_hash(site, secret, "site")[:8]


def usable_rows(table: reports_table.ReportsTable, secret: bytes, config: ml_collections.ConfigDict
                ) -> dict[str, dict]:
    """series id -> the row as the records carry it: site coded, and its subject's split (data_prep.splits)."""
    rows = table.rows.drop(columns=["line"]).to_dict("index")
    subjects = {}
    for row in rows.values():
        key = pseudonym.subject_key(row["subject_id"], secret)
        subjects.setdefault(row["subject_id"], (key, set()))[1].add(row["site"])  # as written: test_sites' terms
        row["site"] = site_code(row["site"], secret, table.site_declared)
    test_sites = tuple(config.test_sites)
    unknown = [s for s in test_sites if s not in {site for _, sites in subjects.values() for site in sites}]
    if unknown:  # never written: a raw hospital name must not reach the manifest
        raise InputError(f"config.test_sites: {len(unknown)} of {len(test_sites)} match no site of the table"
                         f"{' (give the codes of site_codes)' if table.site_declared else ''}")
    mixed = sum(1 for _, sites in subjects.values() if len(sites & set(test_sites)) and len(sites - set(test_sites)))
    if mixed:
        raise InputError(f"{mixed} subject(s) have series at a held-out test site and at another site: they would "
                         "be in two splits; give a split file instead")
    split = splits.assign({s: (key, next(iter(sites))) for s, (key, sites) in subjects.items()},
                          tuple(config.split_fractions), config.split_file, test_sites)
    for row in rows.values():
        row["split"] = split[row["subject_id"]]
    return rows


def build(cohort: Path, out: Path, config: ml_collections.ConfigDict, secret: bytes, progress: bool = True,
          engine=None) -> dict:
    """The whole step (module docstring); returns the manifest, plus console-only `outcomes` and
    `rejections` (with paths and raw ids: never written) and `announce` (what the run decided).

    engine: what runs the per-input step and writes the shards (LocalEngine(config.workers) by default;
    data_prep.records.beam_engine.BeamEngine for Apache Beam). Listing, the freshness check and the small
    outputs run here whatever the engine, so every engine writes the same bytes."""
    engine = engine or LocalEngine(config.workers, progress)
    cohort, out = Path(cohort), Path(out)
    pseudonym.check_secret(secret)
    if not cohort.is_dir():
        raise InputError(f"{cohort}: no such cohort folder")
    with output_folder.OutputFolder(out, "records") as folder:
        table = read_reports(cohort, config)
        rows = usable_rows(table, secret, config)
        inputs, listed_failures = prepare.list_inputs(cohort, config, functools.partial(_read_headers, config.workers,
                                                                                       progress))
        plan = prepare.plan_from(config)
        config_json = {k: v for k, v in json.loads(config.to_json()).items() if k != "workers"}
        # Raw site names and paths are the user's (a hospital's name): they shape the stamp, outputs get codes.
        libraries = {name: importlib.metadata.version(name) for name in LIBRARIES}  # a decoder upgrade rebuilds
        stamp = {"config": config_json, "schema": table.schema.fingerprint_json(), "plan": plan.fingerprint(),
                 "build_version": BUILD_VERSION,
                 "schema_version": records.SCHEMA_VERSION, "secret": pseudonym.secret_fingerprint(secret),
                 "libraries": libraries}
        stamp_text = json.dumps(stamp, sort_keys=True)
        keys = [input_key(item, rows.get(item["series_id"]), stamp_text, secret) for item in inputs]
        fingerprint = pseudonym.keyed_hash(json.dumps(
            [stamp_text, keys, [(f["where"], f["code"]) for f in listed_failures],
             [(r.line, r.code) for r in table.rejected], table.sha256]), secret, "build")
        previous = out / "manifest.json"
        if previous.is_file():
            done = json.loads(previous.read_text())
            if done.get("build_fingerprint") == fingerprint:
                return {**done, "skipped": True, "outcomes": [], "rejections": [], "ignored_columns": [],
                        "schema_source": table.schema.source, "table": table.schema.table,
                        "announce": ""}
        announce = ("inputs, reports, schema, plan, secret or code changed since the last build: rebuilding all records"
                    if previous.is_file() else "")
        resumed = folder.start({"stamp": pseudonym.keyed_hash(stamp_text, secret, "stamp")})
        (folder.partial / ".cache").mkdir(exist_ok=True)
        todo = [(key, item, rows[item["series_id"]]) for key, item in zip(keys, inputs) if item["series_id"] in rows]
        shards_of = functools.partial(plan_shards, str(folder.partial),
                                      [(key, item["series_id"] in rows) for key, item in zip(keys, inputs)],
                                      config.shards_per_split)
        engine.run(todo, plan, config, str(folder.partial), secret, shards_of)
        for stray in folder.partial.glob("*/.*.array_record.tmp*"):  # a shard write killed or retried mid-way
            stray.unlink()
        manifest, outcomes = _assemble(folder.partial, inputs, shards_of(), listed_failures, table, rows, plan,
                                       config, secret)
        if any(o["code"] in TRANSIENT for o in outcomes):  # never up to date: the next run tries them again
            fingerprint += "-retry"
        codes_only = {**config_json, "schema_file": bool(config.schema_file),
                      "test_sites": [site_code(v, secret, table.site_declared) for v in config.test_sites],
                      "split_file": bool(config.split_file)}  # the site's names and paths stay out
        (folder.partial / "cohort_schema.json").write_text(json.dumps(table.schema.declarations(), indent=1) + "\n")
        manifest.update({"config": codes_only, "site_codes": sorted(set(table.schema.site_codes.values())),
                         "build_fingerprint": fingerprint, "build_version": BUILD_VERSION,
                         "secret_fingerprint": stamp["secret"],
                         "reports_key": pseudonym.keyed_hash(table.sha256, secret, "reports"), "libraries": libraries})
        (folder.partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for path in (folder.partial / ".cache").iterdir():
            path.unlink()
        (folder.partial / ".cache").rmdir()
        folder.commit()
    rejections = [{"line": r.line, "series_id": r.series_id, "code": r.code, "column": r.column}
                  for r in table.rejected]
    return {**manifest, "skipped": False, "outcomes": outcomes, "rejections": rejections,
            "ignored_columns": table.ignored_columns, "schema_source": table.schema.source,
            "table": table.schema.table,
            "announce": announce + (" (resumed an interrupted run)" if resumed else "")}


def _assemble(partial: Path, inputs: list[dict], planned: tuple, listed_failures: list[dict],
              table: reports_table.ReportsTable, rows: dict, plan: preprocess.Plan,
              config: ml_collections.ConfigDict, secret: bytes) -> tuple[dict, list[dict]]:
    """index.csv, failures.csv, rejections.csv, reports.csv and the manifest's counts from plan_shards' answer
    (the shards are written by then), in input order. Returns (manifest, console-only outcomes)."""
    fates, shards = planned
    position = {entry: (name, n) for name, entries in shards.items() for n, entry in enumerate(entries)}
    rejected_ids = {r.series_id for r in table.rejected if r.series_id}
    index_rows, outcomes = [], list(listed_failures)
    native_spacing, extents, kept = [], {r: [] for r in config.regions}, []
    processed, failed_inputs = 0, len(listed_failures)  # each counted from its own outcome
    for item, (fate, key, meta) in zip(inputs, fates):
        if fate == "no_row":
            failed_inputs += 1
            code = "report_row_rejected" if item["series_id"] in rejected_ids else "no_report_row"
            message = ("its reports table row was rejected (rejections.csv says why)"
                       if code == "report_row_rejected" else "no row for this series in the reports table")
            outcomes.append(prepare.failure_row(item["kind"], item["where"], code, message, item["series_id"]))
            continue
        if fate == "duplicate_scan":
            outcomes.append(prepare.failure_row(item["kind"], item["where"], "duplicate_scan", "the same voxel "
                                                "data as another input already made into records", item["series_id"]))
            failed_inputs += 1
            continue
        for failure in meta["failures"]:
            outcomes.append(prepare.failure_row(item["kind"], item["where"], failure["code"], failure["message"],
                                                item["series_id"], failure["region"]))
        if not meta["records"]:
            failed_inputs += 1
            continue
        processed += 1
        report = rows[item["series_id"]]
        native_spacing.append(meta["native_spacing_mm"])
        kept.append((report, meta["records"][0]["series_key"], meta["records"][0]["split"]))
        for m, record in enumerate(meta["records"]):
            capacity = np.asarray(plan.grid(record["region"])) * np.asarray(plan.spacing_mm)
            extents[record["region"]].append(record["extent_mm"])
            name, n = position[(key, m)]
            index_rows.append({
                "series_key": record["series_key"], "subject_key": pseudonym.subject_key(report["subject_id"], secret),
                "split": record["split"], "region": record["region"], "age": report["age"], "sex": report["sex"],
                "site": report["site"], "levels_missing": record["levels_missing"],
                "cropped": bool((np.asarray(record["extent_mm"]) > capacity).any()),
                "shard": name, "position": n})

    index = pd.DataFrame(index_rows, columns=["series_key", "subject_key", "split", "region", "age", "sex", "site",
                                              "levels_missing", "cropped", "shard", "position"])
    index.to_csv(partial / "index.csv", index=False)
    failures = pd.DataFrame([{"input_key": pseudonym.keyed_hash(f"{o['where']}|{o['series_id']}", secret, "input"),
                              "kind": o["kind"], "region": o["region"], "code": o["code"], "reason": o["message"]}
                             for o in outcomes], columns=["input_key", "kind", "region", "code", "reason"])
    failures.to_csv(partial / "failures.csv", index=False)
    pd.DataFrame([{"line": r.line, "series_key": pseudonym.series_key(r.series_id, secret) if r.series_id else "",
                   "code": r.code, "column": r.column, "reason": r.message} for r in table.rejected],
                 columns=["line", "series_key", "code", "column", "reason"]).to_csv(partial / "rejections.csv",
                                                                                   index=False)
    _export_reports(partial / "reports.csv", kept, table, secret)
    _qc_pictures(partial, index, plan)

    # Inputs: listed series and NIfTI files, plus files and split-off parts that joined no series.
    n_inputs = len(inputs) + len(listed_failures)
    if processed + failed_inputs != n_inputs:
        raise AssertionError(f"counts do not add up: {n_inputs} inputs, {processed} processed, {failed_inputs} failed")
    data_fingerprint = _data_fingerprint(native_spacing, extents, plan)
    warnings = table.warnings() + [
        f"{r}: the plan's grid crops the anatomy of {v['cropped_share']:.0%} of records (more than "
        f"{config.max_cropped_share:.0%}); enlarge the grid in the records config"
        for r, v in data_fingerprint["regions"].items() if v["cropped_share"] > config.max_cropped_share]
    manifest = {
        "schema_version": records.SCHEMA_VERSION, "plan": plan.to_json(), "plan_hash": plan.fingerprint(),
        "counts": {"inputs": n_inputs, "processed": processed, "failed": failed_inputs, "records": len(index),
                   "region_failures": int((failures["region"] != "").sum()),
                   "rows": table.n_rows, "rows_used": table.n_rows - len(table.rejected),
                   "rows_rejected": len(table.rejected), "ignored_columns": len(table.ignored_columns),
                   "by_code": dict(sorted(Counter(failures["code"]).items())),
                   "rejections_by_code": dict(sorted(Counter(r.code for r in table.rejected).items())),
                   "records_by_region_split": {f"{r}/{s}": int(c) for (r, s), c in
                                               index.groupby(["region", "split"]).size().items()}},
        "shapes": {r: list(plan.grid(r)) for r in config.regions},
        "data_fingerprint": data_fingerprint, "warnings": warnings,
    }
    return manifest, outcomes


def _data_fingerprint(native_spacing: list, extents: dict, plan: preprocess.Plan) -> dict:
    """What the data look like against the plan (nnU-Net's fingerprint): native spacing, and per region
    the 95th percentile of its extent and the share of records whose anatomy the grid had to crop."""
    out = {"native_spacing_mm_median": np.median(native_spacing, axis=0).round(3).tolist()
           if native_spacing else None, "regions": {}}
    for region, sizes in extents.items():
        if not sizes:
            continue
        sizes = np.asarray(sizes)
        capacity = np.asarray(plan.grid(region)) * np.asarray(plan.spacing_mm)
        out["regions"][region] = {"extent_mm_p95": np.percentile(sizes, 95, axis=0).round(1).tolist(),
                                  "grid_mm": capacity.round(1).tolist(),
                                  "cropped_share": float((sizes > capacity).any(axis=1).mean())}
    return out


def _export_reports(path: Path, kept: list, table: reports_table.ReportsTable, secret: bytes) -> None:
    """reports.csv keyed by series: age, sex, coded site, the exposures and covariates and the pathology grades,
    under spinejax's names (cohort_schema.json beside it says what each is)."""
    declared, pathology = table.declared_columns, table.pathology_columns
    rows = [{"series_key": key, "subject_key": pseudonym.subject_key(report["subject_id"], secret),
             "split": split, "age": report["age"], "sex": report["sex"], "site": report["site"],
             **{c: report[c] for c in declared + pathology}} for report, key, split in kept]
    pd.DataFrame(rows, columns=["series_key", "subject_key", "split", "age", "sex", "site", *declared, *pathology]
                 ).to_csv(path, index=False)


def _qc_pictures(out: Path, index: pd.DataFrame, plan: preprocess.Plan, n: int = 12) -> None:
    """qc_<region>.png: mid-sagittal slices of up to `n` records with the mask outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from array_record.python.array_record_module import ArrayRecordReader

    rng = np.random.default_rng(0)
    for region, rows in index.groupby("region"):
        chosen = rows.iloc[np.sort(rng.choice(len(rows), size=min(n, len(rows)), replace=False))]
        fig, axes = plt.subplots(1, len(chosen), figsize=(1.6 * len(chosen), 5), squeeze=False)
        for ax, row in zip(axes[0], chosen.itertuples()):
            reader = ArrayRecordReader(str(out / row.shard))
            fields = records.decode(reader.read([row.position])[0])
            reader.close()
            mid = fields["volume"].shape[0] // 2
            ax.imshow(fields["volume"][mid].astype(np.float32), cmap="gray")
            ax.contour(fields["mask"][mid], [0.5], colors="red", linewidths=0.4)
            ax.set_title(f"{row.split}\n{row.age:.0f} y", fontsize=7)
            ax.set_axis_off()
        fig.suptitle(f"{region}: mid-sagittal slices, spine mask in red (plan {plan.fingerprint()})", fontsize=8)
        fig.savefig(out / f"qc_{region}.png", dpi=90)
        plt.close(fig)
