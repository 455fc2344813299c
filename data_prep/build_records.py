"""Command line of the records stage (data_prep.records.build_records): a cohort folder to ArrayRecord shards.

    python -m data_prep.build_records --input=COHORT_DIR --out=RECORDS_DIR [--config=configs/records.py]
        [--config.workers=2 ...] [--config.schema_file=PATH] [--secret_file=PATH]
"""

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from configs import records as records_config
from data_prep.records.build_records import build
from spinejax.cohort import pseudonym
from spinejax.errors import one_line_errors
from spinejax.scans import walk

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_string("input", None, "Cohort folder (dicom/, nifti/, masks/, reports table, cohort_schema.yaml).")
    flags.DEFINE_string("out", None, "Records folder to write.")
    flags.DEFINE_string("secret_file", None, "File holding the secret for keyed hashes (else $SPINEJAX_SECRET).")
    config_flags.DEFINE_config_file("config", records_config.__file__, "Records config (configs/records.py[:paper]).")


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.input or not FLAGS.out:
        raise app.UsageError("--input=COHORT_DIR and --out=RECORDS_DIR are required")
    manifest = build(Path(FLAGS.input), Path(FLAGS.out), FLAGS.config, pseudonym.load_secret(FLAGS.secret_file))
    c = manifest["counts"]
    if manifest["skipped"]:
        print(f"{FLAGS.out}: records already up to date (inputs, reports, schema, plan, secret and code unchanged)")
    elif manifest["announce"]:
        print(manifest["announce"])
    print(f"{c['inputs']} inputs: {c['processed']} processed, {c['failed']} failed; {c['records']} records, "
          f"{c['region_failures']} region failures; {manifest['table']}: {c['rows']} rows, {c['rows_used']} used, "
          f"{c['rows_rejected']} rejected; plan {manifest['plan_hash']} -> {FLAGS.out}")
    for o in manifest["outcomes"]:  # paths go to the operator's console, not to outputs
        print(f"failed: {walk.printable(o['where'])} ({o['kind']}{', ' + o['region'] if o['region'] else ''}): "
              f"[{o['code']}] {o['message']}")
    for r in manifest["rejections"]:
        print(f"rejected: {manifest['table']} line {r['line']}: [{r['code']}]")
    if manifest["ignored_columns"]:  # names on the console only: a header may hold anything
        names = walk.printable(", ".join(manifest["ignored_columns"]))
        print(f"{len(manifest['ignored_columns'])} column(s) of {manifest['table']} not named by "
              f"{manifest['schema_source']}, not read: {names}")
    for warning in manifest["warnings"]:
        print(f"warning: {warning}")
    if c["failed"] or c["region_failures"] or c["rows_rejected"]:
        print(f"reasons, keyed: {FLAGS.out}/failures.csv and {FLAGS.out}/rejections.csv")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
