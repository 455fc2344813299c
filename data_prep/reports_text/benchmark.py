"""Measures the free-text reader against the truth: accuracy per condition and style, negations, speed, and
eligibility run on the extracted table against the true one.

    python -m data_prep.reports_text.benchmark [--subjects=17394] [--seed=0] [--work=DIR] [--eligibility]

Draws a reports-only synthetic cohort (its graded table is the truth), writes every row's report in each
style of data_prep.phantom.report_text (three the reader was developed on, two held out), reads them back,
and prints per style: F1 of "present at this level", quadratic-weighted kappa of the grade, the share of
pairs stated absent or hedged that were graded anyway, and reports per second; then the cohort's own file
(each site in its style) through the whole `report_features` stage. With --eligibility, normal-spine
eligibility runs on the true and on the extracted table, and both are scored against the planted
non-age-related spines (analysis.eligibility_truth).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from absl import app, flags

from analysis import eligibility_truth
from configs import eligibility as eligibility_config
from data_prep.normal import eligibility
from data_prep.phantom import findings, report_text, synthesize
from data_prep.reports_text import agreement, report_features, vocabulary

FLAGS = flags.FLAGS
SECRET = b"benchmark-secret-not-for-real-data"


def define_flags() -> None:
    flags.DEFINE_integer("subjects", 17394, "People in the benchmark cohort (the paper had 17,394).")
    flags.DEFINE_integer("seed", 0, "Cohort seed.")
    flags.DEFINE_string("work", None, "Folder for the cohort and outputs (default: a temporary folder).")
    flags.DEFINE_integer("workers", 0, "Reader processes (0: all cores).")
    flags.DEFINE_bool("eligibility", False, "Also run eligibility on the true and the extracted tables.")
    flags.DEFINE_list("eligibility_seeds", ["1", "2"], "Further UMAP seeds eligibility is scored with on both "
                      "tables (its own seed-to-seed spread, to judge their difference by)")


def styled_reports(table: pd.DataFrame, style: str, seed: int) -> tuple[list[str], list[set], list[set]]:
    """Every row's report in `style`, with the columns each states as absent and the columns it hedges."""
    texts, negated, hedged = [], [], []
    columns = findings.feature_columns()
    values = table[columns].to_numpy(np.int64)
    for i in range(len(table)):
        rng = np.random.default_rng([seed, i])
        header = report_text.draw_header(rng, table["sex"].iat[i], float(table["age"].iat[i]))
        text, neg, hedge = report_text.write_with_statements(style, dict(zip(columns, values[i].tolist())), rng,
                                                             header)
        texts.append(text)
        negated.append(neg)
        hedged.append(hedge)
    return texts, negated, hedged


def read_all(texts: list[str], workers: int | None) -> tuple[pd.DataFrame, float]:
    """(extracted grades [reports, columns], seconds) with the stage's own parallel reader."""
    results, seconds = report_features.read_reports(texts, vocabulary.DEFAULT_FILE, workers)
    columns = findings.feature_columns()
    return pd.DataFrame(report_features.grade_array(results, columns), columns=columns), seconds


def statement_errors(grades: pd.DataFrame, stated: list[set]) -> tuple[int, int]:
    """(pairs stated absent (or hedged) that were graded present, pairs so stated)."""
    position = {column: k for k, column in enumerate(grades.columns)}
    present = grades.to_numpy() > 0
    wrong = sum(int(present[i, [position[c] for c in columns]].sum()) for i, columns in enumerate(stated) if columns)
    return wrong, sum(len(columns) for columns in stated)


def score_eligibility(cohort: Path, out: Path, seeds: list[int]) -> list[dict]:
    """Eligibility's detection of the planted non-age-related spines (precision, recall, normal share lost),
    with the config's UMAP seed and then each of `seeds`."""
    eligibility.run(cohort, out, eligibility_config.get_config(), SECRET)
    report = eligibility_truth.check(cohort, out, SECRET, seeds)
    return [report["detection"]] + [run["detection"] for run in report["stability"]]


def main(argv: list[str]) -> None:
    del argv
    work = Path(FLAGS.work or tempfile.mkdtemp(prefix="spinejax-reports-text-"))
    cohort = work / "cohort"
    synthesize.synthesize(cohort, synthesize.CohortSpec(subjects=FLAGS.subjects, seed=FLAGS.seed, reports_only=True),
                          progress=False)
    truth = pd.read_csv(cohort / "reports.csv", dtype={"sex": str})
    columns = findings.feature_columns()
    found = int((truth[columns] > 0).sum().sum())
    print(f"{len(truth)} reports of {FLAGS.subjects} people (seed {FLAGS.seed}); {found} true findings; held-out "
          f"styles: {', '.join(report_text.HELD_OUT)}")
    rows = []
    for style in report_text.STYLES:
        texts, negated, hedged = styled_reports(truth, style, FLAGS.seed)
        grades, seconds = read_all(texts, FLAGS.workers or None)
        table = agreement.by_condition(truth[columns].reset_index(drop=True), grades)
        neg_wrong, neg_total = statement_errors(grades, negated)
        hedge_wrong, hedge_total = statement_errors(grades, hedged)
        worst = table.drop(index="all")["f1"].idxmin()
        rows.append({"style": style + (" (held out)" if style in report_text.HELD_OUT else ""),
                     "f1": table.loc["all", "f1"], "precision": table.loc["all", "precision"],
                     "recall": table.loc["all", "recall"], "kappa": table.loc["all", "weighted_kappa"],
                     "worst condition F1": f"{worst} {table.loc[worst, 'f1']:.3f}",
                     "negated graded": f"{neg_wrong}/{neg_total}", "hedged graded": f"{hedge_wrong}/{hedge_total}",
                     "reports/s": len(texts) / seconds})
        table.to_csv(work / f"agreement_{style}.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(pd.DataFrame(rows).to_string(index=False))
    summary = report_features.run(cohort / "reports_text.csv", work / "graded", workers=FLAGS.workers or None,
                                  progress=False)
    print(f"the cohort's own reports_text.csv through report_features: {summary['counts']['graded']} reports, "
          f"{summary['reports_per_second']:.0f} reports/s in the reader ({summary['seconds']:.1f} s)")
    graded = pd.read_csv(work / "graded" / "reports.csv", dtype={"sex": str})
    mixed = agreement.by_condition(truth[columns], graded[columns])
    print(f"  F1 {mixed.loc['all', 'f1']:.3f}, weighted kappa {mixed.loc['all', 'weighted_kappa']:.3f}")
    if FLAGS.eligibility:
        extracted = work / "cohort_from_text"
        extracted.mkdir(exist_ok=True)
        graded.to_csv(extracted / "reports.csv", index=False)
        for name in ("cohort_schema.yaml", "ground_truth.json"):
            (extracted / name).write_bytes((cohort / name).read_bytes())
        seeds = [int(s) for s in FLAGS.eligibility_seeds]
        results = {"true table": score_eligibility(cohort, work / "eligibility_true", seeds),
                   "extracted table": score_eligibility(extracted, work / "eligibility_extracted", seeds)}
        for name, runs in results.items():
            for seed, d in zip(["config"] + seeds, runs):
                print(f"eligibility on the {name}, UMAP seed {seed}: precision {d['precision']:.3f}, recall "
                      f"{d['recall']:.3f}, normal spines made ineligible {d['ineligible_share_of_normal']:.3f}; recall "
                      "by kind " + json.dumps({k: round(v, 3) for k, v in d["recall_by_kind"].items()}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
