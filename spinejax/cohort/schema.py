"""The cohort schema: which columns of a site's reports table spinejax reads, and what their values mean.

A site's table has its own column names and codings. The schema is one small file the site writes once
(YAML or JSON; `cohort_schema.yaml` next to the table is found by itself) and every stage reads through it
(spinejax.cohort.reports_table), so no stage knows a column name of its own. docs/cohort_schema.md is the
reference; an example:

    spinejax_cohort_schema: 1          # the format version (required)
    table: reports.csv                 # the table in the cohort folder (default reports.csv)
    columns:                           # the site's column for each of spinejax's fields
      series_id: SeriesKey
      subject_id: PatientKey
      age: AgeAtScan                   # years, or DICOM age strings (045Y, 006M)
      sex: Gender                      # optional; F, M, O, female, male, other; blank or U: unknown
      site: Hospital                   # optional
    sex_values: {"1": M, "2": F}       # optional: the site's own sex codes
    age_range_years: [18, 100]         # optional: low < age <= high (default 0, 120)
    site_codes: {North Valley: A}      # optional: site name -> the code outputs carry (else a keyed code)
    exposures:                         # lifestyle factors, each tested against the spine age gap
      smoking: {column: Smoker, type: categorical, levels: [never, former, current], reference: never}
      heavy_work: {column: HeavyLabour, type: yes_no}
      pack_years: {column: PackYears, type: number, unit: pack-years, range: [0, 200]}
    covariates:                        # adjusted for in every association model (same types)
      bmi: {column: BMI, type: number, unit: kg/m2, range: [10, 80]}
    pathology:                         # graded findings: one column per condition and spine level
      column_pattern: "{level} {condition}"   # how a grade column's name is made (default {condition}__{level})
      conditions: {disc_bulge: bulge, canal_stenosis: stenosis}   # spinejax's condition -> the site's word
      levels: L4-5                     # level notation, as L4-L5 is written: L4-L5, L4-5, L4/5, L4/L5, L4_L5, L4L5
      grades: {none: 0, mild: 1, moderate: 2, severe: 3}          # the site's grade values -> 0-3
      blank: reject                    # a blank grade rejects the row ('reject') or means none ('none')

Types: `yes_no` (yes/no, y/n, true/false, 1/0: 1 is yes), `number` (optionally within `range`), and
`categorical` (`levels`, compared with `reference`, default the first level; matched ignoring letter case).
A blank exposure or covariate, or one of the words of `unanswered` (default NA, N/A, unknown, -, ?, ...),
is unanswered: that person leaves that factor's model only. Any other value outside the vocabulary rejects
the row.

Everything is checked before any work; a mistake is an InputError naming the key (`exposures.smoking.reference`).
Outputs carry spinejax's names (the schema's keys), never the site's column names: `declarations()` is what
the records folder keeps (cohort_schema.json) for the analysis.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import yaml

from spinejax.cohort import pathology_features
from spinejax.errors import InputError
from spinejax.scans import spine_labels

FORMAT_VERSION = 1
FILE_NAMES = ("cohort_schema.yaml", "cohort_schema.yml", "cohort_schema.json")
FIELDS = ("series_id", "subject_id", "age", "sex", "site")
REQUIRED_FIELDS = ("series_id", "subject_id", "age")
TYPES = ("yes_no", "number", "categorical")
SEX_CODES = ("F", "M", "O", "")
STANDARD_SEX = {"f": "F", "female": "F", "m": "M", "male": "M", "o": "O", "other": "O", "": "", "u": "",
                "unknown": ""}  # a schema's sex_values add to these, never change them
# The words a table uses for "no answer" in an exposure or covariate (letter case ignored; a categorical
# level of the same spelling wins): the person is unanswered for that factor, the row stays.
UNANSWERED = ("", "na", "n/a", "nan", "null", "unknown", "not known", "-", "?", ".")
# Names the pipeline's own tables use: an exposure or covariate may not take them.
RESERVED = ("line", "split", "series_key", "subject_key", "eligible", "region", "sag", "sag_uncorrected",
            "predicted_age", "corrected_age", "checkpoint_step", "age_c", "factor", "term")
DEFAULT_GRADES = {"0": 0, "1": 1, "2": 2, "3": 3}  # a spreadsheet's '2.0' reads as '2' (reports_table)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TOP_KEYS = {"spinejax_cohort_schema", "table", "columns", "sex_values", "age_range_years", "site_codes",
             "exposures", "covariates", "pathology", "unanswered"}
_VARIABLE_KEYS = {"column", "type", "levels", "reference", "unit", "range"}
_PATHOLOGY_KEYS = {"column_pattern", "conditions", "levels", "grades", "blank"}


def _disc_notation(separator: str, repeat_letter: bool):
    """A disc level L4-L5 written with `separator`, the lower letter dropped when it repeats (L4-5)."""
    def write(level: str) -> str:
        upper, _, lower = level.partition("-")
        if not lower:
            return level  # a vertebra: L1
        if not repeat_letter and upper[0] == lower[0]:
            lower = lower[1:]
        return f"{upper}{separator}{lower}"
    return write


LEVEL_NOTATIONS = {"L4-L5": _disc_notation("-", True), "L4-5": _disc_notation("-", False),
                   "L4/5": _disc_notation("/", False), "L4/L5": _disc_notation("/", True),
                   "L4_L5": _disc_notation("_", True), "L4L5": _disc_notation("", True)}


@dataclasses.dataclass(frozen=True)
class Variable:
    """An exposure or covariate: spinejax's `name` (outputs), the site's `column`, its type and vocabulary."""

    name: str
    column: str
    type: str
    levels: tuple[str, ...] = ()
    reference: str = ""
    unit: str = ""
    range: tuple[float, float] | None = None

    def declaration(self) -> dict:
        out = {"type": self.type}
        if self.type == "categorical":
            out.update(levels=list(self.levels), reference=self.reference)
        if self.unit:
            out["unit"] = self.unit
        if self.range:
            out["range"] = list(self.range)
        return out


@dataclasses.dataclass(frozen=True)
class Schema:
    """A checked schema (module docstring). `source` is where it came from (console only)."""

    table: str
    columns: dict  # field -> the site's column; sex and site only when declared (else read as 'sex', 'site'
    # when present)
    sex_values: dict  # lower-cased site code -> F, M, O or '' (unknown), on top of the standard spellings
    age_range_years: tuple[float, float]
    site_codes: dict
    exposures: tuple[Variable, ...]
    covariates: tuple[Variable, ...]
    conditions: dict  # spinejax condition -> the site's word in column names
    column_pattern: str
    levels: dict  # spinejax level -> the site's notation
    grades: dict  # the site's grade value, lower-cased -> 0..3
    blank_grade: int | None  # None: a blank grade rejects the row
    unanswered: tuple[str, ...] = UNANSWERED  # lower-case words meaning no answer, for exposures and covariates
    source: str = "spinejax's default schema"

    @property
    def variables(self) -> tuple[Variable, ...]:
        return self.exposures + self.covariates

    def pathology_columns(self, header: list[str]) -> dict[str, str]:
        """The site's grade columns present in `header` -> spinejax's `<condition>__<level>`, in header order."""
        wanted = {}
        for condition, word in self.conditions.items():
            for level in spine_labels.VERTEBRAE + spine_labels.DISC_LEVELS:
                column = self.column_pattern.format(condition=word, level=self.levels[level])
                wanted[column] = f"{condition}{pathology_features.SEPARATOR}{level}"
        return {c: wanted[c] for c in header if c in wanted}

    def declarations(self) -> dict:
        """What outputs may say about the table: spinejax's names, types and vocabularies; no site column name."""
        return {"spinejax_cohort_schema": FORMAT_VERSION,
                "fields": list(FIELDS),
                "exposures": {v.name: v.declaration() for v in self.exposures},
                "covariates": {v.name: v.declaration() for v in self.covariates},
                "conditions": list(self.conditions)}

    def fingerprint_json(self) -> str:
        """Everything that changes how the table is read, as canonical JSON (for freshness stamps)."""
        fields = dataclasses.asdict(self)
        fields.pop("source")
        return json.dumps(fields, sort_keys=True, default=str)


def default() -> Schema:
    """spinejax's own column names, the default conditions, no exposures: a table written for spinejax."""
    return parse({"spinejax_cohort_schema": FORMAT_VERSION}, "spinejax's default schema")


def find(cohort: Path, schema_file: str = "") -> Path | None:
    """The schema file: `schema_file` if given (it must exist), else the first of FILE_NAMES in `cohort`."""
    if schema_file:
        path = Path(schema_file)
        if not path.is_file():
            raise InputError(f"schema file {schema_file} not found")
        return path
    return next((Path(cohort) / n for n in FILE_NAMES if (Path(cohort) / n).is_file()), None)


class _DuplicateKey(Exception):
    pass


class _TextLoader(yaml.BaseLoader):
    """YAML with every scalar as text (so `no`, `on`, `010` stay as written, not false or 8) and no key
    given twice (the second would silently win)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise _DuplicateKey(f"key(s) {', '.join(map(str, repeated))} given twice in one block (line "
                                f"{node.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise _DuplicateKey(f"key(s) {', '.join(repeated)} given twice in one object")
    return dict(pairs)


def load(cohort: Path, schema_file: str = "") -> Schema:
    """The cohort's schema (find), or the default one when there is none."""
    path = find(cohort, schema_file)
    if path is None:
        return default()
    return parse(read_mapping_file(path), path.name)


def read_mapping_file(path: Path):
    """A YAML (every scalar as text) or JSON (by its .json suffix) file's content, no key given twice; an
    InputError naming the file and line otherwise. Shared by every configuration file a site writes."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        raise InputError(f"{path.name} cannot be read as UTF-8 text") from None
    is_json = path.suffix.lower() == ".json"
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates) if is_json else yaml.load(text, _TextLoader)
    except _DuplicateKey as error:
        raise InputError(f"{path.name}: {error}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        where = getattr(error, "problem_mark", None) or getattr(error, "lineno", None)
        line = f" (line {where.line + 1})" if hasattr(where, "line") else (f" (line {where})" if where else "")
        raise InputError(f"{path.name} is not valid {'JSON' if is_json else 'YAML'}{line}") from None


def parse(data, source: str) -> Schema:
    """A Schema from the file's parsed content (YAML scalars as text, or JSON); InputError naming the key of
    the first mistake."""
    def fail(message: str):
        raise InputError(f"{source}: {message} (docs/cohort_schema.md)")

    if not isinstance(data, dict):
        fail("expected a mapping of keys such as spinejax_cohort_schema, columns, exposures")
    data = {str(k): v for k, v in _mapping(data, "the file", fail).items()}
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        fail(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")
    version = data.get("spinejax_cohort_schema")
    if isinstance(version, bool) or str(version).strip() != str(FORMAT_VERSION):
        fail(f"spinejax_cohort_schema must be {FORMAT_VERSION} (the format version this spinejax reads), "
             f"found {version!r}")
    table = _text(data.get("table", "reports.csv"), "table", fail)
    if Path(table).is_absolute() or ".." in Path(table).parts:
        fail("table must be a file name in the cohort folder (or a path below it)")
    columns = _mapping(data.get("columns", {}), "columns", fail)
    bad = sorted(set(columns) - set(FIELDS))
    if bad:
        fail(f"columns: unknown field(s) {', '.join(bad)}; fields: {', '.join(FIELDS)}")
    columns = {f: _text(columns.get(f, f), f"columns.{f}", fail) for f in FIELDS if f in columns or
               f in REQUIRED_FIELDS}
    sex_values = {}
    for raw, code in _mapping(data.get("sex_values", {}), "sex_values", fail).items():
        code = "" if code is None else _text(code, f"sex_values.{raw}", fail, blank=True).upper()
        if code not in SEX_CODES:
            fail(f"sex_values.{raw}: {code!r} is not F, M, O or blank (unknown)")
        key = _text(raw, "sex_values", fail, blank=True).lower()
        if STANDARD_SEX.get(key, code) != code:
            fail(f"sex_values.{raw}: {raw!r} already means {STANDARD_SEX[key] or 'unknown'}")
        sex_values[key] = code
    age_range = _range(data.get("age_range_years", (0.0, 120.0)), "age_range_years", fail)
    site_codes = {_text(k, "site_codes", fail): _text(v, f"site_codes.{k}", fail)
                  for k, v in _mapping(data.get("site_codes", {}), "site_codes", fail).items()}
    exposures = _variables(data.get("exposures", {}), "exposures", fail)
    covariates = _variables(data.get("covariates", {}), "covariates", fail)
    conditions, pattern, levels, grades, blank = _pathology(data.get("pathology", {}), fail)
    names = [v.name for v in exposures + covariates]
    taken = set(FIELDS) | set(RESERVED) | set(conditions)
    clashes = sorted({n for n in names if names.count(n) > 1} | (set(names) & taken))
    if clashes:
        fail(f"name(s) {', '.join(clashes)} taken: exposures and covariates need names of their own, not a field's, "
             f"a condition's or one of {', '.join(RESERVED)}")
    produced = [pattern.format(condition=word, level=levels[lv]) for word in conditions.values() for lv in levels]
    twice = sorted({c for c in produced if produced.count(c) > 1})
    if twice:
        fail(f"pathology: the pattern makes the column name(s) {', '.join(twice[:3])} for two conditions or levels; "
             "each grade needs a column name of its own")
    used = [*(columns.get(f, f) for f in FIELDS), *(v.column for v in exposures + covariates)]
    twice = sorted({c for c in used if used.count(c) > 1} | (set(used) & set(produced)))
    if twice:
        fail(f"column(s) {', '.join(twice)} mapped to two fields (or a field and a grade); each column means one "
             "thing")
    return Schema(table=table, columns=columns, sex_values=sex_values, age_range_years=age_range,
                  site_codes=site_codes, exposures=exposures, covariates=covariates, conditions=conditions,
                  column_pattern=pattern, levels=levels, grades=grades, blank_grade=blank,
                  unanswered=_unanswered(data.get("unanswered", UNANSWERED), fail), source=source)


def _mapping(value, key: str, fail) -> dict:
    """A mapping whose keys are text (a JSON true/false or null key is refused)."""
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        fail(f"{key} must be a mapping (key: value)")
    if any(isinstance(k, bool) or k is None for k in value):
        fail(f"{key}: a key is true, false or null")
    return {str(k).strip(): v for k, v in value.items()}


def _text(value, key: str, fail, blank: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float) or (not blank and not str(value).strip()):
        fail(f"{key} must be a non-empty name, found {value!r}" if not blank else f"{key} must be text")
    return str(value).strip()


def _number(value, key: str, fail) -> float:
    try:
        if isinstance(value, bool) or "_" in str(value):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        fail(f"{key} must be a number, found {value!r}")
    if not math.isfinite(number):
        fail(f"{key} must be finite")
    return number


def _range(value, key: str, fail) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        fail(f"{key} must be two numbers [low, high]")
    low, high = (_number(v, key, fail) for v in value)
    if not low < high:
        fail(f"{key}: low must be below high")
    return low, high


def _unanswered(value, fail) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        fail("unanswered must be a list of the table's words for no answer (e.g. [NA, unknown, '-'])")
    return tuple(sorted({_text(v, "unanswered", fail, blank=True).lower() for v in value} | {""}))


def _variables(block, key: str, fail) -> tuple[Variable, ...]:
    out = []
    for name, spec in _mapping(block, key, fail).items():
        where = f"{key}.{name}"
        if not _NAME.match(name) or pathology_features.SEPARATOR in name:
            fail(f"{where}: a name is a letter, then letters, digits and underscores (never two together)")
        if isinstance(spec, str):  # shorthand: name: column (a yes/no answer)
            spec = {"column": spec, "type": "yes_no"}
        spec = _mapping(spec, where, fail)
        unknown = sorted(set(spec) - _VARIABLE_KEYS)
        if unknown:
            fail(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_VARIABLE_KEYS))}")
        kind = spec.get("type")
        if kind not in TYPES:
            fail(f"{where}.type must be one of {', '.join(TYPES)}, found {kind!r}")
        column = _text(spec.get("column", name), f"{where}.column", fail)
        levels, reference, value_range = (), "", None
        if kind == "categorical":
            raw = spec.get("levels")
            if not isinstance(raw, list) or len(raw) < 2:
                fail(f"{where}.levels must list at least two values")
            levels = tuple(_text(v, f"{where}.levels", fail) for v in raw)
            if len({v.lower() for v in levels}) < len(levels):
                fail(f"{where}.levels repeats a value (letter case is ignored)")
            reference = _text(spec.get("reference", levels[0]), f"{where}.reference", fail)
            if reference not in levels:
                fail(f"{where}.reference {reference!r} is not one of its levels ({', '.join(levels)})")
        elif "levels" in spec or "reference" in spec:
            fail(f"{where}: levels and reference belong to categorical variables")
        if "range" in spec:
            if kind != "number":
                fail(f"{where}: range belongs to number variables")
            value_range = _range(spec["range"], f"{where}.range", fail)
        unit = _text(spec.get("unit", ""), f"{where}.unit", fail, blank=True)
        if len(unit) > 40:
            fail(f"{where}.unit: at most 40 characters (it is shown in the tables)")
        out.append(Variable(name, column, kind, levels, reference, unit, value_range))
    return tuple(out)


def _pathology(block, fail):
    """(conditions, column pattern, level notation per level, grades, blank grade) of the pathology block."""
    block = _mapping(block, "pathology", fail)
    unknown = sorted(set(block) - _PATHOLOGY_KEYS)
    if unknown:
        fail(f"pathology: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_PATHOLOGY_KEYS))}")
    raw = block.get("conditions", list(pathology_features.CONDITIONS))
    if isinstance(raw, list):
        names = [_text(c, "pathology.conditions", fail) for c in raw]
        if len(set(names)) < len(names):
            fail("pathology.conditions lists a condition twice")
        raw = {c: c for c in names}
    conditions = {}
    for condition, word in _mapping(raw, "pathology.conditions", fail).items():
        if not _NAME.match(condition) or pathology_features.SEPARATOR in condition:
            fail(f"pathology.conditions.{condition}: a condition name is a letter, then letters, digits and "
                 "underscores (never two together)")
        conditions[condition] = _text(word, f"pathology.conditions.{condition}", fail)
    pattern = _text(block.get("column_pattern", "{condition}__{level}"), "pathology.column_pattern", fail)
    try:
        pattern.format(condition="", level="")
        once = pattern.count("{condition}") == 1 and pattern.count("{level}") == 1
    except Exception:  # noqa: BLE001 - str.format raises many kinds for a pattern like '{condition.x}'
        once = False
    if not once:
        fail("pathology.column_pattern must hold {condition} and {level} once each and no other {...}")
    notation = block.get("levels", "L4-L5")
    all_levels = spine_labels.VERTEBRAE + spine_labels.DISC_LEVELS
    if isinstance(notation, dict):
        notation = _mapping(notation, "pathology.levels", fail)
        bad = sorted(set(notation) - set(all_levels))
        if bad:
            fail(f"pathology.levels: {', '.join(bad)} are not spine levels (C2..L5, C2-C3..L5-S1)")
        levels = {lv: _text(notation.get(lv, lv), f"pathology.levels.{lv}", fail) for lv in all_levels}
    elif isinstance(notation, str) and notation in LEVEL_NOTATIONS:
        levels = {lv: LEVEL_NOTATIONS[notation](lv) for lv in all_levels}
    else:
        fail(f"pathology.levels must be one of {', '.join(LEVEL_NOTATIONS)} (how L4-L5 is written) or a mapping "
             "from spinejax's levels to the site's")
    grades = {}
    for value, grade in _mapping(block.get("grades", DEFAULT_GRADES), "pathology.grades", fail).items():
        if isinstance(grade, bool) or str(grade).strip() not in ("0", "1", "2", "3"):
            fail(f"pathology.grades.{value}: {grade!r} is not 0 (none), 1 (mild), 2 (moderate) or 3 (severe)")
        key = value.lower()
        if key in grades and grades[key] != int(str(grade).strip()):
            fail(f"pathology.grades: {value!r} given twice (letter case is ignored)")
        grades[key] = int(str(grade).strip())
    if not grades:
        fail("pathology.grades is empty: give the table's value for each grade")
    blank = block.get("blank", "reject")
    if blank not in ("reject", "none"):
        fail(f"pathology.blank must be 'reject' or 'none', found {blank!r}")
    return conditions, pattern, levels, grades, (None if blank == "reject" else 0)


def read_declarations(path: Path) -> dict:
    """A records folder's cohort_schema.json (Schema.declarations), checked for its format version."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no cohort_schema.json: these records were built by an older spinejax; build "
                         "them again")
    data = json.loads(Path(path).read_text())
    if data.get("spinejax_cohort_schema") != FORMAT_VERSION:
        found = data.get("spinejax_cohort_schema")
        raise InputError(f"{Path(path).name}: written by another spinejax (format {found!r}, this one reads "
                         f"{FORMAT_VERSION}): rebuild the records")
    return data
