"""Command line of free-text reports to the graded pathology table (data_prep.reports_text.report_features).

    python -m data_prep.report_features --input=REPORTS_TEXT --out=DIR [--schema=cohort_schema.yaml]
        [--vocabulary=configs/report_vocabulary.yaml] [--text_column=report_text] [--workers=N] [--review=50]
"""

from pathlib import Path

from absl import app, flags

from data_prep.reports_text import report_features, vocabulary
from spinejax.errors import one_line_errors

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("input", None, "CSV table of reports (one row per study) or a folder of <id>.txt files.")
    flags.DEFINE_string("out", None, "Output folder: reports.csv, provenance.csv, failures.csv, summary.json.")
    flags.DEFINE_string("schema", "", "Cohort schema naming the grade columns (default: cohort_schema.yaml next "
                                      "to the input, else spinejax's names).")
    flags.DEFINE_string("vocabulary", str(vocabulary.DEFAULT_FILE), "The site's report vocabulary (YAML or JSON).")
    flags.DEFINE_string("text_column", "report_text", "The column holding each report's text.")
    flags.DEFINE_integer("workers", 0, "Processes (0: all cores).")
    flags.DEFINE_integer("review", 50, "Reports drawn at random into review.html, beside their grades.")


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.input or not FLAGS.out:
        raise app.UsageError("--input=REPORTS_TEXT and --out=DIR are required")
    summary = report_features.run(Path(FLAGS.input), Path(FLAGS.out), Path(FLAGS.vocabulary), FLAGS.schema,
                                  FLAGS.text_column, FLAGS.workers or None, review=FLAGS.review)
    c = summary["counts"]
    if summary["skipped"]:
        print(f"{FLAGS.out}: already up to date for this input, vocabulary and schema")
    print(f"{c['rows']} reports: {c['graded']} graded, {c['failed']} failed (failures.csv); {c['findings']} "
          f"graded findings in {c['reports_with_findings']} reports; {summary['reports_per_second']:.0f} reports/s "
          f"-> {FLAGS.out}/reports.csv")
    aside = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in summary["set_aside"].items() if n)
    if aside:
        print(f"condition phrases not graded: {aside}")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
