"""Normal-spine eligibility from a reports table (the paper's training cohort selection).

    python -m data_prep.eligibility --input=COHORT_DIR --out=DIR [--config=configs/eligibility.py]
        [--config.umap.n_neighbors=30 ...] [--secret_file=PATH]

Reads COHORT_DIR/reports.csv (one row per series) and writes to DIR:
    eligibility.csv        series_key, subject_key, cluster, membership, eligible, reason (one row per row
                           of reports.csv: invalid rows too, with cluster -2 and the reason)
    clusters.csv           per cluster: size, shares, age summary, common or rare, condition prevalence
    embedding.csv          series_key, cluster, umap_0, umap_1, ...
    embedding_clusters.png, embedding_age.png, prevalence_heatmap.png
    summary.json           config, counts (they add up), library versions, input fingerprint, timings
Keys are keyed hashes (data_prep.pseudonym) under the same secret as the records, so training can keep
eligible series and the analysis can still see everyone. The method is data_prep/normal_spines.py.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
from absl import app, flags
from ml_collections import config_flags

from data_prep import eligibility_figures, normal_spines, pathology_features, pseudonym

FLAGS = flags.FLAGS
INVALID = -2
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


def usable_features(table: pd.DataFrame, config: ml_collections.ConfigDict
                    ) -> tuple[pd.Series, pd.DataFrame, np.ndarray]:
    """(why each row is unusable, '' when usable; features of usable rows; their ages in years)."""
    columns = pathology_features.feature_columns(table)
    invalid = pathology_features.invalid_rows(table, columns)
    valid = (invalid == "").to_numpy()
    features = features_for(table.loc[valid, columns].astype(np.int8), config)
    return invalid, features, pd.to_numeric(table.loc[valid, "age"]).to_numpy(float)


def run(input_dir: Path, out: Path, config: ml_collections.ConfigDict, secret: bytes) -> dict:
    """The whole step; returns the summary written to summary.json."""
    reports_path = input_dir / "reports.csv"
    if not reports_path.is_file():
        raise FileNotFoundError(f"{reports_path}: no reports table (expected one row per series)")
    raw = reports_path.read_bytes()
    table = pd.read_csv(reports_path)
    for column in ("series_id", "subject_id", "age"):
        if column not in table:
            raise ValueError(f"{reports_path}: column {column!r} is missing")
    fingerprint = hashlib.sha256(raw).hexdigest()
    config_json = json.loads(config.to_json())
    previous = out / "summary.json"
    if previous.exists():
        done = json.loads(previous.read_text())
        if done.get("input_sha256") == fingerprint and done.get("config") == config_json:
            return {**done, "skipped": True}

    start = time.perf_counter()
    invalid, features, ages = usable_features(table, config)
    valid = (invalid == "").to_numpy()
    result = normal_spines.find_normal_spines(features.to_numpy(np.float32), ages, config)
    seconds = time.perf_counter() - start

    series_keys = np.array([pseudonym.series_key(s, secret) for s in table["series_id"]])
    subject_keys = np.array([pseudonym.subject_key(s, secret) for s in table["subject_id"]])
    cluster = np.full(len(table), INVALID)
    cluster[valid] = result.cluster
    membership = np.zeros(len(table), np.float32)
    membership[valid] = result.membership
    eligible = np.zeros(len(table), bool)
    eligible[valid] = result.eligible
    reason = invalid.to_numpy(object).copy()
    reason[valid] = result.reason
    reason[~valid] = ["invalid report row: " + r for r in reason[~valid]]

    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"series_key": series_keys, "subject_key": subject_keys, "cluster": cluster,
                  "membership": membership.round(4), "eligible": eligible, "reason": reason}
                 ).to_csv(out / "eligibility.csv", index=False)
    graded = table.loc[valid, pathology_features.feature_columns(table)].astype(np.int8)
    prevalence = pathology_features.any_level(graded).groupby(result.cluster).mean()
    clusters = result.clusters.join(prevalence.add_prefix("prevalence_"), on="cluster")
    clusters.to_csv(out / "clusters.csv", index=False, float_format="%.4f")
    embedding = pd.DataFrame(result.embedding, columns=[f"umap_{i}" for i in range(result.embedding.shape[1])])
    embedding.insert(0, "cluster", result.cluster)
    embedding.insert(0, "series_key", series_keys[valid])
    embedding.to_csv(out / "embedding.csv", index=False, float_format="%.5f")

    common = set(result.clusters.loc[result.clusters["common"], "cluster"].tolist())
    eligibility_figures.embedding_by_cluster(result.embedding, result.cluster, common,
                                             out / "embedding_clusters.png")
    eligibility_figures.embedding_by_age(result.embedding, ages, out / "embedding_age.png")
    labelled = prevalence.rename(index=lambda c: f"{c} ({'common' if c in common else 'rare'})"
                                 if c >= 0 else "noise")
    eligibility_figures.prevalence_heatmap(labelled, out / "prevalence_heatmap.png")

    counts = {"rows": len(table), "invalid": int((~valid).sum()), "eligible": int(eligible.sum()),
              "ineligible_valid": int((valid & ~eligible).sum()),
              "noise": int((result.cluster == normal_spines.NOISE).sum()),
              "clusters": int(result.clusters["cluster"].ge(0).sum()), "common_clusters": len(common)}
    assert counts["eligible"] + counts["ineligible_valid"] + counts["invalid"] == counts["rows"]
    summary = {
        "config": config_json, "input": str(reports_path), "input_sha256": fingerprint, "counts": counts,
        "features": {"kind": config.features, "count": int(features.shape[1])},
        "seconds": round(seconds, 2), "libraries": {n: importlib.metadata.version(n) for n in LIBRARIES},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return {**summary, "skipped": False}


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_string("input", None, "Cohort folder holding reports.csv.")
    flags.DEFINE_string("out", None, "Output folder.")
    flags.DEFINE_string("secret_file", None, "File holding the secret for keyed hashes (else $SPINEJAX_SECRET).")
    config_flags.DEFINE_config_file("config", "configs/eligibility.py", "Eligibility config.")


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.input or not FLAGS.out:
        raise app.UsageError("--input=COHORT_DIR and --out=DIR are required")
    summary = run(Path(FLAGS.input), Path(FLAGS.out), FLAGS.config, pseudonym.load_secret(FLAGS.secret_file))
    c = summary["counts"]
    if summary["skipped"]:
        print(f"{FLAGS.out}: eligibility already up to date for this reports table and config")
    print(f"{c['rows']} series: {c['eligible']} eligible, {c['ineligible_valid']} ineligible, "
          f"{c['invalid']} invalid rows; {c['clusters']} clusters ({c['common_clusters']} common), "
          f"{c['noise']} noise; {summary['seconds']:.1f} s -> {FLAGS.out}/eligibility.csv")


if __name__ == "__main__":
    define_flags()
    app.run(main)
