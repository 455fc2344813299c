"""Associations of the spine age gap with pathology and exposures (statsmodels OLS, HC3, Benjamini-Hochberg).

For each factor, one regression:  SAG ~ factor + age + age^2 + sex + site + covariates  (age centred, in
years; sex, site and categorical covariates as categories), with heteroscedasticity-robust HC3 standard
errors. q-values are Benjamini-Hochberg over every term tested in one table.

Factors and what their effect means (years of SAG):
- conditions (from the reports' `<condition>__<level>` grades): present when graded mild or worse at any
  level, over the whole spine and per region (cervical, thoracic, lumbar); present against absent;
- exposures, as the cohort schema declares them (spinejax.cohort.schema): `yes_no` (yes against no),
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

from spinejax.cohort import pathology_features
from spinejax.scans import spine_labels

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
    adjust, left_out = [], []
    for i, (name, spec) in enumerate(covariates.items()):
        column = f"covariate_{i}"  # formula-safe, whatever the schema called it
        values = data[name]
        if spec["type"] == "categorical":
            base[column] = values.astype(object).where(values.notna() & (values != ""))
        else:
            base[column] = pd.to_numeric(values, errors="coerce")
        adjust.append((column, spec["type"] == "categorical"))
        if base[column].isna().any():
            left_out.append(f"{int(base[column].isna().sum())} without {name}")
    base = base.dropna(subset=[c for c, _ in adjust])
    covariate_note = f"left out for a blank covariate: {', '.join(left_out)}" if left_out else ""
    rows = []
    for name in factors.columns:
        spec = exposures.get(name, _CONDITION)
        info = {"factor": name, "kind": "exposure" if name in exposures else "condition", "type": spec["type"],
                "region": "" if name in exposures else (name.split("@")[1] if "@" in name else "any")}
        frame = base.join(factors[name].rename("factor")).dropna(subset=["factor"])
        rows += [{**r, "note": "; ".join(n for n in (r.get("note", ""), covariate_note) if n)}
                 for r in _fit(frame, info, spec, adjust)]
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    tested = table["p"].notna()
    if tested.any():
        table.loc[tested, "q"] = multipletests(table.loc[tested, "p"].astype(float), method="fdr_bh")[1]
    table["significant"] = table["q"] < FDR
    return table


def _contrasts(frame: pd.DataFrame, info: dict, spec: dict) -> tuple[list[tuple], str]:
    """([(level, reference, indicator or values, why not estimable or '')], reference) of one factor."""
    values = frame["factor"]
    if spec["type"] == "categorical":
        reference = spec["reference"]
        n_reference = int((values == reference).sum())
        out = []
        for level in spec["levels"]:
            if level == reference:
                continue
            n_level = int((values == level).sum())
            why = ("fewer than 2 people at the reference level" if n_reference < 2 else
                   "fewer than 2 people at this level" if n_level < 2 else "")
            out.append((level, n_level, (values == level).astype(float), why))
        return out, reference
    if spec["type"] == "number":
        unit = f" ({spec['unit']})" if spec.get("unit") else ""
        why = "fewer than 3 distinct values" if values.nunique() < 3 else ""
        return [(f"per unit{unit}", len(frame), values.astype(float), why)], ""
    exposed = int(values.eq(1).sum())
    why = "fewer than 2 people with it" if exposed < 2 else (
        "fewer than 2 people without it" if len(frame) - exposed < 2 else "")
    level, reference = ("present", "absent") if info["kind"] == "condition" else ("yes", "no")
    return [(level, exposed, values.astype(float), why)], reference


def _fit(frame: pd.DataFrame, info: dict, spec: dict, adjust: list[tuple[str, bool]]) -> list[dict]:
    """Rows of one factor's model: one per level of a categorical exposure (each against the reference level,
    in one model), else one. A level too rare, or a factor confounded with age, sex, site or a covariate, gets
    a note and no estimate."""
    contrasts, reference = _contrasts(frame, info, spec)
    rows, terms = [], []
    for i, (level, n_with, indicator, why) in enumerate(contrasts):
        term = f"{info['factor']}={level}" if spec["type"] == "categorical" else info["factor"]
        row = {**info, "term": term, "level": level, "reference": reference, "n": len(frame), "n_with": n_with}
        if why:
            rows.append({**row, "note": why})
            continue
        frame = frame.assign(**{f"contrast_{i}": indicator})
        rows.append(row)
        terms.append(f"contrast_{i}")
    if not terms:
        return rows
    if spec["type"] == "categorical":  # levels too rare to estimate join no group: leave them out of the model
        kept = {r["level"] for r in rows if "note" not in r} | {reference}
        frame = frame[frame["factor"].isin(kept)]
        if len(frame) == 0:
            return rows
    formula = ["age_c", "I(age_c ** 2)"] + [f"C({c})" for c in ("sex", "site") if frame[c].nunique() > 1]
    formula += [(f"C({c})" if categorical else c) for c, categorical in adjust if frame[c].nunique() > 1]
    model = smf.ols("sag ~ " + " + ".join(terms + formula), data=frame)
    estimated = [r for r in rows if "note" not in r]
    if np.linalg.matrix_rank(model.exog) < model.exog.shape[1]:  # aliased: any estimate would be arbitrary
        for row in estimated:
            row.update(n=len(frame), note="not estimable: confounded with age, sex, site or a covariate")
        return rows
    fit = model.fit(cov_type="HC3")
    intervals = fit.conf_int()
    for row, term in zip(estimated, terms):
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
