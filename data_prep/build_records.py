"""A cohort folder to de-identified, region-cropped ArrayRecord shards.

    python -m data_prep.build_records --input=COHORT_DIR --out=RECORDS_DIR [--config=configs/records.py]
        [--secret_file=PATH]

Inputs: every DICOM series under COHORT_DIR/dicom (data_prep.dicom_series) and every
COHORT_DIR/nifti/<series_id>.nii.gz, each with COHORT_DIR/masks/<series_id>.nii.gz and its row of
COHORT_DIR/reports.csv. Each input becomes records (one per region) or one failure row; a region that
cannot be cut (say, a lumbar-only scan has no cervical labels) is a failure row of its own.

Outputs in RECORDS_DIR:
    <region>/<split>-NNNNN-of-MMMMM.array_record   records (spinejax.records), group_size:1
    index.csv        one row per record: keys, split, region, age, sex, site, shard, position
    failures.csv     one row per failed input or region: input key, kind, region, reason
    manifest.json    plan and plan hash, counts (inputs = processed + failed), shapes, versions, fingerprint
    qc_<region>.png  mid-sagittal slices of random records with the mask outline
De-identification: no name, id, date, accession number, UID or path of the input reaches an output;
subjects, series and failed inputs appear only as keyed hashes (data_prep.pseudonym).
Work is cached per input under RECORDS_DIR.partial/ and renamed into place when complete: a killed run,
started again, redoes only unfinished inputs, and the output bytes do not depend on the worker count.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
from absl import app, flags
from array_record.python.array_record_module import ArrayRecordWriter
from ml_collections import config_flags
from tqdm import tqdm

from data_prep import canonical, dicom_series, preprocess, pseudonym, splits
from spinejax import records

FLAGS = flags.FLAGS
LIBRARIES = ("numpy", "scipy", "pydicom", "nibabel", "array-record", "pylibjpeg", "pylibjpeg-libjpeg",
             "pylibjpeg-openjpeg", "pylibjpeg-rle")


def plan_from(config: ml_collections.ConfigDict) -> preprocess.Plan:
    return preprocess.Plan(
        spacing_mm=tuple(config.spacing_mm), grids=tuple((r, tuple(config.grids[r])) for r in config.regions),
        mask_dilation_mm=config.mask_dilation_mm, clip_percentiles=tuple(config.clip_percentiles),
        crop_margin_mm=config.crop_margin_mm)


def list_inputs(cohort: Path) -> tuple[list[dict], list[dict]]:
    """(inputs, failures) in a fixed order. Each input: kind, series_id, relative path, files."""
    inputs, failures = [], []
    dicom_root = cohort / "dicom"
    if dicom_root.is_dir():
        found, bad_files = dicom_series.find_series(dicom_root)
        for failure in bad_files:
            failures.append({"kind": "dicom file", "where": str(failure.path.relative_to(cohort)),
                             "region": "", "reason": failure.reason})
        for series in found:
            inputs.append({"kind": "dicom", "series_id": series.series_uid, "part": series.part,
                           "where": str(series.files[0].parent.relative_to(cohort)),
                           "orientation": series.orientation, "files": [str(p) for p in series.files]})
    for path in sorted((cohort / "nifti").glob("*.nii*")) if (cohort / "nifti").is_dir() else []:
        series_id = path.name.split(".nii")[0]
        inputs.append({"kind": "nifti", "series_id": series_id, "part": 0,
                       "where": str(path.relative_to(cohort)), "files": [str(path)]})
    return inputs, failures


def load_scan(item: dict) -> canonical.Volume:
    """The scan of one listed input, not yet canonical. Raises SeriesError or ValueError with a reason."""
    if item["kind"] == "dicom":
        return dicom_series.load_series(dicom_series.SeriesFiles(
            item["series_id"], tuple(Path(f) for f in item["files"]), tuple(item["orientation"]), 0))
    return canonical.load_nifti(item["files"][0])


def process_input(item: dict, cohort: Path, report: dict | None, plan: preprocess.Plan,
                  config: ml_collections.ConfigDict, secret: bytes) -> dict:
    """One input to its records, or to a failure. Pure apart from reading the input's files."""
    def failed(reason: str, region: str = "") -> dict:
        return {"records": [], "failures": [{"region": region, "reason": reason}]}

    if report is None:
        return failed("no row for this series in reports.csv")
    if item["part"] > 0:
        return failed("a second orientation or matrix size inside one series (series split)")
    if item["kind"] == "dicom" and not dicom_series.is_sagittal(item["orientation"], config.max_oblique_deg):
        return failed("not a sagittal series")
    try:
        scan = load_scan(item)
    except dicom_series.SeriesError as error:
        return failed(error.reason)
    except ValueError as error:  # load_nifti's "<path>: <reason>"; keep the reason, not the path
        return failed(f"scan refused: {str(error).split(': ', 1)[-1]}")
    except Exception as error:  # noqa: BLE001 - unreadable NIfTI of any kind
        return failed(f"scan cannot be read ({type(error).__name__})")
    mask_path = cohort / "masks" / f"{item['series_id']}.nii.gz"
    if not mask_path.is_file():
        return failed("no mask for this series")
    try:
        labels = canonical.load_nifti(mask_path, is_label=True)
    except Exception as error:  # noqa: BLE001
        return failed(f"mask cannot be read ({type(error).__name__})")
    scan, labels = canonical.to_canonical(scan), canonical.to_canonical(labels)
    if scan.data.shape != labels.data.shape or not np.allclose(scan.affine_lps, labels.affine_lps, atol=0.1):
        return failed(f"mask grid {labels.data.shape} does not match the scan's {scan.data.shape}")

    subject_key = pseudonym.subject_key(report["subject_id"], secret)
    series_key = pseudonym.series_key(item["series_id"], secret)
    split = splits.split_of(subject_key, tuple(config.split_fractions))
    out = {"records": [], "failures": [], "native_spacing_mm": [float(v) for v in scan.spacing]}
    try:
        resampled = preprocess.resample(scan, labels, plan)
    except preprocess.RegionError as error:
        return failed(str(error))
    for region in config.regions:
        try:
            arrays = preprocess.cut_region(*resampled, plan, region)
        except preprocess.RegionError as error:
            out["failures"].append({"region": region, "reason": str(error)})
            continue
        fields = {**arrays, "schema_version": records.SCHEMA_VERSION, "plan_hash": plan.fingerprint(),
                  "subject_key": subject_key, "series_key": series_key, "split": split, "region": region,
                  "age": float(report["age"]), "sex": str(report.get("sex", "") or ""),
                  "site": str(report.get("site", "") or "")}
        out["records"].append({"region": region, "split": split, "series_key": series_key,
                               "extent_mm": preprocess.region_extent_mm(resampled[1], plan, region),
                               "bytes": records.encode(fields)})
    return out


def _cache_path(partial: Path, index: int) -> Path:
    return partial / ".cache" / f"{index:07d}.npz"


def _worker(args) -> int:
    index, item, cohort, report, plan, config, secret, partial = args
    path = _cache_path(Path(partial), index)
    if path.exists():
        return index
    result = process_input(item, Path(cohort), report, plan, config, secret)
    blobs = {f"r{n}": np.frombuffer(r["bytes"], np.uint8) for n, r in enumerate(result["records"])}
    meta = json.dumps({"records": [{k: v for k, v in r.items() if k != "bytes"} for r in result["records"]],
                       "failures": result["failures"], "native_spacing_mm": result.get("native_spacing_mm")})
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, meta=np.frombuffer(meta.encode(), np.uint8), **blobs)  # arrays only: no pickle
    os.replace(tmp, path)
    return index


def build(cohort: Path, out: Path, config: ml_collections.ConfigDict, secret: bytes, progress: bool = True) -> dict:
    """The whole step (module docstring); returns the manifest."""
    plan = plan_from(config)
    reports_path = cohort / "reports.csv"
    if not reports_path.is_file():
        raise FileNotFoundError(f"{reports_path}: no reports table")
    table = pd.read_csv(reports_path, dtype={"series_id": str, "subject_id": str})
    reports = {row["series_id"]: row for row in table.to_dict("records")}
    inputs, file_failures = list_inputs(cohort)
    fingerprint = hashlib.sha256(json.dumps(
        [(i["where"], i["series_id"], len(i["files"])) for i in inputs]).encode()).hexdigest()
    # What decides the output; the worker count does not, so it is left out (and a rerun with other
    # workers is still up to date).
    config_json = {k: v for k, v in json.loads(config.to_json()).items() if k != "workers"}
    if (out / "manifest.json").exists():
        done = json.loads((out / "manifest.json").read_text())
        if (done.get("input_fingerprint") == fingerprint and done.get("config") == config_json
                and done.get("schema_version") == records.SCHEMA_VERSION):
            return {**done, "skipped": True}
        shutil.rmtree(out)
    partial = out.with_name(out.name + ".partial")
    stamp = partial / ".config.json"
    state = json.dumps({"config": config_json, "fingerprint": fingerprint, "plan": plan.fingerprint(),
                        "schema_version": records.SCHEMA_VERSION})
    if partial.exists() and (not stamp.exists() or stamp.read_text() != state):
        shutil.rmtree(partial)
    (partial / ".cache").mkdir(parents=True, exist_ok=True)
    stamp.write_text(state)

    start = time.perf_counter()
    jobs = [(n, item, str(cohort), reports.get(item["series_id"]), plan, config, secret, str(partial))
            for n, item in enumerate(inputs)]
    workers = config.workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc="series", unit="series", disable=not progress, file=sys.stdout,
               mininterval=0.5 if sys.stdout.isatty() else 15.0)
    if workers == 1:
        for job in jobs:
            _worker(job)
            bar.update()
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_worker, jobs, chunksize=1):
                bar.update()
    bar.close()
    seconds_processing = time.perf_counter() - start

    # Shards, index and failures from the cache, in input order: the same bytes whatever the workers.
    writers, counts_per_shard, index_rows, failure_rows = {}, {}, [], []
    n_shards = config.shards_per_split
    for failure in file_failures:
        failure_rows.append({"input_key": pseudonym.keyed_hash(failure["where"], secret, "input"),
                             "kind": failure["kind"], "region": "", "reason": failure["reason"]})
    processed = failed = 0
    local_failures = [f"{f['where']}: {f['reason']}" for f in file_failures]  # paths: console only
    native_spacing, extents = [], {r: [] for r in config.regions}
    keep = []
    for n, item in enumerate(inputs):
        cached = np.load(_cache_path(partial, n))
        meta = json.loads(cached["meta"].tobytes())
        input_key = pseudonym.keyed_hash(f"{item['where']}|{item['series_id']}|{item['part']}", secret, "input")
        for failure in meta["failures"]:
            failure_rows.append({"input_key": input_key, "kind": item["kind"], **failure})
            what = f"{item['kind']}, {failure['region']}" if failure["region"] else item["kind"]
            local_failures.append(f"{item['where']} ({what}): {failure['reason']}")
        if not meta["records"]:
            failed += 1
            continue
        processed += 1
        report = reports[item["series_id"]]
        native_spacing.append(meta["native_spacing_mm"])
        keep.append((report, meta["records"][0]["series_key"], meta["records"][0]["split"]))
        for m, record in enumerate(meta["records"]):
            shard = int(record["series_key"][:8], 16) % n_shards
            key = (record["region"], record["split"], shard)
            if key not in writers:
                (partial / record["region"]).mkdir(exist_ok=True)
                name = f"{record['split']}-{shard:05d}-of-{n_shards:05d}.array_record"
                writers[key] = (ArrayRecordWriter(str(partial / record["region"] / name), "group_size:1"), name)
                counts_per_shard[key] = 0
            writers[key][0].write(cached[f"r{m}"].tobytes())
            extents[record["region"]].append(record["extent_mm"])
            index_rows.append({
                "series_key": record["series_key"], "subject_key": pseudonym.subject_key(report["subject_id"], secret),
                "split": record["split"], "region": record["region"], "age": report["age"],
                "sex": report.get("sex", ""), "site": report.get("site", ""),
                "shard": f"{record['region']}/{writers[key][1]}", "position": counts_per_shard[key]})
            counts_per_shard[key] += 1
    for writer, _ in writers.values():
        writer.close()
    index = pd.DataFrame(index_rows, columns=["series_key", "subject_key", "split", "region", "age", "sex",
                                              "site", "shard", "position"])
    index.to_csv(partial / "index.csv", index=False)
    failures = pd.DataFrame(failure_rows, columns=["input_key", "kind", "region", "reason"])
    failures.to_csv(partial / "failures.csv", index=False)
    _export_reports(partial / "reports.csv", keep, table, config, secret)
    _qc_pictures(partial, index, plan)

    n_inputs = len(inputs) + len(file_failures)
    manifest = {
        "schema_version": records.SCHEMA_VERSION, "plan": plan.to_json(), "plan_hash": plan.fingerprint(),
        "config": config_json, "input_fingerprint": fingerprint,
        "counts": {"inputs": n_inputs, "processed": processed, "failed": failed + len(file_failures),
                   "records": len(index), "region_failures": int((failures["region"] != "").sum()),
                   "records_by_region_split": {f"{r}/{s}": int(c) for (r, s), c in
                                               index.groupby(["region", "split"]).size().items()}},
        "shapes": {r: list(plan.grid(r)) for r in config.regions},
        "data_fingerprint": _data_fingerprint(native_spacing, extents, plan),
        "libraries": {name: importlib.metadata.version(name) for name in LIBRARIES},
    }
    assert manifest["counts"]["processed"] + manifest["counts"]["failed"] == n_inputs
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(partial / ".cache")
    stamp.unlink()
    os.replace(partial, out)
    return {**manifest, "skipped": False, "seconds_processing": round(seconds_processing, 1),
            "local_failures": local_failures}


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


def _export_reports(path: Path, keep: list, table: pd.DataFrame, config: ml_collections.ConfigDict,
                    secret: bytes) -> None:
    """reports.csv keyed by series: what the analysis needs, and only the columns the config names."""
    pathology = [c for c in table.columns if "__" in c]
    extra = [c for c in config.report_columns if c in table.columns]
    rows = [{"series_key": key, "subject_key": pseudonym.subject_key(report["subject_id"], secret),
             "split": split, "age": report["age"], "sex": report.get("sex", ""), "site": report.get("site", ""),
             **{c: report[c] for c in extra + pathology}} for report, key, split in keep]
    pd.DataFrame(rows, columns=["series_key", "subject_key", "split", "age", "sex", "site", *extra, *pathology]
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


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_string("input", None, "Cohort folder (dicom/, nifti/, masks/, reports.csv).")
    flags.DEFINE_string("out", None, "Records folder to write.")
    flags.DEFINE_string("secret_file", None, "File holding the secret for keyed hashes (else $SPINEJAX_SECRET).")
    config_flags.DEFINE_config_file("config", "configs/records.py", "Records config.")


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.input or not FLAGS.out:
        raise app.UsageError("--input=COHORT_DIR and --out=RECORDS_DIR are required")
    manifest = build(Path(FLAGS.input), Path(FLAGS.out), FLAGS.config, pseudonym.load_secret(FLAGS.secret_file))
    c = manifest["counts"]
    if manifest["skipped"]:
        print(f"{FLAGS.out}: records already up to date for these inputs and config")
    print(f"{c['inputs']} inputs: {c['processed']} processed, {c['failed']} failed; {c['records']} records, "
          f"{c['region_failures']} region failures; plan {manifest['plan_hash']} -> {FLAGS.out}")
    if not manifest["skipped"]:
        print(f"processing took {manifest['seconds_processing']:.1f} s")
    for line in manifest.get("local_failures", []):  # paths go to the operator's console, not to outputs
        print(f"failed: {line}")
    if c["failed"] or c["region_failures"]:
        print(f"reasons, keyed: {FLAGS.out}/failures.csv")


if __name__ == "__main__":
    define_flags()
    app.run(main)
