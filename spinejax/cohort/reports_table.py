"""The cohort's reports table, read through its schema and checked row by row: the one reader for every stage.

A site's table comes from a RIS export or a spreadsheet, so nothing in it is trusted. Its columns are named
by the cohort schema (spinejax.cohort.schema; spinejax's own names when there is none):
- The table as a whole must be comma-separated UTF-8 text (a byte-order mark is fine) holding the schema's
  series id, subject id and age columns, and every column the schema declares, each named once. Anything
  else (empty, Latin-1, semicolons or tabs, a declared column absent) is refused before any work with
  `InputError`, naming the column and saying what is expected.
- Every cell is read as text: ids stay strings exactly as written (`007` stays `007`, never the number 7),
  stripped of surrounding spaces.
- Each data row is used or rejected with a reason code (the table of codes is in docs/ingestion.md):
  blank or repeated series ids (every copy is rejected: which one is right cannot be known), blank subject
  ids, ages that are not a number of years (DICOM's age strings `045Y`, `006M`, `010W`, `030D` are
  converted) or lie outside `age_range_years`, a sex outside F/M/O (female, male, other; blank or U is
  unknown) and the schema's `sex_values`, a site not in `site_codes` when the schema declares them, an
  exposure's or covariate's value outside its vocabulary, and a pathology grade outside the schema's grades
  (or blank, unless the schema says blank means none).
- Only declared columns leave this module, under spinejax's names: series_id, subject_id, age, sex, site,
  the exposures and covariates by their schema names, and the pathology grades as `<condition>__<level>`.
  Every other column (a name, a comment) is counted and dropped: free text never reaches an output.

Messages name spinejax's fields and line numbers, never cell values, so they may go into de-identified
outputs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from spinejax.cohort import schema as cohort_schema
from spinejax.errors import InputError

YES_NO = {"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "yes": 1.0, "no": 0.0, "y": 1.0, "n": 0.0,
          "true": 1.0, "false": 0.0}
_DICOM_AGE = re.compile(r"^(\d{1,3})\s*([YMWD])$", re.IGNORECASE)
_DAYS_PER_UNIT = {"Y": 365.25, "M": 365.25 / 12.0, "W": 7.0, "D": 1.0}


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A data row that was not used: 1-based line in the file (the header is line 1), the raw series id
    (console only; keyed before it reaches an output), reason code, declared column or '', message."""

    line: int
    series_id: str
    code: str
    column: str
    message: str


@dataclasses.dataclass
class ReportsTable:
    """Usable rows (`rows`, indexed by series id, in file order) and the rejected ones.

    rows columns, under spinejax's names: series_id and subject_id (str), line (int, in the file), age (float,
    years), sex ('F', 'M', 'O' or ''), site (str: the code from `site_codes`, or the raw value for the caller
    to key), each exposure and covariate (float for 'yes_no' and 'number', the declared level for
    'categorical'; NaN or '' when blank), then the pathology grades `<condition>__<level>` (int8, 0-3).
    """

    rows: pd.DataFrame
    rejected: list[Rejection]
    n_rows: int
    pathology_columns: list[str]  # spinejax's names
    declared_columns: list[str]  # the exposures' and covariates' names
    ignored_columns: list[str]  # console only: a header may hold anything
    sha256: str
    schema: cohort_schema.Schema

    @property
    def missing_conditions(self) -> list[str]:
        """Declared conditions with no grade column in the table (a pattern or level notation that does not fit)."""
        found = {c.split("__", 1)[0] for c in self.pathology_columns}
        return [c for c in self.schema.conditions if c not in found]

    def warnings(self) -> list[str]:
        """What a run should say about the table as a whole (spinejax's words and declared names only)."""
        missing = self.missing_conditions
        if not missing or not self.pathology_columns:  # no grades at all: the stages say so themselves
            return []
        return [f"{len(missing)} declared condition(s) match no column of the table ({', '.join(missing)}): check "
                "the schema's column_pattern, words and level notation; they are absent from eligibility and the "
                "associations"]

    @property
    def site_declared(self) -> bool:
        return bool(self.schema.site_codes)


def parse_age(text: str) -> float | None:
    """Years from '45', '45.5' or a DICOM age string ('045Y', '006M', '010W', '030D'); None if neither."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        match = _DICOM_AGE.match(text)
        if not match:
            return None
        return int(match.group(1)) * _DAYS_PER_UNIT[match.group(2).upper()] / 365.25
    return value if math.isfinite(value) else None


def _decode(raw: bytes, name: str, required: list[str]) -> str:
    if not raw.strip():
        raise InputError(f"{name} is empty: expected a comma-separated header line with "
                         f"{', '.join(required)} and one row per series")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{name} is not UTF-8 text (byte 0x{raw[error.start]:02X} at offset {error.start}, as Latin-1 or "
            "Windows-1252 exports write accented letters): save it as 'CSV UTF-8'") from None


def _header(text: str, name: str, schema: cohort_schema.Schema) -> list[str]:
    first = text.splitlines()[0]  # also a classic Mac export's lone carriage returns
    if "," not in first:
        found = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}
        seen = [f"{first.count(s)} {word}" for s, word in found.items() if s in first]
        raise InputError(f"{name}: the header line has no commas{' but ' + ', '.join(seen) if seen else ''}; "
                         "spinejax reads comma-separated tables: export with commas")
    header = [h.strip() for h in next(csv.reader([first]))]
    repeated = [n for n, c in Counter(header).items() if c > 1 and n]  # empty names: a spreadsheet's spare columns
    declared = _declared_columns(schema)
    if repeated:  # names only when the schema declares them: a header may hold anything
        ours = [n for n in repeated if n in declared]
        raise InputError(f"{name}: {len(repeated)} column name(s) appear more than once"
                         f"{' (' + ', '.join(ours) + ')' if ours else ''}; each column must be named once")
    missing = [f"{column} ({field})" for field, column in declared.items() if column not in header]
    if missing:
        raise InputError(f"{name}: column(s) {', '.join(missing)} named by {schema.source} are missing (found "
                         f"{len(header)} columns); add them, or correct the schema")
    return header


def _declared_columns(schema: cohort_schema.Schema) -> dict[str, str]:
    """What the schema names -> the site's column, for each field, exposure and covariate it declares."""
    out = dict(schema.columns)
    out.update({f"{'exposure' if v in schema.exposures else 'covariate'} {v.name}": v.column
                for v in schema.variables})
    return out


def _as_written(text: str, vocabulary) -> str:
    """`text`, or its integer spelling when a spreadsheet wrote the number 2 as '2.0' and only '2' is known."""
    if text not in vocabulary and text.endswith(".0") and text[:-2].isdigit():
        return text[:-2]
    return text


def _variable_value(text: str, variable: cohort_schema.Variable, unanswered: tuple[str, ...]
                    ) -> tuple[bool, object]:
    """(ok, value) of one cell of an exposure or covariate; blank or a word of `unanswered` is ok and
    unanswered (NaN, or '' for a categorical)."""
    word = text.lower()
    if variable.type == "categorical":
        levels = {v.lower(): v for v in variable.levels}
        word = _as_written(word, levels)
        if word in levels:
            return True, levels[word]
        return (True, "") if word in unanswered else (False, None)
    if word in unanswered:
        return True, np.nan
    if variable.type == "yes_no":
        return word in YES_NO, YES_NO.get(word)
    try:
        if "_" in text:  # float() reads 1_000 as 1000
            raise ValueError
        value = float(text)
    except ValueError:
        return False, None
    low, high = variable.range or (-math.inf, math.inf)
    return math.isfinite(value) and low <= value <= high, value


def read_cohort(cohort: Path, schema_file: str = "") -> ReportsTable:
    """The cohort folder's table, through its schema (spinejax.cohort.schema.load)."""
    schema = cohort_schema.load(cohort, schema_file)
    return read(Path(cohort) / schema.table, schema)


def read(path: Path, schema: cohort_schema.Schema | None = None) -> ReportsTable:
    """The checked table (module docstring), read through `schema` (default: spinejax's own column names).
    Raises InputError when the table as a whole is unusable."""
    schema = schema or cohort_schema.default()
    path = Path(path)
    name = path.name
    required = [schema.columns[f] for f in cohort_schema.REQUIRED_FIELDS]
    if not path.is_file():
        raise InputError(f"no {name} in the cohort folder: expected one row per series with "
                         f"{', '.join(required)} (see README, 'Bring your own data')")
    try:
        raw = path.read_bytes()
    except OSError:
        raise InputError(f"{name} cannot be read (permission denied or I/O error)") from None
    text = _decode(raw, name, required)
    header = _header(text, name, schema)
    pathology = schema.pathology_columns(header)
    kept = {*_declared_columns(schema).values(), *(schema.columns.get(f, f) for f in cohort_schema.FIELDS),
            *pathology}
    try:
        records, rejected = _rows(text, header, schema, pathology)
    except csv.Error:
        raise InputError(f"{name} cannot be parsed as CSV (an unterminated quote, or a cell longer than "
                         f"{csv.field_size_limit()} characters): export it again as CSV UTF-8") from None
    counts = Counter(r["series_id"] for r in records) + Counter(r.series_id for r in rejected if r.series_id)
    repeated = {s for s, n in counts.items() if n > 1}
    if repeated:
        for row in [r for r in records if r["series_id"] in repeated]:
            rejected.append(Rejection(row["line"], row["series_id"], "duplicate_series_id", "series_id",
                                      f"line {row['line']}: the same series_id is on another line"))
        records = [r for r in records if r["series_id"] not in repeated]
    rejected.sort(key=lambda r: r.line)
    variables = [v.name for v in schema.variables]
    grades = list(pathology.values())
    columns = ["series_id", "subject_id", "age", "sex", "site", *variables, *grades, "line"]
    rows = pd.DataFrame(records, columns=columns).set_index("series_id", drop=False)
    rows[grades] = rows[grades].astype(np.int8)
    return ReportsTable(rows=rows, rejected=rejected, n_rows=len(records) + len(rejected), pathology_columns=grades,
                        declared_columns=variables, ignored_columns=[c for c in header if c not in kept and c],
                        sha256=hashlib.sha256(raw).hexdigest(), schema=schema)


def _rows(text: str, header: list[str], schema: cohort_schema.Schema, pathology: dict[str, str]
          ) -> tuple[list[dict], list[Rejection]]:
    """The row-by-row checks of `read` (its docstring): (usable rows as dicts under spinejax's names,
    rejections)."""
    where = {c: i for i, c in enumerate(header)}
    field = {f: where.get(schema.columns.get(f, f)) for f in cohort_schema.FIELDS}  # None: an optional one absent
    sex_codes = {**cohort_schema.STANDARD_SEX, **schema.sex_values}
    low, high = schema.age_range_years
    records, rejected = [], []
    body = csv.reader(io.StringIO(text, newline=""))
    next(body)
    start = body.line_num + 1
    for fields in body:
        line_number, start = start, body.line_num + 1  # a quoted cell (Alt+Enter in Excel) spans several lines
        if not any(f.strip() for f in fields):
            continue  # blank lines (a spreadsheet's trailing rows) are not rows
        series_id = fields[field["series_id"]].strip() if len(fields) > field["series_id"] else ""

        def reject(code: str, column: str, message: str, _line=line_number, _id=series_id) -> None:
            rejected.append(Rejection(_line, _id, code, column, message))

        if len(fields) != len(header):
            reject("wrong_field_count", "", f"line {line_number} has {len(fields)} fields, the header "
                                            f"{len(header)}")
            continue
        cell = {f: (fields[i].strip() if i is not None else "") for f, i in field.items()}
        if not cell["series_id"]:
            reject("missing_series_id", "series_id", f"line {line_number}: series_id is blank")
            continue
        if not cell["subject_id"]:
            reject("missing_subject_id", "subject_id", f"line {line_number}: subject_id is blank")
            continue
        if not cell["age"]:
            reject("missing_age", "age", f"line {line_number}: age is blank")
            continue
        age = parse_age(cell["age"])
        if age is None:
            reject("bad_age", "age", f"line {line_number}: age is not a number of years (nor a DICOM age "
                                     "such as 045Y)")
            continue
        if not low < age <= high:
            reject("age_out_of_range", "age", f"line {line_number}: age outside ({low:g}, {high:g}] years")
            continue
        sex = sex_codes.get(_as_written(cell["sex"].lower(), sex_codes))
        if sex is None:
            reject("bad_sex", "sex", f"line {line_number}: sex is not F, M, O (female, male, other), one of the "
                                     "schema's sex_values, or blank")
            continue
        site = cell["site"]
        if schema.site_codes:
            site = _as_written(site, schema.site_codes)
            if site not in schema.site_codes:
                reject("undeclared_site", "site", f"line {line_number}: site is not one of the "
                                                  f"{len(schema.site_codes)} declared in site_codes")
                continue
            site = schema.site_codes[site]
        row = {"series_id": cell["series_id"], "subject_id": cell["subject_id"], "age": age, "sex": sex,
               "site": site, "line": line_number}
        bad = []
        for variable in schema.variables:
            ok, value = _variable_value(fields[where[variable.column]].strip(), variable, schema.unanswered)
            if not ok:
                bad.append(variable.name)
            row[variable.name] = value
        if bad:
            reject("bad_value", bad[0], f"line {line_number}: {', '.join(bad)} outside the declared vocabulary "
                                        "(levels, yes/no, a number in range, or a word of `unanswered`)")
            continue
        grades = [_grade(fields[where[column]], schema) for column in pathology]
        if any(g is None for g in grades):
            first = list(pathology.values())[[g is None for g in grades].index(True)]
            reject("bad_grade", first, f"line {line_number}: {sum(g is None for g in grades)} pathology "
                                       f"grade(s) {'' if schema.blank_grade is not None else 'blank or '}not one of "
                                       f"the schema's grades (first: {first})")
            continue
        row.update(zip(pathology.values(), grades))
        records.append(row)
    return records, rejected


def _grade(text: str, schema: cohort_schema.Schema) -> int | None:
    """The grade of a cell; a spreadsheet's '2.0' is the value '2'."""
    text = text.strip().lower()
    if not text:
        return schema.blank_grade
    return schema.grades.get(_as_written(text, schema.grades))
