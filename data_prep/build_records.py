"""Command line of the records stage (data_prep.records.build_records): a cohort folder to ArrayRecord shards.

    python -m data_prep.build_records --input=COHORT_DIR --out=RECORDS_DIR [--config=configs/records.py]
        [--config.workers=2 ...] [--config.schema_file=PATH] [--secret_file=PATH]
        [--engine=beam [-- BEAM_PIPELINE_OPTIONS]]   (data_prep.records.beam_engine)
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
    flags.DEFINE_enum("engine", "local", ["local", "beam"], "Where the per-series work runs: this machine's worker "
                      "pool, or Apache Beam (options after `--`; default the DirectRunner, multi-processing).")


def main(argv: list[str]) -> None:
    if not FLAGS.input or not FLAGS.out:
        raise app.UsageError("--input=COHORT_DIR and --out=RECORDS_DIR are required")
    secret = pseudonym.load_secret(FLAGS.secret_file)
    engine = None
    if FLAGS.engine == "beam":
        from data_prep.records import beam_engine  # only here: Apache Beam is an optional extra

        engine = beam_engine.BeamEngine(beam_engine.pipeline_options(argv[1:], FLAGS.config.workers),
                                        FLAGS.secret_file)
    elif argv[1:]:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: Beam pipeline options need --engine=beam")
    manifest = build(Path(FLAGS.input), Path(FLAGS.out), FLAGS.config, secret, engine=engine)
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
