"""data_prep.cohort.reports_table: spreadsheet exports as sites make them, read row by row with the right line numbers."""

from __future__ import annotations

import pytest

from data_prep.cohort import reports_table
from spinejax.errors import InputError


def _read(tmp_path, data: bytes, **kwargs):
    path = tmp_path / "reports.csv"
    path.write_bytes(data)
    return reports_table.read(path, **kwargs)


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
    table = _read(tmp_path, data, declared={"smoker": "yes_no"}, site_codes={"North": "A", "South": "B"})
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
    (b"series_id,patient,age\nA,s,40\n", "subject_id missing"),
])
def test_unusable_tables_are_refused_with_what_was_found(tmp_path, data, expected):
    with pytest.raises(InputError, match=expected):
        _read(tmp_path, data)
