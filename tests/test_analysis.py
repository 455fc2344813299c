"""Bias correction and the SAG association analysis, against known truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import associations, peers, spine_age_gap
from data_prep.phantom import population, synthesize
from spinejax import bias_correction


def _regressed_to_the_mean(n=400, seed=0):
    """Ages and predictions that shrink towards 55 (slope 0.7), the usual bias of age models."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(25, 85, n)
    return age, 0.7 * age + 0.3 * 55 + rng.normal(0, 3, n)


@pytest.mark.parametrize("method", ["linear", "residual"])
def test_correction_removes_the_gap_age_correlation(method):
    age, predicted = _regressed_to_the_mean()
    before = np.corrcoef(predicted - age, age)[0, 1]
    coefficients = bias_correction.fit(method, age[:200], predicted[:200])  # fitted on one half...
    gap = bias_correction.spine_age_gap(coefficients, age[200:], predicted[200:])  # ...applied to the other
    assert before < -0.7
    assert abs(np.corrcoef(gap, age[200:])[0, 1]) < 0.1
    if method == "linear":
        assert coefficients["slope"] == pytest.approx(0.7, abs=0.03)
        assert coefficients["intercept"] == pytest.approx(16.5, abs=2)
    else:
        assert coefficients["slope"] == pytest.approx(-0.3, abs=0.03)


def test_no_correction_and_bad_fits():
    age, predicted = _regressed_to_the_mean()
    none = bias_correction.fit("none", age, predicted)
    np.testing.assert_array_equal(bias_correction.corrected_age(none, age, predicted), predicted)
    with pytest.raises(ValueError, match="unknown bias correction"):
        bias_correction.fit("quadratic", age, predicted)
    with pytest.raises(ValueError, match="barely follows age"):
        bias_correction.fit("linear", age, np.full_like(age, 50.0) + np.random.default_rng(1).normal(0, 1, age.size))


def test_correction_is_fitted_on_validation_only():
    age, predicted = _regressed_to_the_mean(300)
    table = pd.DataFrame({"split": ["validation"] * 150 + ["test"] * 150, "age": age, "predicted_age": predicted,
                          "eligible": ["True", "False"] * 150})
    coefficients, _ = spine_age_gap.correct(table, "linear", fit_on="all")
    changed = table.copy()
    changed.loc[changed.split == "test", "predicted_age"] += 20  # the test split cannot move the fit
    assert spine_age_gap.correct(changed, "linear", fit_on="all")[0] == coefficients
    eligible_only, _ = spine_age_gap.correct(table, "linear", fit_on="eligible")
    assert eligible_only["n"] == 75 and coefficients["n"] == 150


def test_too_few_validation_subjects_fall_back_to_no_correction_and_say_so():
    age, predicted = _regressed_to_the_mean(60)
    table = pd.DataFrame({"split": ["validation"] * 2 + ["test"] * 58, "age": age, "predicted_age": predicted,
                          "eligible": "True"})
    coefficients, corrected = spine_age_gap.correct(table, "linear")
    assert coefficients["method"] == "none" and coefficients["fallback_from"] == "linear"
    assert "at least 3" in coefficients["fallback_reason"]
    np.testing.assert_array_equal(corrected["sag"], corrected["predicted_age"] - corrected["age"])


ORACLE_SEEDS = (5, 6, 7, 8, 9, 10)


def _oracle_draw(out, seed: int) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """A reports-only synthetic cohort of 2000 people whose 'model' predicts the biological age exactly:
    (association table, planted effects, one series per subject)."""
    synthesize.synthesize(out, synthesize.CohortSpec(subjects=2000, seed=seed, reports_only=True), progress=False)
    truth = json.loads((out / "ground_truth.json").read_text())
    reports = pd.read_csv(out / "reports.csv", dtype={"series_id": str, "subject_id": str})
    reports = reports.rename(columns={"series_id": "series_key", "subject_id": "subject_key"}).copy()
    bio_age = {s["series_id"]: s["bio_age"] for s in truth["series"]}
    reports["sag"] = reports["series_key"].map(bio_age) - reports["age"]
    data = associations.one_series_per_subject(reports)
    exposures = {name: {"type": "yes_no"} for name in ("smoking", "physical_work", "coffee", "left_handed")}
    table = associations.associate(data, associations.factor_table(data, exposures), exposures)
    return table, truth["planted_effects_years"], data


@pytest.fixture(scope="module")
def oracle_draws(tmp_path_factory):
    """One oracle cohort per seed of ORACLE_SEEDS: statistical claims are checked over draws, not on one."""
    root = tmp_path_factory.mktemp("oracle")
    return [_oracle_draw(root / f"cohort{seed}", seed) for seed in ORACLE_SEEDS]


def test_planted_lifestyle_effects_are_recovered_and_null_factors_are_not_found(oracle_draws):
    covered = null_found = 0
    for table, planted, data in oracle_draws:
        assert data["subject_key"].is_unique and len(data) == 2000
        check = associations.against_planted(table, planted).set_index("factor")
        for factor in ("smoking", "physical_work"):  # about 9 SE from 0 at 2000 people: found on every draw
            assert planted[factor] > 0 and check.loc[factor, "right_sign"] and check.loc[factor, "q"] < 0.001
        for factor in ("coffee", "left_handed"):
            assert planted[factor] == 0
            null_found += bool(check.loc[factor, "null_passes_fdr"])
        covered += int(check["ci_covers_planted"].sum())
    # 95% CIs of 4 factors on 6 draws: 24 intervals, about 1.2 expected to miss; 5 or more misses has a chance
    # of 0.7% with correct intervals, while intervals half as wide as they should be miss about 8.
    assert covered >= 20, f"{covered} of 24 intervals cover the planted effect"
    assert null_found <= 2, f"a null factor passed FDR in {null_found} of 12 tests"


def test_age_related_conditions_go_with_an_older_looking_spine(oracle_draws):
    for table, _, _ in oracle_draws:
        rows = table.set_index("factor")
        for condition in ("disc_bulge", "disc_osteophyte", "canal_stenosis"):
            assert rows.loc[condition, "effect_years"] > 0 and rows.loc[condition, "q"] < 0.05, condition
        assert rows["q"].dropna().between(0, 1).all()
        # Factors nobody has are listed, with the reason, not dropped.
        untestable = table[table["effect_years"].isna()]
        assert (untestable["note"] != "").all() and (untestable["n_with"] < 2).all()
        assert len(table) == 4 + 9 * 4


def test_planted_effects_are_flags_and_a_misspelt_factor_is_an_error():
    assert population.parse_effects("smoking:5, coffee:-1") == (
        ("smoking", 5.0), ("physical_work", 0.0), ("coffee", -1.0), ("left_handed", 0.0))
    default = ",".join(f"{n}:{y:g}" for n, y in population.PopulationParams().lifestyle_effects)
    assert population.parse_effects(default) == population.PopulationParams().lifestyle_effects
    for text, why in (("smokng:3", "unknown factor 'smokng'"), ("smoking:3,smoking:2", "given twice"),
                      ("smoking", "not FACTOR:YEARS"), ("smoking:nan", "not FACTOR:YEARS"),
                      ("smoking:three", "not FACTOR:YEARS")):
        with pytest.raises(ValueError, match=why):
            population.parse_effects(text)


def test_a_table_without_pathology_grades_gives_exposures_only():
    reports = pd.DataFrame({"smoking": [0, 1, np.nan, 1], "age": [40.0, 50.0, 60.0, 70.0]})
    factors = associations.factor_table(reports, {"smoking": {"type": "yes_no"}})
    assert list(factors.columns) == ["smoking"] and factors["smoking"].isna().sum() == 1


def test_categorical_and_numeric_exposures_against_their_reference_with_a_covariate():
    # 1,500 people; SAG = 1.5 (former) or 3.0 (current smokers, against never) + 0.2 per pack-year (drawn apart
    # from smoking). BMI confounds: it raises SAG and goes with current smoking, so only the model adjusted for
    # it recovers the planted 3.0.
    rng = np.random.default_rng(3)
    n = 1500
    bmi = rng.normal(27, 4, n)
    smoking = np.where(rng.random(n) < 0.2 + 0.4 * (bmi > 30), "current", rng.choice(["never", "former"], n))
    smoking = np.where(rng.random(n) < 0.05, "", smoking)  # unanswered
    pack_years = rng.uniform(0, 40, n)
    age = rng.uniform(30, 80, n)
    effect = np.select([smoking == "former", smoking == "current"], [1.5, 3.0], 0.0)
    sag = effect + 0.2 * pack_years + 0.5 * (bmi - 27) + rng.normal(0, 2, n)
    data = pd.DataFrame({"sag": sag, "age": age, "sex": rng.choice(["F", "M"], n), "site": "A", "smoking": smoking,
                         "pack_years": pack_years, "bmi": bmi})
    exposures = {"smoking": {"type": "categorical", "levels": ["never", "former", "current"], "reference": "never"},
                 "pack_years": {"type": "number", "unit": "pack-years"}}
    covariates = {"bmi": {"type": "number"}}
    factors = associations.factor_table(data, exposures)
    table = associations.associate(data, factors, exposures, covariates).set_index("term")
    assert list(table.index) == ["smoking=former", "smoking=current", "pack_years"]
    assert (table.loc[["smoking=former", "smoking=current"], "reference"] == "never").all()
    for term, planted in (("smoking=former", 1.5), ("smoking=current", 3.0), ("pack_years", 0.2)):
        assert table.loc[term, "ci_low"] <= planted <= table.loc[term, "ci_high"], term
        assert table.loc[term, "q"] < 1e-3
    assert table.loc["smoking=current", "n"] == (smoking != "").sum()  # the unanswered leave this model only
    assert table.loc["pack_years", "n"] == n
    unadjusted = associations.associate(data, factors, exposures).set_index("term")
    assert unadjusted.loc["smoking=current", "ci_low"] > 3.0  # confounded by BMI without the covariate


def test_an_exposure_confounded_with_site_is_not_estimated_and_blank_covariates_are_counted():
    # One hospital coded "not asked" as "no": the exposure is the site. Any estimate would be arbitrary.
    rng = np.random.default_rng(4)
    n = 200
    site = rng.choice(["A", "B"], n)
    data = pd.DataFrame({"sag": rng.normal(0, 3, n), "age": rng.uniform(30, 80, n), "sex": rng.choice(["F", "M"], n),
                         "site": site, "heavy": (site == "A").astype(float),
                         "bmi": np.where(np.arange(n) < 30, np.nan, rng.normal(27, 4, n))})
    exposures = {"heavy": {"type": "yes_no"}}
    table = associations.associate(data, associations.factor_table(data, exposures), exposures,
                                   {"bmi": {"type": "number"}})
    row = table.iloc[0]
    assert np.isnan(row["effect_years"]) and np.isnan(row["p"]) and "confounded" in row["note"]
    assert "30 without bmi" in row["note"] and row["n"] == n - 30


def test_paired_bootstrap_keeps_the_pairing_and_resamples_people_not_records():
    rng = np.random.default_rng(3)
    cnn = np.abs(rng.normal(0, 5, size=400))
    people = np.arange(400).astype(str)
    same = peers.paired_bootstrap({"cnn": cnn, "copy": cnn.copy(), "worse": cnn + 1.0}, people, "cnn", seed=1)
    assert same["copy"]["minus_reference_ci"] == [0.0, 0.0]
    assert same["worse"]["minus_reference"] == pytest.approx(1.0)
    assert same["worse"]["minus_reference_ci"] == pytest.approx([1.0, 1.0])  # paired: the spread cancels
    low, high = same["cnn"]["mae_ci"]
    assert low < cnn.mean() < high
    assert (high - low) / 3.92 == pytest.approx(cnn.std() / np.sqrt(400), rel=0.15)  # the analytic SE
    # Each person's two records move together: the CI of 400 people with two identical records each is that of
    # 400 people, not of 800 independent records.
    twice = peers.paired_bootstrap({"cnn": np.repeat(cnn, 2)}, np.repeat(people, 2), "cnn", seed=1)
    assert twice["cnn"]["mae_ci"] == pytest.approx(same["cnn"]["mae_ci"])
