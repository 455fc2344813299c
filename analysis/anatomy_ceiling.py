"""How far an image model could get on a synthetic cohort: the CNN against readers of what the phantoms drew.

    python -m analysis.anatomy_ceiling --workdirs=W1[,W2,...] --cohort=COHORT_DIR --secret_file=KEY

Synthetic cohorts only (their ground_truth.json). Beside the report readers of analysis.peers, each fitted on the
training series the run(s) trained on:
    anatomy_ridge, anatomy_boosting   the report's two readers (peers.fit_readers) on the anatomy each series was
                                      drawn with (degeneration, fracture and slip per level, mean disc height): a
                                      perfect reader of that anatomy, what an anatomy-reading model of this
                                      training size can reach at best
    biological_age                    a line in the series' biological age, the hidden truth the anatomy is drawn
                                      from (no image shows it whole)
and each run's CNN, plus `cnn_mean`, the mean of the runs' predictions, when several runs (seeds) share one
selection of records. All are scored on the validation and test series pooled, and compared with gradient boosting
on the report (`better` = its MAE minus the model's) by a paired bootstrap over people (analysis.peers). Writes
the table to the first workdir's analysis/anatomy_ceiling.csv (as analysis.report writes its tables there):
model names and numbers only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from absl import app, flags
from sklearn.linear_model import LinearRegression

from analysis import peers
from spinejax.cohort import pseudonym
from spinejax.errors import InputError, one_line_errors

FLAGS = flags.FLAGS
REFERENCE = "report_boosting"


def drawn_anatomy(truth: dict, secret: bytes) -> tuple[pd.DataFrame, pd.Series]:
    """(drawn anatomy [series, 70] float indexed by series_key: degeneration, fracture and listhesis at each of the
    23 levels and the mean disc height in mm; biological age in years, same index) of a cohort's ground truth."""
    keys, features, bio = [], [], []
    for s in truth["series"]:
        keys.append(pseudonym.series_key(s["series_id"], secret))
        features.append([*s["degeneration"], *s["fracture"], *s["listhesis"], s["mean_disc_height_mm"]])
        bio.append(s["bio_age"])
    return pd.DataFrame(features, index=keys, dtype=float), pd.Series(bio, index=keys, dtype=float)


def ceiling_table(workdirs: list, truth: dict, secret: bytes, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per model (module docstring): series, subjects, mae with its 95% CI, and `better` (report boosting's
    MAE minus the model's, > 0 when the model is better) with its CI and whether the CI excludes 0."""
    if not workdirs:
        raise InputError("no workdir given")
    runs = [peers.run_inputs(w) for w in workdirs]
    train, grades, predictions = runs[0]
    for w, (other_train, _, other_predictions) in zip(workdirs[1:], runs[1:]):
        if (sorted(other_train["series_key"]) != sorted(train["series_key"])
                or sorted(other_predictions["series_key"]) != sorted(predictions["series_key"])):
            raise InputError(f"{w} trained or predicted on other series than {workdirs[0]}; give runs of one "
                             "selection (seeds of one setting)")
    anatomy, bio_age = drawn_anatomy(truth, secret)
    needed = set(train["series_key"]) | set(predictions["series_key"])
    missing = needed - set(anatomy.index)
    if missing:
        raise InputError(f"{len(missing)} of the runs' {len(needed)} series are not in the ground truth: another "
                         "cohort, or another secret than the records were keyed with")
    age = train["age"].astype(float).to_numpy()
    evaluated, evaluated_age = predictions["series_key"], predictions["age"].astype(float).to_numpy()
    predicted = {}
    for source, table in (("report", grades), ("anatomy", anatomy)):  # the same two readers on each
        readers = peers.fit_readers(table.loc[train["series_key"]].to_numpy(), age, seed)
        for name, reader in readers.items():
            predicted[f"{source}_{name}"] = reader(table.loc[evaluated].to_numpy())
    predicted["biological_age"] = LinearRegression().fit(bio_age.loc[train["series_key"]].to_numpy()[:, None],
                                                         age).predict(bio_age.loc[evaluated].to_numpy()[:, None])
    cnn = [run[2].set_index("series_key").loc[evaluated, "predicted_age"].astype(float).to_numpy() for run in runs]
    for i, p in enumerate(cnn):
        predicted[f"cnn_{i}" if len(cnn) > 1 else "cnn"] = p
    if len(cnn) > 1:
        predicted["cnn_mean"] = np.mean(cnn, axis=0)
    errors = {name: np.abs(p - evaluated_age) for name, p in predicted.items()}
    scored = peers.paired_bootstrap(errors, predictions["subject_key"].to_numpy(), REFERENCE, n_boot, seed)
    rows = []
    for name, s in scored.items():
        better, (low, high) = -s["minus_reference"], (-s["minus_reference_ci"][1], -s["minus_reference_ci"][0])
        rows.append({"model": name, "series": len(predictions), "subjects": predictions["subject_key"].nunique(),
                     "training_series": len(train), "mae": s["mae"], "mae_ci_low": s["mae_ci"][0],
                     "mae_ci_high": s["mae_ci"][1], "better": better, "better_ci_low": low, "better_ci_high": high,
                     "significantly": "" if name == REFERENCE else "better" if low > 0 else "worse" if high < 0
                     else "no different"})
    return pd.DataFrame(rows)


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_list("workdirs", None, "Trained and evaluated runs (spinejax.evaluate) of one selection of records.")
    flags.DEFINE_string("cohort", None, "The synthetic cohort folder the records were built from (ground_truth.json).")
    flags.DEFINE_string("secret_file", None, "The key the records were built with (else $SPINEJAX_SECRET).")


def main(argv: list[str]) -> None:
    del argv
    truth_path = Path(FLAGS.cohort) / "ground_truth.json"
    if not truth_path.is_file():
        raise InputError(f"{truth_path}: missing; the anatomy ceiling needs a synthetic cohort's hidden truth")
    truth = json.loads(truth_path.read_text())
    table = ceiling_table(FLAGS.workdirs, truth, pseudonym.load_secret(FLAGS.secret_file))
    out = Path(FLAGS.workdirs[0]) / "analysis" / "anatomy_ceiling.csv"
    out.parent.mkdir(exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    table.to_csv(partial, index=False)
    os.replace(partial, out)  # whole or not at all
    print(f"validation and test pooled: {table['series'].iloc[0]} series of {table['subjects'].iloc[0]} people; "
          f"models fitted on {table['training_series'].iloc[0]} training series")
    for _, r in table.iterrows():
        print(f"{r['model']:18s} MAE {r['mae']:.2f} ({r['mae_ci_low']:.2f} to {r['mae_ci_high']:.2f})"
              + ("" if r["model"] == REFERENCE else f"; better than {REFERENCE} by {r['better']:+.2f} "
                 f"({r['better_ci_low']:+.2f} to {r['better_ci_high']:+.2f}) {r['significantly']}"))
    print(f"-> {out}")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
