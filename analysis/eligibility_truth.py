"""How well eligibility finds the planted non-age-related spines of a synthetic cohort, and how stable it is.

    python -m analysis.eligibility_truth --cohort=COHORT_DIR --eligibility=DIR [--seeds=1,2] [--secret_file=P]

Reads the cohort's hidden truth (synthetic cohorts only) and DIR/eligibility.csv, and writes
DIR/truth_check.json:
- precision and recall of the ineligible set for the planted abnormal spines, per kind too, next to
  the base rate (what marking everyone ineligible would score);
- stability: the same step with other seeds; the share of people whose eligibility differs from the first
  run's (flip_share), the Jaccard index of the eligible sets and the adjusted Rand index of the clusterings.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
from absl import app, flags
from sklearn.metrics import adjusted_rand_score

from data_prep.normal import eligibility, normal_spines
from spinejax import output_folder
from spinejax.cohort import pseudonym
from spinejax.errors import InputError, one_line_errors

FLAGS = flags.FLAGS
def detection(ineligible: np.ndarray, abnormal: np.ndarray, kinds: np.ndarray) -> dict:
    """Precision/recall of `ineligible` [n] bool for `abnormal` [n] bool, with per-kind recall."""
    hits = int((ineligible & abnormal).sum())
    return {
        "cases": int(len(abnormal)), "abnormal": int(abnormal.sum()), "ineligible": int(ineligible.sum()),
        "base_rate": float(abnormal.mean()),
        "precision": hits / max(int(ineligible.sum()), 1), "recall": hits / max(int(abnormal.sum()), 1),
        "recall_by_kind": {str(k): float(ineligible[kinds == k].mean()) for k in sorted(set(kinds) - {""})},
        "ineligible_share_of_normal": float(ineligible[~abnormal].mean()),
    }


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def check(cohort: Path, result_dir: Path, secret: bytes, seeds: list[int], schema_file: str = "") -> dict:
    """Detection of the planted non-age-related spines by `result_dir`'s eligibility, and with further UMAP
    `seeds` on the same table (read through `schema_file` when the run was given one: its summary keeps no
    path)."""
    truth = json.loads((cohort / "ground_truth.json").read_text())
    kind_of = {pseudonym.series_key(s["series_id"], secret): s["abnormal_kind"] for s in truth["series"]}
    table = pd.read_csv(result_dir / "eligibility.csv")
    if set(table["series_key"]) != set(kind_of):
        raise ValueError(f"{result_dir}/eligibility.csv and {cohort}/ground_truth.json list different series "
                         "(another cohort, or another secret?)")
    valid = table["cluster"].to_numpy() != eligibility.INVALID
    kinds = table["series_key"].map(kind_of).to_numpy()
    report = {"detection": detection(~table["eligible"].to_numpy()[valid], kinds[valid] != "", kinds[valid])}

    summary = json.loads((result_dir / "summary.json").read_text())
    settings = dict(summary["config"])
    if settings.get("schema_file") is True and not schema_file:
        raise InputError(f"{result_dir} was made with a cohort schema file: give it (--schema_file) to read the "
                         "same table again")
    config = ml_collections.ConfigDict({**settings, "schema_file": schema_file})
    features, ages = eligibility.usable_features(eligibility.read_table(cohort, config), config)
    first_eligible = table["eligible"].to_numpy()[valid]
    first_cluster = table["cluster"].to_numpy()[valid]
    runs = []
    for seed in seeds:
        config.seed = seed
        other = normal_spines.find_normal_spines(features.to_numpy(np.float32), ages, config,
                                                   list(features.columns))
        runs.append({"seed": seed, "flip_share": float((first_eligible != other.eligible).mean()),
                     "jaccard_eligible": jaccard(first_eligible, other.eligible),
                     "adjusted_rand": float(adjusted_rand_score(first_cluster, other.cluster)),
                     "detection": detection(~other.eligible, kinds[valid] != "", kinds[valid])})
    report["stability"] = runs
    output_folder.add_file(result_dir, "truth_check.json", json.dumps(report, indent=1).encode())
    return report


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_string("cohort", None, "Synthetic cohort folder (with ground_truth.json).")
    flags.DEFINE_string("eligibility", None, "Folder written by data_prep.eligibility.")
    flags.DEFINE_list("seeds", ["1", "2"], "Further seeds for the stability check.")
    flags.DEFINE_string("secret_file", None, "Secret used by data_prep.eligibility (else $SPINEJAX_SECRET).")
    flags.DEFINE_string("schema_file", "", "The cohort schema file the eligibility run was given, if any.")


def main(argv: list[str]) -> None:
    del argv
    report = check(Path(FLAGS.cohort), Path(FLAGS.eligibility), pseudonym.load_secret(FLAGS.secret_file),
                   [int(s) for s in FLAGS.seeds], FLAGS.schema_file)
    d = report["detection"]
    print(f"planted abnormal spines: precision {d['precision']:.2f} (base rate {d['base_rate']:.2f}), "
          f"recall {d['recall']:.2f}; normal spines marked ineligible: {d['ineligible_share_of_normal']:.1%}")
    for run in report["stability"]:
        print(f"seed {run['seed']}: {run['flip_share']:.2%} of people change eligibility; Jaccard of eligible sets "
              f"{run['jaccard_eligible']:.3f}, adjusted Rand {run['adjusted_rand']:.3f}")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
