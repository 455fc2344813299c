"""spinejax.cohort.reports_table: spreadsheet exports as sites make them, read row by row with the right line
numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spinejax.cohort import reports_table
from spinejax.cohort import schema as cohort_schema
from spinejax.errors import InputError


def _read(tmp_path, data: bytes, schema: dict | None = None):
    path = tmp_path / "reports.csv"
    path.write_bytes(data)
    return reports_table.read(path, cohort_schema.parse({"spinejax_cohort_schema": 1, **(schema or {})}, "test"))


def test_mac_line_ends_multiline_cells_spare_columns_and_bom(tmp_path):
    # A classic Mac export (CR only), a comment cell with a line break inside quotes, two unnamed spare
    # columns, a byte-order mark: the rows after the multi-line cell keep their own line numbers.
    data = ('\ufeffseries_id,subject_id,age,comments,,\r"A1","007","45Y","first\nsecond",,\r'
            'B2,0042,forty,x,,\rC3,0042,61.5,,,\r').encode()
    table = _read(tmp_path, data)
    assert table.rows["series_id"].tolist() == ["A1", "C3"] and table.rows["subject_id"].tolist() == ["007", "0042"]
    assert table.rows["age"].tolist() == [45.0, 61.5] and table.rows["line"].tolist() == [2, 5]
    assert [(r.line, r.code, r.series_id) for r in table.rejected] == [(4, "bad_age", "B2")]
    assert table.ignored_columns == ["comments"] and table.n_rows == 3


def test_dicom_ages_vocabularies_and_duplicates(tmp_path):
    data = (b"series_id,subject_id,age,sex,site,smoker,disc_bulge__L4-L5\n"
            b"a,s1,006M,female,North,yes,2.0\n"
            b"b,s2,30,X,North,no,1\n"
            b"c,s3,30,M,South,maybe,1\n"
            b"d,s4,30,M,Elsewhere,no,1\n"
            b"e,s5,30,M,North,no,moderate\n"
            b"f,s6,30,m,North,,0\n"
            b"f,s7,31,m,North,no,0\n")
    table = _read(tmp_path, data, {"exposures": {"smoker": {"type": "yes_no"}},
                                   "site_codes": {"North": "A", "South": "B"}})
    first = table.rows.loc["a", ["age", "sex", "site", "smoker", "disc_bulge__L4-L5"]].tolist()
    assert first == [0.5, "F", "A", 1.0, 2]
    assert {r.series_id: r.code for r in table.rejected} == {
        "b": "bad_sex", "c": "bad_value", "d": "undeclared_site", "e": "bad_grade", "f": "duplicate_series_id"}
    assert sum(r.series_id == "f" for r in table.rejected) == 2  # every copy of a repeated id
    # A value never appears in a message: only the column and the line.
    assert all("maybe" not in r.message and "moderate" not in r.message for r in table.rejected)


@pytest.mark.parametrize("data, expected", [
    (b"", "empty"),
    ("series_id,subject_id,age\nA,M\xfcller,40\n".encode("latin-1"), "not UTF-8"),
    (b"series_id;subject_id;age\nA;s;40\n", "2 semicolons"),
    (b"series_id,subject_id,age,age\nA,s,40,41\n", r"more than once \(age\)"),
    (b"series_id,patient,age\nA,s,40\n", r"subject_id \(subject_id\) named by"),
])
def test_unusable_tables_are_refused_with_what_was_found(tmp_path, data, expected):
    with pytest.raises(InputError, match=expected):
        _read(tmp_path, data)


SITE_SCHEMA = """\
spinejax_cohort_schema: 1
table: ris_export.csv
columns: {series_id: Accession, subject_id: PatientKey, age: AgeAtScan, sex: Gender, site: Hospital}
sex_values: {"1": M, "2": F, "9": ""}
age_range_years: [18, 100]
exposures:
  smoking: {column: Smoker, type: categorical, levels: [never, former, current], reference: never}
  heavy_work: HeavyLabour
  pack_years: {column: PackYears, type: number, unit: pack-years, range: [0, 150]}
covariates:
  bmi: {column: BMI, type: number, range: [10, 80]}
pathology:
  column_pattern: "{level} {condition}"
  conditions: {disc_bulge: bulge, canal_stenosis: stenosis, fracture: fx}
  levels: L4-5
  grades: {none: 0, mild: 1, moderate: 2, severe: 3}
  blank: none
"""


def test_a_site_table_is_read_through_its_schema_under_spinejax_names(tmp_path):
    (tmp_path / "cohort_schema.yaml").write_text(SITE_SCHEMA)
    (tmp_path / "ris_export.csv").write_text(
        "Accession,PatientKey,AgeAtScan,Gender,Hospital,Smoker,HeavyLabour,PackYears,BMI,L4-5 bulge,"
        "T12-L1 stenosis,L1 fx,Referrer\n"
        "A1,P1,54,2,North,Former,Y,12,24.5,moderate,,none,Dr Who\n"
        "A2,P2,61,1,South,current,n,,31,Severe,mild,mild,\n"
        "A3,P3,40,9,North,sometimes,n,3,22,none,none,none,\n"  # outside smoking's levels
        "A4,P4,17,1,North,never,n,0,22,none,none,none,\n"  # under age_range_years
        "A5,P5,50,1,North,never,n,0,22,bad,none,none,\n"  # not a grade word
        "A6,P6,50,1,North,never,n,400,22,none,none,none,\n")  # pack-years outside its range
    table = reports_table.read_cohort(tmp_path)
    assert table.schema.source == "cohort_schema.yaml" and table.declared_columns == [
        "smoking", "heavy_work", "pack_years", "bmi"]
    assert table.pathology_columns == ["disc_bulge__L4-L5", "canal_stenosis__T12-L1", "fracture__L1"]
    a1 = table.rows.loc["A1"]
    assert (a1["sex"], a1["smoking"], a1["heavy_work"], a1["pack_years"], a1["bmi"]) == ("F", "former", 1.0, 12.0, 24.5)
    assert a1[table.pathology_columns].tolist() == [2, 0, 0]  # blank means none, as declared
    assert np.isnan(table.rows.loc["A2", "pack_years"]) and table.rows.loc["A2", "smoking"] == "current"
    assert {r.series_id: (r.code, r.column) for r in table.rejected} == {
        "A3": ("bad_value", "smoking"), "A4": ("age_out_of_range", "age"), "A5": ("bad_grade", "disc_bulge__L4-L5"),
        "A6": ("bad_value", "pack_years")}
    assert table.ignored_columns == ["Referrer"]  # never read, so "Dr Who" cannot reach an output
    declared = table.schema.declarations()
    assert declared["exposures"]["smoking"] == {"type": "categorical", "levels": ["never", "former", "current"],
                                                "reference": "never"}
    assert "Smoker" not in json.dumps(declared) and "PatientKey" not in json.dumps(declared)


def test_a_column_the_schema_names_but_the_table_lacks_is_refused_by_name(tmp_path):
    (tmp_path / "cohort_schema.yaml").write_text(SITE_SCHEMA)
    (tmp_path / "ris_export.csv").write_text("Accession,PatientKey,AgeAtScan,Gender,Hospital,Smoker,PackYears,BMI\n"
                                             "A1,P1,54,2,North,never,1,22\n")
    with pytest.raises(InputError, match=r"HeavyLabour \(exposure heavy_work\)"):
        reports_table.read_cohort(tmp_path)


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.replace("spinejax_cohort_schema: 1", "spinejax_cohort_schema: 2"), "must be 1"),
    (lambda s: s + "colums: {}\n", "unknown key.*colums"),
    (lambda s: s.replace("reference: never", "reference: nevr"), r"exposures.smoking.reference 'nevr' is not"),
    (lambda s: s.replace("type: number, unit", "type: count, unit"), "exposures.pack_years.type must be"),
    (lambda s: s.replace("levels: L4-5", "levels: L4 to 5"), "pathology.levels must be one of"),
    (lambda s: s.replace('"{level} {condition}"', '"{level}"'), "column_pattern must hold"),
    (lambda s: s.replace("severe: 3}", "severe: 4}"), "pathology.grades.severe"),
    (lambda s: s.replace("column: BMI", "column: PackYears"), "PackYears mapped to two fields"),
    (lambda s: s.replace('"9": ""', '"9": X'), "sex_values.9"),
    (lambda s: s.replace("exposures:", "exposures: [\n"), "not valid YAML"),
    (lambda s: s + "exposures:\n  coffee: Coffee\n", "exposures given twice"),  # a second block would win
    (lambda s: s.replace("range: [0, 150]", "range: '05'"), "range must be two numbers"),
    (lambda s: s.replace("  heavy_work:", "  split:"), "split taken"),
    (lambda s: s.replace("  heavy_work:", "  disc_bulge:"), "disc_bulge taken"),  # a condition's name
    (lambda s: s.replace("canal_stenosis: stenosis", "canal_stenosis: bulge"), "makes the column name"),
    (lambda s: s.replace("column: BMI", "column: L4-5 bulge"), "a field and a grade"),
    (lambda s: s.replace("levels: L4-5", "levels: [L4-5]"), "pathology.levels must be one of"),
    (lambda s: s.replace("columns: {", "columns: {1: X, "), "unknown field"),
    (lambda s: s.replace("table: ris_export.csv", "table: /etc/hostname"), "table must be a file name"),
    (lambda s: s.replace("column_pattern: \"{level} {condition}\"", "column_pattern: '{condition.x}{level}'"),
     "column_pattern must hold"),
    (lambda s: s.replace('sex_values: {"1": M,', 'sex_values: {F: M, "1": M,'), "already means F"),
])
def test_schema_mistakes_are_refused_naming_the_key(tmp_path, change, expected):
    (tmp_path / "cohort_schema.yaml").write_text(change(SITE_SCHEMA))
    with pytest.raises(InputError, match=expected):
        cohort_schema.load(tmp_path)


def test_no_schema_file_reads_spinejax_names_and_no_exposures(tmp_path):
    schema = cohort_schema.load(tmp_path)
    assert schema.exposures == () and schema.columns["series_id"] == "series_id"
    assert len(schema.pathology_columns([f"disc_bulge__{lv}" for lv in ("L4-L5", "L4-5", "X1")])) == 1


def test_yaml_words_stay_as_written_and_unanswered_words_keep_the_row(tmp_path):
    # Unquoted no/yes/010 are text here (YAML 1.1 would read false/true/8); NA and '-' are no answer; a
    # spreadsheet's 2.0 is 2; every bad variable of a row is named.
    (tmp_path / "cohort_schema.yaml").write_text(
        "spinejax_cohort_schema: 1\ncolumns: {subject_id: 010}\nsex_values: {1: M, 2: F}\n"
        "exposures:\n  drinks: {column: Drinks, type: categorical, levels: [no, yes, 2], reference: no}\n"
        "  bmi: {column: BMI, type: number, range: [10, 80]}\npathology: {conditions: [], grades: {no: 0}}\n")
    (tmp_path / "reports.csv").write_text("series_id,010,age,sex,Drinks,BMI\n"
                                         "a,s1,40,2.0,NO,NA\nb,s2,41,1,2.0,-\nc,s3,42,1,maybe,1_000\n")
    table = reports_table.read_cohort(tmp_path)
    assert table.rows["drinks"].tolist() == ["no", "2"] and table.rows["sex"].tolist() == ["F", "M"]
    assert table.rows["bmi"].isna().all()
    (rejected,) = table.rejected
    assert rejected.code == "bad_value" and "drinks, bmi" in rejected.message


def test_a_declared_condition_that_matches_no_column_is_said(tmp_path):
    (tmp_path / "cohort_schema.yaml").write_text(
        "spinejax_cohort_schema: 1\npathology: {column_pattern: '{level} {condition}', levels: L4-5,\n"
        "  conditions: {disc_bulge: bulge, fracture: fx}}\n")
    (tmp_path / "reports.csv").write_text("series_id,subject_id,age,L4-5 bulge,L1 Fx\na,s,40,1,0\n")
    table = reports_table.read_cohort(tmp_path)
    assert table.pathology_columns == ["disc_bulge__L4-L5"] and table.missing_conditions == ["fracture"]
    assert "fracture" in table.warnings()[0] and "L1 Fx" not in table.warnings()[0]


def test_held_out_sites_must_be_sites_of_the_table(tmp_path):
    from configs import records as records_config
    from data_prep.records import build_records

    (tmp_path / "reports.csv").write_text("series_id,subject_id,age,site\na,s1,40,North Valley\nb,s2,50,South\n")
    table = reports_table.read_cohort(tmp_path)
    config = records_config.get_config()
    config.test_sites = ("North Valley",)
    rows = build_records.usable_rows(table, b"k" * 32, config)
    assert rows["a"]["split"] == "test" and rows["b"]["split"] != "test"
    config.test_sites = ("North Valey",)  # a typo would hold no one out, and the name would reach the manifest
    with pytest.raises(InputError, match="1 of 1 match no site") as error:
        build_records.usable_rows(table, b"k" * 32, config)
    assert "Valey" not in str(error.value)
