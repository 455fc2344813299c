"""The graded table read from the synthetic cohort's free-text reports, against the true grades.

    python -m analysis.report_text_truth --cohort=COHORT_DIR --graded=REPORT_FEATURES_DIR
        [--workdir=TRAIN_DIR --secret_file=KEY]

The synthetic cohort's reports.csv holds the true grades and ground_truth.json each report's style (site
template; two are held out from what the reader was developed on). Adds truth_check.csv to the graded folder:
per condition and per group of styles (development, held out, all), cells, true findings, precision, recall,
F1 of "present at this level" and the quadratic-weighted kappa of the grade. With a trained, analysed run
whose records were built from the graded table (--workdir), also associations_check.csv: each pathology
term's spine-age-gap association estimated from the table read from the text and from the true grades,
and how far apart they are in standard errors.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
from absl import app, flags

from analysis import associations, report
from data_prep.reports_text import agreement
from spinejax import output_folder
from spinejax.cohort import pseudonym
from spinejax.errors import InputError, one_line_errors

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("cohort", None, "The synthetic cohort (reports.csv, ground_truth.json).")
    flags.DEFINE_string("graded", None, "The report_features output folder read from its reports_text.csv.")
    flags.DEFINE_string("workdir", None, "A training workdir analysed by analysis.report on records built from "
                                         "the graded table: compare its associations with the true grades'.")
    flags.DEFINE_string("secret_file", None, "The records' secret (to key the true table like the records).")


def compare_associations(workdir: Path, cohort: Path, secret: bytes) -> pd.DataFrame:
    """Pathology terms' associations with the spine age gap, from the graded (text) and the true table."""
    results = report.association_data(workdir, pooled=True)  # the report stage's inputs; nothing rewritten
    joined, exposures = results["joined"], results["exposures"]
    truth = pd.read_csv(cohort / "reports.csv", dtype={"series_id": str})
    truth.index = truth["series_id"].map(lambda s: pseudonym.series_key(s, secret))
    columns = [c for c in truth.columns if "__" in c]
    true_joined = joined.copy()
    true_joined[columns] = truth.loc[joined["series_key"], columns].to_numpy()
    covariates = results["covariates"]
    text = associations.associate(joined, associations.factor_table(joined, exposures), exposures, covariates)
    true = associations.associate(true_joined, associations.factor_table(true_joined, exposures), exposures,
                                  covariates)
    keys = ["factor", "term"]
    both = text[text["kind"] == "condition"].merge(true[true["kind"] == "condition"], on=keys,
                                                   suffixes=("_text", "_true"))
    both["difference_in_se"] = (both["effect_years_text"] - both["effect_years_true"]).abs() / both["se_true"]
    return both[keys + ["n_with_text", "n_with_true", "effect_years_text", "effect_years_true", "se_text",
                        "se_true", "difference_in_se"]]


def check(cohort: Path, graded: Path) -> pd.DataFrame:
    truth = pd.read_csv(cohort / "reports.csv", dtype={"series_id": str})
    read = pd.read_csv(graded / "reports.csv", dtype={"series_id": str})
    columns = [c for c in truth.columns if "__" in c]
    if set(read["series_id"]) != set(truth["series_id"]):
        raise InputError(f"{graded}/reports.csv and {cohort}/reports.csv hold different series")
    read = read.set_index("series_id").loc[truth["series_id"], columns].reset_index(drop=True)
    hidden = json.loads((cohort / "ground_truth.json").read_text())
    style = {s["series_id"]: s.get("report_style", "") for s in hidden["series"]}
    held_out = truth["series_id"].map(style).isin(hidden["report_styles"]["held_out"]).to_numpy()
    tables = []
    for group, rows in (("all", slice(None)), ("development styles", ~held_out), ("held-out styles", held_out)):
        table = agreement.by_condition(truth.loc[rows, columns].reset_index(drop=True),
                                       read.loc[rows].reset_index(drop=True))
        tables.append(table.assign(styles=group, reports=int(pd.Series(held_out)[rows].size)))
    return pd.concat(tables).reset_index()


def main(argv: list[str]) -> None:
    del argv
    table = check(Path(FLAGS.cohort), Path(FLAGS.graded))
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.4f")
    output_folder.add_file(Path(FLAGS.graded), "truth_check.csv", buffer.getvalue().encode())
    for _, row in table[table["condition"] == "all"].iterrows():
        print(f"{row['styles']} ({row['reports']} reports): F1 {row['f1']:.3f} (precision {row['precision']:.3f}, "
              f"recall {row['recall']:.3f}), weighted kappa {row['weighted_kappa']:.3f}")
    if FLAGS.workdir:
        both = compare_associations(Path(FLAGS.workdir), Path(FLAGS.cohort), pseudonym.load_secret(FLAGS.secret_file))
        buffer = io.StringIO()
        both.to_csv(buffer, index=False, float_format="%.4f")
        output_folder.add_file(Path(FLAGS.graded), "associations_check.csv", buffer.getvalue().encode())
        estimable = both.dropna(subset=["difference_in_se"])
        print(f"{len(estimable)} estimable pathology associations (of {len(both)}): the text's estimates are within "
              f"{estimable['difference_in_se'].max():.2f} standard errors of the true table's (median "
              f"{estimable['difference_in_se'].median():.2f})")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
