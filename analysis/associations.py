"""Associations of the spine age gap with pathology and exposures (statsmodels OLS, HC3, Benjamini-Hochberg).

For each factor, one regression:  SAG ~ factor + age + age^2 + sex + site + covariates  (age centred, in
years; sex, site and categorical covariates as categories), with heteroscedasticity-robust HC3 standard
errors. q-values are Benjamini-Hochberg over every term tested in one table.

Factors and what their effect means (years of SAG):
- conditions (from the reports' `<condition>__<level>` grades): present when graded mild or worse at any
  level, over the whole spine and per region (cervical, thoracic, lumbar); present against absent;
- exposures, as the cohort schema declares them (data_prep.cohort.schema): `yes_no` (yes against no),
  `number` (per unit), `categorical` (each level against the declared reference level: one row per level,
  all from one model). Blank answers are unanswered and leave that person out of that factor's model only.
Covariates (the schema's) are adjusted for in every model; a person with a blank covariate leaves the models.
A factor or level too few people have (or lack) is listed with the reason and no estimate, never dropped.

One series per person: rescans and follow-ups of one person are not independent, so each person's
earliest series (lowest age, then series key) stands for them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.stats.multitest import multipletests

from data_prep.cohort import pathology_features, spine_labels

FDR = 0.05
REGIONS = tuple(spine_labels.REGIONS)
COLUMNS = ["factor", "term", "kind", "type", "region", "level", "reference", "n", "n_with", "effect_years", "ci_low",
           "ci_high", "se", "p", "q", "significant", "note"]
_CONDITION = {"type": "yes_no"}


def one_series_per_subject(table: pd.DataFrame) -> pd.DataFrame:
    """Each subject's earliest series (lowest age, then series key)."""
    ordered = table.sort_values(["subject_key", "age", "series_key"])
    return ordered.drop_duplicates("subject_key", keep="first").reset_index(drop=True)


def factor_table(reports: pd.DataFrame, exposures: dict) -> pd.DataFrame:
    """Factors per row of `reports`: each exposure (float for yes_no and number, str for categorical; NaN
    unanswered), then 0/1 `<condition>` (any level) and `<condition>@<region>` for each condition and region.

    exposures: name -> declaration ({'type': ..., 'levels': ..., 'reference': ...}; Schema.declarations()).
    """
    factors = {}
    for name, spec in exposures.items():
        if spec["type"] == "categorical":
            values = reports[name].astype(object).where(reports[name].notna() & (reports[name] != ""))
            factors[name] = values.map(lambda v: v if pd.isna(v) else str(v))
        else:
            factors[name] = pd.to_numeric(reports[name], errors="coerce")
    if not any(pathology_features.SEPARATOR in c for c in reports.columns):  # a site without graded reports
        return pd.DataFrame(factors, index=reports.index)
    graded = pathology_features.grades(reports)
    for region in (None, *REGIONS):
        present = pathology_features.any_level(graded, min_grade=1, region=region)
        factors.update({name if region is None else f"{name}@{region}": present[name].astype(float)
                        for name in present.columns})
    return pd.DataFrame(factors, index=reports.index)


def associate(data: pd.DataFrame, factors: pd.DataFrame, exposures: dict, covariates: dict | None = None
              ) -> pd.DataFrame:
    """One row per tested term (COLUMNS): effect (years) with 95% CI, HC3 p, BH q.

    data: one row per subject with sag, age (years), sex, site and each covariate's column; factors: aligned
    rows (factor_table); exposures, covariates: name -> declaration (Schema.declarations()).
    """
    covariates = covariates or {}
    base = data[["sag", "age", "sex", "site"]].copy()
    base["age_c"] = base["age"] - base["age"].mean()
    adjust = []
    for i, (name, spec) in enumerate(covariates.items()):
        column = f"covariate_{i}"  # formula-safe, whatever the schema called it
        values = data[name]
        if spec["type"] == "categorical":
            base[column] = values.astype(object).where(values.notna() & (values != ""))
        else:
            base[column] = pd.to_numeric(values, errors="coerce")
        adjust.append((column, spec["type"] == "categorical"))
    base = base.dropna(subset=[c for c, _ in adjust])
    rows = []
    for name in factors.columns:
        spec = exposures.get(name, _CONDITION)
        info = {"factor": name, "kind": "exposure" if name in exposures else "condition", "type": spec["type"],
                "region": "" if name in exposures else (name.split("@")[1] if "@" in name else "any")}
        frame = base.join(factors[name].rename("factor")).dropna(subset=["factor"])
        rows += _fit(frame, info, spec, adjust)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    tested = table["p"].notna()
    if tested.any():
        table.loc[tested, "q"] = multipletests(table.loc[tested, "p"].astype(float), method="fdr_bh")[1]
    table["significant"] = table["q"] < FDR
    return table


def _fit(frame: pd.DataFrame, info: dict, spec: dict, adjust: list[tuple[str, bool]]) -> list[dict]:
    """Rows of one factor's model: one per level of a categorical exposure, else one."""
    if spec["type"] == "categorical":
        reference = spec["reference"]
        contrasts = [(level, (frame["factor"] == level).astype(float)) for level in spec["levels"]
                     if level != reference]
        n_reference = int((frame["factor"] == reference).sum())
    else:
        level = "per unit" + (f" ({spec['unit']})" if spec.get("unit") else "") if spec["type"] == "number" else (
            "present" if info["kind"] == "condition" else "yes")
        reference = "" if spec["type"] == "number" else ("absent" if info["kind"] == "condition" else "no")
        contrasts = [(level, frame["factor"].astype(float))]
        n_reference = int((frame["factor"] == 0).sum()) if spec["type"] != "number" else len(frame)
    rows, terms = [], []
    for i, (level, indicator) in enumerate(contrasts):
        exposed = int(indicator.ne(0).sum()) if spec["type"] != "number" else int(indicator.nunique())
        term = info["factor"] if spec["type"] != "categorical" else f"{info['factor']}={level}"
        row = {**info, "term": term, "level": level, "reference": reference, "n": len(frame), "n_with": exposed}
        if spec["type"] == "number":
            row["n_with"] = len(frame)
            enough = exposed >= 3  # a slope needs three distinct values
        else:
            enough = exposed >= 2 and n_reference >= 2
        if not enough:
            rows.append({**row, "note": "too few people with or without it to estimate"})
            continue
        frame = frame.assign(**{f"contrast_{i}": indicator})
        rows.append(row)
        terms.append(f"contrast_{i}")
    if not terms:
        return rows
    if spec["type"] == "categorical":  # levels too rare to estimate join no group: leave them out of the model
        kept = {r["level"] for r in rows if "note" not in r} | {spec["reference"]}
        frame = frame[frame["factor"].isin(kept)]
    formula = ["age_c", "I(age_c ** 2)"] + [f"C({c})" for c in ("sex", "site") if frame[c].nunique() > 1]
    formula += [(f"C({c})" if categorical else c) for c, categorical in adjust if frame[c].nunique() > 1]
    fit = smf.ols("sag ~ " + " + ".join(terms + formula), data=frame).fit(cov_type="HC3")
    intervals = fit.conf_int()
    estimated = iter(terms)
    for row in rows:
        if "note" in row:
            continue
        term = next(estimated)
        row.update(n=len(frame), effect_years=fit.params[term], ci_low=intervals.loc[term, 0],
                   ci_high=intervals.loc[term, 1], se=fit.bse[term], p=fit.pvalues[term], note="")
    return rows


def against_planted(table: pd.DataFrame, planted: dict) -> pd.DataFrame:
    """Synthetic cohorts: each planted exposure effect (years of biological age) against its estimate.

    A factor planted at 0 is a null factor: it should not pass the FDR threshold.
    """
    rows = []
    for name, effect in planted.items():
        found = table[table["term"] == name]
        if found.empty or pd.isna(found["effect_years"].iloc[0]):
            rows.append({"factor": name, "planted_years": effect, "note": "not estimated"})
            continue
        r = found.iloc[0]
        rows.append({"factor": name, "planted_years": effect, "estimate_years": r["effect_years"],
                     "ci_low": r["ci_low"], "ci_high": r["ci_high"], "q": r["q"],
                     "ci_covers_planted": bool(r["ci_low"] <= effect <= r["ci_high"]),
                     "right_sign": bool(np.sign(r["effect_years"]) == np.sign(effect)) if effect else None,
                     "null_passes_fdr": bool(r["significant"]) if effect == 0 else None, "note": ""})
    return pd.DataFrame(rows)
