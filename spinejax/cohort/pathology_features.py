"""Pathology features of a reports table: parsing `<condition>__<level>` grades and aggregating them.

A reports table holds one severity grade (0 none, 1 mild, 2 moderate, 3 severe) per condition and level.
Two views are used downstream:
- raw: the grades as they are, [cases, condition x level];
- region_at_least: for each condition, spine region (cervical, thoracic, lumbar) and severity, the number
  of levels of that region graded at least that severity [cases, 9 conditions x 3 regions x 3 severities
  = 81 when mild is counted]. This is the paper's aggregation "by spine region and severity": it keeps
  where and how bad, and forgets which exact level, which a radiologist reports less reliably. Counts are
  cumulative (a severe level also counts as at least mild and at least moderate), so a level that worsens
  by one grade changes one count by one instead of moving a count between two columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spinejax.scans import spine_labels

SEVERITIES = ("mild", "moderate", "severe")
SEPARATOR = "__"
# The conditions a reports table may grade (columns `<condition>__<level>`): the declared vocabulary. A
# site grading other conditions adds them here (or passes its own to spinejax.cohort.reports_table.read); a
# column of any other name is not a pathology grade and never leaves the reports reader.
CONDITIONS = ("disc_bulge", "disc_desiccation", "disc_height_loss", "disc_osteophyte", "canal_stenosis",
              "endplate_irregularity", "listhesis", "fracture", "marrow_change")


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The `<condition>__<level>` columns of a reports table, in table order; checks their levels."""
    columns = [c for c in table.columns if SEPARATOR in c]
    if not columns:
        raise ValueError("the reports table has no pathology columns named <condition>__<level>")
    for column in columns:
        level = column.split(SEPARATOR, 1)[1]
        spine_labels.region_of_level(level)  # raises on a level that is not C2..L5 / C2-C3..L5-S1
    return columns


def grades(table: pd.DataFrame) -> pd.DataFrame:
    """The pathology grades as int8 [cases, features]; a blank or out-of-range grade is an error."""
    columns = feature_columns(table)
    values = table[columns]
    bad = values.isna() | ~values.isin([0, 1, 2, 3])
    if bad.any().any():
        row, column = np.argwhere(bad.to_numpy())[0]
        raise ValueError(f"reports row {row} ({table.iloc[row].get('series_id', '?')}), column "
                         f"{columns[column]}: grade {values.iat[row, column]!r} is not one of 0, 1, 2, 3")
    return values.astype(np.int8)


def conditions(columns: list[str]) -> list[str]:
    """Condition names in first-seen order."""
    return list(dict.fromkeys(c.split(SEPARATOR, 1)[0] for c in columns))


def columns_of(columns: list[str], condition: str, region: str | None = None) -> list[str]:
    """The columns of `condition`, at levels of `region` (all levels when None)."""
    return [c for c in columns if c.split(SEPARATOR)[0] == condition
            and (region is None or spine_labels.region_of_level(c.split(SEPARATOR)[1]) == region)]


def region_at_least(graded: pd.DataFrame, min_grade: int = 1) -> pd.DataFrame:
    """Levels per (condition, region) graded at least each severity from `min_grade` to severe.

    graded: [cases, `<condition>__<level>`] grades 0-3. Returns float32 counts [cases, conditions x
    3 regions x (4 - min_grade)], columns `<condition>__<region>__<severity>_or_worse` ('severe' alone
    for grade 3). Grades below `min_grade` are left out.
    """
    if min_grade not in (1, 2, 3):
        raise ValueError(f"min_grade must be 1 (mild), 2 (moderate) or 3 (severe), not {min_grade!r}")
    out = {}
    for condition in conditions(list(graded.columns)):
        for region in spine_labels.REGIONS:
            block = graded[columns_of(list(graded.columns), condition, region)].to_numpy()
            for grade in range(min_grade, 4):
                severity = SEVERITIES[grade - 1] + ("_or_worse" if grade < 3 else "")
                out[f"{condition}{SEPARATOR}{region}{SEPARATOR}{severity}"] = (block >= grade).sum(axis=1)
    return pd.DataFrame(out, index=graded.index).astype(np.float32)


def any_level(graded: pd.DataFrame, min_grade: int = 1, region: str | None = None) -> pd.DataFrame:
    """Per condition: 1 where any level (of `region`, if given) has a grade >= min_grade, else 0."""
    out = {}
    for condition in conditions(list(graded.columns)):
        cols = columns_of(list(graded.columns), condition, region)
        if cols:
            out[condition] = (graded[cols].to_numpy() >= min_grade).any(axis=1).astype(np.int8)
    return pd.DataFrame(out, index=graded.index)


def invalid_rows(table: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Why each row cannot be used ('' when it can): blank or out-of-range grades, missing age."""
    values = table[columns]
    bad = values.isna() | ~values.isin([0, 1, 2, 3])
    reasons = pd.Series("", index=table.index, dtype=object)
    for row in np.flatnonzero(bad.any(axis=1).to_numpy()):
        first = columns[int(np.argmax(bad.iloc[row].to_numpy()))]
        reasons.iloc[row] = (f"{int(bad.iloc[row].sum())} pathology grade(s) blank or not 0-3 "
                             f"(first: {first}={values.iat[row, columns.index(first)]})")
    age = pd.to_numeric(table["age"], errors="coerce") if "age" in table else pd.Series(np.nan, table.index)
    no_age = age.isna() & (reasons == "")
    reasons[no_age] = "age missing or not a number"
    return reasons

