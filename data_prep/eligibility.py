"""Command line of normal-spine eligibility (data_prep.normal.eligibility): which spines train the model.

    python -m data_prep.eligibility --input=COHORT_DIR --out=DIR [--config=configs/eligibility.py]
        [--config.umap.n_neighbors=30 ...] [--config.schema_file=PATH] [--secret_file=PATH]
"""

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from configs import eligibility as eligibility_config
from data_prep.normal.eligibility import run
from spinejax.cohort import pseudonym
from spinejax.errors import one_line_errors
from spinejax.scans import walk

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_string("input", None, "Cohort folder holding the reports table (and cohort_schema.yaml).")
    flags.DEFINE_string("out", None, "Output folder.")
    flags.DEFINE_string("secret_file", None, "File holding the secret for keyed hashes (else $SPINEJAX_SECRET).")
    config_flags.DEFINE_config_file("config", eligibility_config.__file__, "Eligibility config file.")


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.input or not FLAGS.out:
        raise app.UsageError("--input=COHORT_DIR and --out=DIR are required")
    summary = run(Path(FLAGS.input), Path(FLAGS.out), FLAGS.config, pseudonym.load_secret(FLAGS.secret_file))
    c = summary["counts"]
    if summary["skipped"]:
        print(f"{FLAGS.out}: eligibility already up to date for this reports table, config and secret")
    print(f"{c['rows']} series: {c['eligible']} eligible, {c['ineligible_valid']} ineligible, "
          f"{c['invalid']} invalid rows; {c['clusters']} clusters ({c['common_clusters']} common), "
          f"{c['noise']} noise; {summary['seconds']:.1f} s -> {FLAGS.out}/eligibility.csv")
    if summary["ignored_columns"]:  # names on the console only: a header may hold anything
        names = walk.printable(", ".join(summary["ignored_columns"]))
        print(f"{len(summary['ignored_columns'])} column(s) of the reports table not named by its schema, not read: "
              f"{names}")
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}")
    for code, n in c["invalid_by_code"].items():
        print(f"invalid rows: {n} [{code}] (eligibility.csv says which)")
    if c["small_cohort_fallback"]:
        print(f"WARNING: no common cluster among {c['rows'] - c['invalid']} valid rows: the cohort is too small for "
              "the paper's rule (it was measured to work from a few thousand people), so every valid row is "
              "eligible (config.small_cohort_policy='all_valid')")
    elif c["eligible"] == 0:
        print("WARNING: no one is eligible: training with data.eligible_only=True will have no records; set "
              "--config.data.eligible_only=False or --config.small_cohort_policy=all_valid")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
