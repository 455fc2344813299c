"""reports.csv, read and checked row by row: the one reader of the cohort's table for every stage.

A site's table comes from a RIS export or a spreadsheet, so nothing in it is trusted:
- The table as a whole must be comma-separated UTF-8 text (a byte-order mark is fine) with the columns
  `series_id`, `subject_id` and `age`, each named once. Anything else (empty, Latin-1, semicolons or tabs,
  a missing column) is refused before any work with `InputError`, saying what was found and what is expected.
- Every cell is read as text: ids stay strings exactly as written (`007` stays `007`, never the number 7),
  stripped of surrounding spaces.
- Each data row is used or rejected with a reason code (the table of codes is in docs/ingestion.md):
  blank or repeated series ids (every copy is rejected: which one is right cannot be known), blank subject
  ids, ages that are not a number of years (DICOM's age strings `045Y`, `006M`, `010W`, `030D` are
  converted) or lie outside `age_range_years`, a sex outside F/M/O (female, male, other; blank or U is
  unknown), a site not in `site_codes` when the site declared its codes, a declared column's value outside its
  vocabulary, and a pathology grade blank or not 0-3.
- Only declared columns leave this module: ids, age, sex, site, the columns of `declared` with their
  vocabulary, and pathology grades `<condition>__<level>` whose condition is in `conditions` and whose level
  is a spine level. Every other column (a name, a comment, `x__comment`) is counted and dropped: free text
  never reaches an output.

Messages name columns and line numbers, never cell values, so they may go into de-identified outputs.
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

from data_prep.cohort import pathology_features, spine_labels
from spinejax.errors import InputError

REQUIRED = ("series_id", "subject_id", "age")
OPTIONAL = ("sex", "site")
SEX_CODES = {"f": "F", "female": "F", "m": "M", "male": "M", "o": "O", "other": "O", "": "", "u": "",
             "unknown": ""}
YES_NO = {"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "yes": 1.0, "no": 0.0, "y": 1.0, "n": 0.0,
          "true": 1.0, "false": 0.0}
GRADES = {"0": 0, "1": 1, "2": 2, "3": 3, "0.0": 0, "1.0": 1, "2.0": 2, "3.0": 3}
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

    rows columns: series_id and subject_id (str), line (int, in the file), age (float, years), sex ('F', 'M',
    'O' or ''), site (str: the code from `site_codes`, or the raw value for the caller to key), each declared
    column (float for 'yes_no' and 'number', str for a list of levels; NaN or '' when blank), then the
    pathology grades (int8, 0-3).
    """

    rows: pd.DataFrame
    rejected: list[Rejection]
    n_rows: int
    pathology_columns: list[str]
    declared_columns: list[str]
    ignored_columns: list[str]  # console only: a header may hold anything
    sha256: str
    site_declared: bool


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


def _decode(raw: bytes, name: str) -> str:
    if not raw.strip():
        raise InputError(f"{name} is empty: expected a comma-separated header line with "
                         f"{', '.join(REQUIRED)} and one row per series")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{name} is not UTF-8 text (byte 0x{raw[error.start]:02X} at offset {error.start}, as Latin-1 or "
            "Windows-1252 exports write accented letters): save it as 'CSV UTF-8'") from None


def _header(text: str, name: str) -> list[str]:
    first = text.splitlines()[0]  # also a classic Mac export's lone carriage returns
    if "," not in first:
        found = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}
        seen = [f"{first.count(s)} {word}" for s, word in found.items() if s in first]
        raise InputError(f"{name}: the header line has no commas{' but ' + ', '.join(seen) if seen else ''}; "
                         "spinejax reads comma-separated tables: export with commas")
    header = [h.strip() for h in next(csv.reader([first]))]
    repeated = [n for n, c in Counter(header).items() if c > 1 and n]  # empty names: a spreadsheet's spare columns
    if repeated:  # names only when they are ours: a header may hold anything
        ours = [n for n in repeated if n in REQUIRED + OPTIONAL]
        raise InputError(f"{name}: {len(repeated)} column name(s) appear more than once"
                         f"{' (' + ', '.join(ours) + ')' if ours else ''}; each column must be named once")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{name}: required column(s) {', '.join(missing)} missing (found {len(header)} columns); "
                         f"expected at least {', '.join(REQUIRED)}")
    return header


def _pathology(header: list[str], conditions: tuple[str, ...]) -> list[str]:
    out = []
    for column in header:
        condition, _, level = column.partition(pathology_features.SEPARATOR)
        if not level or condition not in conditions:
            continue
        try:
            spine_labels.region_of_level(level)
        except ValueError:
            continue
        out.append(column)
    return out


def _declared_value(text: str, vocabulary) -> tuple[bool, object]:
    """(ok, value) of one cell of a declared column; blank is ok and unknown."""
    text = text.strip()
    if vocabulary == "yes_no":
        return (True, np.nan) if not text else ((text.lower() in YES_NO), YES_NO.get(text.lower()))
    if vocabulary == "number":
        if not text:
            return True, np.nan
        try:
            value = float(text)
        except ValueError:
            return False, None
        return math.isfinite(value), value
    levels = {str(v).lower(): str(v) for v in vocabulary}
    return (True, "") if not text else (text.lower() in levels, levels.get(text.lower()))


def read(path: Path, *, declared: dict | None = None, conditions: tuple[str, ...] | None = None,
         age_range_years: tuple[float, float] = (0.0, 120.0), site_codes: dict | None = None) -> ReportsTable:
    """The checked table (module docstring). Raises InputError when the table as a whole is unusable.

    declared: column -> vocabulary ('yes_no', 'number', or a sequence of levels); each must be present.
    conditions: pathology conditions to keep (default pathology_features.CONDITIONS).
    age_range_years: (low, high): an age must satisfy low < age <= high.
    site_codes: raw site value -> code; when given, a site outside it rejects the row.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise InputError(f"no {name} in the cohort folder: expected one row per series with "
                         f"{', '.join(REQUIRED)} (see README, 'Bring your own data')")
    try:
        raw = path.read_bytes()
    except OSError:
        raise InputError(f"{name} cannot be read (permission denied or I/O error)") from None
    text = _decode(raw, name)
    header = _header(text, name)
    declared = dict(declared or {})
    absent = [c for c in declared if c not in header]
    if absent:
        raise InputError(f"{name}: declared column(s) {', '.join(absent)} missing; add them or remove them "
                         "from the config's report_columns")
    pathology = _pathology(header, tuple(conditions or pathology_features.CONDITIONS))
    kept = set(REQUIRED) | set(OPTIONAL) | set(declared) | set(pathology)
    try:
        records, rejected = _rows(text, header, declared, pathology, kept, age_range_years, site_codes)
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
    columns = ["series_id", "subject_id", "age", "sex", "site", *declared, *pathology, "line"]
    rows = pd.DataFrame(records, columns=columns).set_index("series_id", drop=False)
    rows[pathology] = rows[pathology].astype(np.int8)
    return ReportsTable(rows=rows, rejected=rejected, n_rows=len(records) + len(rejected),
                        pathology_columns=pathology, declared_columns=list(declared),
                        ignored_columns=[c for c in header if c not in kept and c],
                        sha256=hashlib.sha256(raw).hexdigest(), site_declared=bool(site_codes))


def _rows(text: str, header: list[str], declared: dict, pathology: list[str], kept: set[str],
          age_range_years: tuple[float, float], site_codes: dict | None) -> tuple[list[dict], list[Rejection]]:
    """The row-by-row checks of `read` (its docstring): (usable rows as dicts, rejections)."""
    where = {c: i for i, c in enumerate(header)}
    records, rejected = [], []
    body = csv.reader(io.StringIO(text, newline=""))
    next(body)
    start = body.line_num + 1
    for fields in body:
        line_number, start = start, body.line_num + 1  # a quoted cell (Alt+Enter in Excel) spans several lines
        if not any(f.strip() for f in fields):
            continue  # blank lines (a spreadsheet's trailing rows) are not rows
        series_id = fields[where["series_id"]].strip() if len(fields) > where["series_id"] else ""

        def reject(code: str, column: str, message: str, _line=line_number, _id=series_id) -> None:
            rejected.append(Rejection(_line, _id, code, column, message))

        if len(fields) != len(header):
            reject("wrong_field_count", "", f"line {line_number} has {len(fields)} fields, the header "
                                            f"{len(header)}")
            continue
        cell = {c: fields[i].strip() for c, i in where.items() if c in kept}
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
        low, high = age_range_years
        if not low < age <= high:
            reject("age_out_of_range", "age", f"line {line_number}: age outside ({low:g}, {high:g}] years")
            continue
        sex = SEX_CODES.get(cell.get("sex", "").lower())
        if sex is None:
            reject("bad_sex", "sex", f"line {line_number}: sex is not F, M, O (female, male, other) or blank")
            continue
        site = cell.get("site", "")
        if site_codes:
            if site not in site_codes:
                reject("undeclared_site", "site", f"line {line_number}: site is not one of the "
                                                  f"{len(site_codes)} declared in site_codes")
                continue
            site = str(site_codes[site])
        row = {"series_id": cell["series_id"], "subject_id": cell["subject_id"], "age": age, "sex": sex,
               "site": site, "line": line_number}
        bad = None
        for column, vocabulary in declared.items():
            ok, value = _declared_value(cell[column], vocabulary)
            if not ok:
                bad = column
                break
            row[column] = value
        if bad:
            reject("bad_value", bad, f"line {line_number}: {bad} is outside its declared vocabulary")
            continue
        grades = [GRADES.get(cell[c]) for c in pathology]
        if any(g is None for g in grades):
            first = pathology[[g is None for g in grades].index(True)]
            reject("bad_grade", first, f"line {line_number}: {sum(g is None for g in grades)} pathology "
                                       f"grade(s) blank or not 0, 1, 2, 3 (first: {first})")
            continue
        row.update(zip(pathology, grades))
        records.append(row)
    return records, rejected
