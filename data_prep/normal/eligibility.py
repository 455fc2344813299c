"""Normal-spine eligibility from a reports table (the paper's training cohort selection).

    python -m data_prep.eligibility --input=COHORT_DIR --out=DIR [--config=configs/eligibility.py]
        [--config.umap.n_neighbors=30 ...] [--secret_file=PATH]

Reads the cohort's reports table (one row per series; COHORT_DIR/reports.csv or what its cohort schema
names) and writes to DIR:
    eligibility.csv        series_key, subject_key, cluster, membership, eligible, code, reason (one row per
                           row of the table, in file order: rejected rows too (spinejax.cohort.reports_table),
                           with cluster -2, their code and the reason in spinejax's words)
    clusters.csv           per cluster: size, shares, age summary, common or rare, condition prevalence
    embedding.csv          series_key, cluster, umap_0, umap_1, ...
    embedding_clusters.png, embedding_age.png, prevalence_heatmap.png
    summary.json           config, counts (they add up), library versions, input and secret fingerprints,
                           timings; no path
The folder is written whole (spinejax.output_folder): never over the user's files, one run at a time, and
up to date only while the table's bytes, the config, the secret and the code version are unchanged.
Keys are keyed hashes (spinejax.cohort.pseudonym) under the same secret as the records, so training can keep
eligible series and the analysis can still see everyone. The method is data_prep/normal_spines.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd

from data_prep.normal import figures, normal_spines
from spinejax import output_folder
from spinejax.cohort import pathology_features, pseudonym, reports_table
from spinejax.errors import InputError

INVALID = -2
ELIGIBILITY_VERSION = 2  # what the outputs hold for the same table and config; bump when that changes
LIBRARIES = ("umap-learn", "hdbscan", "numpy", "scikit-learn", "pandas", "numba", "pynndescent")


def features_for(graded: pd.DataFrame, config: ml_collections.ConfigDict) -> pd.DataFrame:
    """The feature matrix config.features names, from grades [cases, condition x level], leaving out
    grades below config.min_grade: 'region_at_least' (counts), 'raw' (grades) or 'both'."""
    if config.features not in ("region_at_least", "raw", "both"):
        raise ValueError(f"config.features must be 'region_at_least', 'raw' or 'both', not {config.features!r}")
    parts = []
    if config.features in ("region_at_least", "both"):
        parts.append(pathology_features.region_at_least(graded, config.min_grade))
    if config.features in ("raw", "both"):
        parts.append(graded.where(graded >= config.min_grade, 0).astype(np.float32))
    return pd.concat(parts, axis=1)


def read_table(input_dir: Path, config: ml_collections.ConfigDict) -> reports_table.ReportsTable:
    """The cohort's reports table, checked row by row (spinejax.cohort.reports_table); refuses a table with no
    pathology grades."""
    table = reports_table.read_cohort(Path(input_dir), config.schema_file)
    if not table.pathology_columns:
        raise InputError(f"{table.schema.table} has no pathology grade columns of the conditions {table.schema.source} "
                         "declares: eligibility needs them (docs/cohort_schema.md, 'pathology')")
    return table


def usable_features(table: reports_table.ReportsTable, config: ml_collections.ConfigDict
                    ) -> tuple[pd.DataFrame, np.ndarray]:
    """(features of the usable rows, in file order; their ages in years)."""
    graded = table.rows[table.pathology_columns]
    return features_for(graded, config), table.rows["age"].to_numpy(float)


def run(input_dir: Path, out: Path, config: ml_collections.ConfigDict, secret: bytes) -> dict:
    """The whole step; returns the summary written to summary.json."""
    input_dir, out = Path(input_dir), Path(out)
    pseudonym.check_secret(secret)
    with output_folder.OutputFolder(out, "eligibility") as folder:
        table = read_table(input_dir, config)
        # What the outputs depend on; summary.json holds these four, and an equal set means up to date.
        settings = {**json.loads(config.to_json()), "schema_file": bool(config.schema_file)}  # no path in outputs
        stamp = {"config": settings,
                 "schema": pseudonym.keyed_hash(table.schema.fingerprint_json(), secret, "schema"),
                 "input_key": pseudonym.keyed_hash(table.sha256, secret, "reports"),
                 "version": ELIGIBILITY_VERSION, "secret_fingerprint": pseudonym.secret_fingerprint(secret)}
        previous = out / "summary.json"
        if previous.is_file():
            done = json.loads(previous.read_text())
            if {k: done.get(k) for k in stamp} == stamp:
                return {**done, "skipped": True, "ignored_columns": []}
        if len(table.rows) == 0:
            raise InputError(f"{table.schema.table}: none of its {table.n_rows} rows is usable "
                             f"({len(table.rejected)} rejected); nothing to cluster")
        start = time.perf_counter()
        features, ages = usable_features(table, config)
        if config.small_cohort_policy not in ("all_valid", "paper"):
            raise InputError(f"config.small_cohort_policy must be 'all_valid' or 'paper', not "
                             f"{config.small_cohort_policy!r}")
        try:
            result = normal_spines.find_normal_spines(features.to_numpy(np.float32), ages, config,
                                                      list(features.columns))
        except normal_spines.TooFewProfiles as error:
            if config.small_cohort_policy != "all_valid":
                raise InputError(f"{table.schema.table}: {error}") from None
            result = normal_spines.everyone(len(ages), ages, config, "too few distinct pathology profiles to embed")
        seconds = time.perf_counter() - start
        folder.start(stamp)
        _write(folder.partial, table, result, ages, secret)
        counts = {"rows": table.n_rows, "invalid": len(table.rejected), "eligible": int(result.eligible.sum()),
                  "small_cohort_fallback": bool(result.fallback and config.small_cohort_policy == "all_valid"),
                  "ineligible_valid": int((~result.eligible).sum()),
                  "noise": int((result.cluster == normal_spines.NOISE).sum()),
                  "clusters": int(result.clusters["cluster"].ge(0).sum()),
                  "common_clusters": int(result.clusters["common"].sum()),
                  "invalid_by_code": dict(sorted(pd.Series([r.code for r in table.rejected], dtype=object)
                                                 .value_counts().items()))}
        assert counts["eligible"] + counts["ineligible_valid"] + counts["invalid"] == counts["rows"]
        summary = {
            **stamp, "counts": counts,
            "features": {"kind": config.features, "count": int(features.shape[1])},
            "seconds": round(seconds, 2), "libraries": {n: importlib.metadata.version(n) for n in LIBRARIES},
            "warnings": table.warnings(),
        }
        (folder.partial / "summary.json").write_text(json.dumps(summary, indent=1))
        folder.commit()
    return {**summary, "skipped": False, "ignored_columns": table.ignored_columns}  # console only


def _write(out: Path, table: reports_table.ReportsTable, result: normal_spines.Eligibility, ages: np.ndarray,
           secret: bytes) -> None:
    """eligibility.csv (every row of the table, in file order), clusters.csv, embedding.csv, pictures."""
    usable = pd.DataFrame({
        "line": table.rows["line"].to_numpy(),
        "series_key": [pseudonym.series_key(s, secret) for s in table.rows.index],
        "subject_key": [pseudonym.subject_key(s, secret) for s in table.rows["subject_id"]],
        "cluster": result.cluster, "membership": result.membership.round(4), "eligible": result.eligible,
        "code": "", "reason": result.reason})
    rejected = pd.DataFrame({
        "line": [r.line for r in table.rejected],
        "series_key": [pseudonym.series_key(r.series_id, secret) if r.series_id else "" for r in table.rejected],
        "subject_key": "", "cluster": INVALID, "membership": 0.0, "eligible": False,
        "code": [r.code for r in table.rejected],
        "reason": ["invalid report row: " + r.message for r in table.rejected]})
    rows = pd.concat([usable, rejected] if len(rejected) else [usable]).sort_values("line", kind="stable")
    rows.drop(columns=["line"]).to_csv(out / "eligibility.csv", index=False)
    graded = table.rows[table.pathology_columns]
    prevalence = pathology_features.any_level(graded).groupby(result.cluster).mean()
    clusters = result.clusters.join(prevalence.add_prefix("prevalence_"), on="cluster")
    clusters.to_csv(out / "clusters.csv", index=False, float_format="%.4f")
    embedding = pd.DataFrame(result.embedding, columns=[f"umap_{i}" for i in range(result.embedding.shape[1])])
    embedding.insert(0, "cluster", result.cluster)
    embedding.insert(0, "series_key", usable["series_key"].to_numpy())
    embedding.to_csv(out / "embedding.csv", index=False, float_format="%.5f")

    common = set(result.clusters.loc[result.clusters["common"], "cluster"].tolist())
    figures.embedding_by_cluster(result.embedding, result.cluster, common,
                                             out / "embedding_clusters.png")
    figures.embedding_by_age(result.embedding, ages, out / "embedding_age.png")
    labelled = prevalence.rename(index=lambda c: f"{c} ({'common' if c in common else 'rare'})"
                                 if c >= 0 else "noise")
    figures.prevalence_heatmap(labelled, out / "prevalence_heatmap.png")
