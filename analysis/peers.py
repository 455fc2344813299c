"""The CNN against predictors that never see the image, on the same people, with paired bootstrap CIs.

Peers, each fitted on exactly the training series the CNN was trained on (the run's own selection:
split, eligibility, data fraction; spinejax.input_pipeline.select):
    training_mean     the mean training age, predicted for everyone (what an MAE must beat to mean anything)
    report_ridge      ridge regression on the graded report alone (the records' reports.csv pathology grades,
                      one column per condition and level; the penalty chosen by leave-one-out on the training set)
    report_boosting   gradient boosting with the absolute-error loss on the same grades
Each is scored on the records the CNN predicted (validation, test, and both pooled; every record, and the
eligible ones when the run has an eligibility table). The CIs come from a subject-level paired bootstrap:
people are resampled with all their series, and the same resample scores every model, so the CI of a
difference keeps the pairing. `minus_cnn` > 0 means the CNN's MAE is lower.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV

from spinejax import input_pipeline
from spinejax import workdir as workdir_format
from spinejax.cohort import schema as cohort_schema
from spinejax.errors import InputError

PEERS = ("training_mean", "report_ridge", "report_boosting")
EVALUATED = {"validation": ("validation",), "test": ("test",), "validation+test": ("validation", "test")}


def grade_columns(reports: pd.DataFrame, conditions: list[str]) -> list[str]:
    """The pathology grade columns of a records reports.csv: `<condition>__<level>` of declared conditions."""
    return [c for c in reports.columns if "__" in c and c.split("__", 1)[0] in set(conditions)]


def fit_readers(train_x: np.ndarray, train_age: np.ndarray, seed: int = 0) -> dict:
    """The two age readers of a feature table, fitted: {'ridge', 'boosting'} -> function [n, features] float ->
    [n] predicted ages (years). Ridge with its penalty chosen by leave-one-out; gradient boosting with the
    absolute-error loss. analysis.anatomy_ceiling fits the same two on the drawn anatomy."""
    ridge = RidgeCV(alphas=np.logspace(-2, 4, 25)).fit(train_x, train_age)
    boosting = HistGradientBoostingRegressor(loss="absolute_error", learning_rate=0.05, max_iter=300,
                                             min_samples_leaf=10, random_state=seed).fit(train_x, train_age)
    return {"ridge": ridge.predict, "boosting": boosting.predict}


def fit_peers(train_x: np.ndarray, train_age: np.ndarray, seed: int = 0) -> dict:
    """Fitted peers: name -> function [n, features] float grades -> [n] predicted ages (years)."""
    mean_age = float(np.mean(train_age))
    readers = fit_readers(train_x, train_age, seed)
    return {"training_mean": lambda x: np.full(len(x), mean_age), "report_ridge": readers["ridge"],
            "report_boosting": readers["boosting"]}


def paired_bootstrap(errors: dict[str, np.ndarray], subjects: np.ndarray, reference: str, n_boot: int = 2000,
                     seed: int = 0) -> dict[str, dict]:
    """MAE of each model and its difference from `reference`, with percentile 95% CIs over subjects.

    errors: model -> [n] absolute errors (years) of the same n records; subjects: [n] subject ids (a person's
    records are resampled together). Returns model -> {mae, mae_ci, minus_reference, minus_reference_ci}.
    """
    codes, subject_of = np.unique(subjects, return_inverse=True)
    counts = np.bincount(subject_of, minlength=len(codes)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(codes), np.full(len(codes), 1 / len(codes)), size=n_boot).astype(float)
    n_drawn = draws @ counts  # [n_boot] records in each resample
    boot = {m: draws @ np.bincount(subject_of, weights=e, minlength=len(codes)) / n_drawn for m, e in errors.items()}
    out = {}
    for model, e in errors.items():
        difference = boot[model] - boot[reference]
        out[model] = {"mae": float(np.mean(e)), "mae_ci": np.percentile(boot[model], [2.5, 97.5]).tolist(),
                      "minus_reference": float(np.mean(e) - np.mean(errors[reference])),
                      "minus_reference_ci": np.percentile(difference, [2.5, 97.5]).tolist()}
    return out


def run_inputs(workdir) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What a trained run's peers are fitted and scored on: (its training selection's rows, the report grades of
    its records indexed by series_key [series, grade columns] float, its validation and test predictions)."""
    workdir = Path(workdir)
    config, run, _ = workdir_format.load_run(workdir)  # a folder that is not a workdir: one clear line
    data = config.data
    missing = [s for s in ("validation", "test") if not (workdir / "predictions" / f"{s}.csv").is_file()]
    if missing:
        raise InputError(f"{workdir}/predictions has no {' or '.join(missing)}.csv; run spinejax.evaluate first")
    records_dir = Path(data["records_dir"])
    declarations = cohort_schema.read_declarations(records_dir / "cohort_schema.json")
    reports = pd.read_csv(records_dir / "reports.csv", dtype={"series_key": str, "subject_key": str},
                          keep_default_na=False, na_values=[""], low_memory=False)
    columns = grade_columns(reports, declarations["conditions"])
    if not columns:
        raise InputError(f"{records_dir / 'reports.csv'}: no pathology grades, so no report-only peer")
    grades = reports.set_index("series_key")[columns].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    train = input_pipeline.select(str(records_dir), run["region"], "train", plan_hash=run["plan_hash"],
                                  eligibility_csv=data.get("eligibility_csv", ""),
                                  eligible_only=data.get("eligible_only", False), fraction=data.get("fraction", 1.0),
                                  subset_seed=data.get("subset_seed", 0)).rows
    predictions = pd.concat([pd.read_csv(workdir / "predictions" / f"{s}.csv", dtype={"series_key": str,
                             "subject_key": str, "eligible": str}, keep_default_na=False)
                             for s in ("validation", "test")], ignore_index=True)
    return train, grades, predictions


def peer_table(workdir, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per evaluated set, population and model (module docstring), the CNN's own rows included."""
    train, grades, predictions = run_inputs(workdir)
    peers = fit_peers(grades.loc[train["series_key"]].to_numpy(), train["age"].astype(float).to_numpy(), seed)
    rows = []
    for evaluated, splits in EVALUATED.items():
        chosen = predictions[predictions["split"].isin(splits)]
        populations = {"all": chosen}
        if chosen["eligible"].isin(["True", "False"]).all():
            populations["eligible"] = chosen[chosen["eligible"] == "True"]
        for population, table in populations.items():
            if table["subject_key"].nunique() < 2:
                continue
            age = table["age"].astype(float).to_numpy()
            x = grades.loc[table["series_key"]].to_numpy()
            errors = {"cnn": np.abs(table["predicted_age"].astype(float).to_numpy() - age),
                      **{name: np.abs(peer(x) - age) for name, peer in peers.items()}}
            scored = paired_bootstrap(errors, table["subject_key"].to_numpy(), "cnn", n_boot, seed)
            for model, s in scored.items():
                rows.append({"evaluated": evaluated, "population": population, "model": model, "series": len(table),
                             "subjects": table["subject_key"].nunique(), "mae": s["mae"], "mae_ci_low": s["mae_ci"][0],
                             "mae_ci_high": s["mae_ci"][1], "minus_cnn": s["minus_reference"],
                             "minus_cnn_ci_low": s["minus_reference_ci"][0],
                             "minus_cnn_ci_high": s["minus_reference_ci"][1],
                             "cnn_significantly": ("" if model == "cnn" else "better" if s["minus_reference_ci"][0] > 0
                                                   else "worse" if s["minus_reference_ci"][1] < 0 else "no different")})
    frame = pd.DataFrame(rows)
    frame.insert(3, "training_series", len(train))
    return frame
