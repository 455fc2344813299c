"""An archive's worth of bad and unusual inputs: each kind ends as the ingestion contract says.

docs/ingestion.md is the ingestion contract. One corpus folder holds a small synthetic cohort plus every
kind of tests/bad_inputs.py as its own input (own series id, path or reports row); build_records runs once
on it and each kind's expected outcome is checked: processed (records in index.csv under its series key),
refused with a reason code (manifest["outcomes"] and failures.csv), or a rejected reports.csv row
(manifest["rejections"] and rejections.csv). Table-level problems each get a tiny build of their own that
must raise InputError before any work.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from configs import records as records_config
from data_prep.phantom import synthesize
from data_prep.records import build_records
from spinejax.cohort import pseudonym
from spinejax.errors import InputError
from tests import bad_inputs

SECRET = b"corpus-test-secret-0123456789"
# 7 people, 8 series: 5 DICOM (explicit, implicit and RLE transfer syntaxes, nested and flat folders), 3 NIfTI.
SPEC = synthesize.CohortSpec(subjects=7, seed=2, nifti_share=0.4)
REPO = Path(__file__).parents[1]

FILE_CODES = {"unreadable_file", "not_dicom", "bad_dicom_header", "no_image_geometry", "bad_orientation",
              "siemens_mosaic", "no_frame_geometry", "duplicate_instance", "not_nifti"}
SERIES_CODES = {"other_part", "no_report_row", "report_row_rejected", "duplicate_series", "duplicate_scan",
                "not_sagittal", "duplicate_positions", "missing_slices", "uneven_spacing", "too_few_slices",
                "pixel_decode", "non_finite", "constant_image", "no_orientation", "bad_voxel_size", "not_3d",
                "unreadable_scan", "no_mask", "ambiguous_mask", "unreadable_mask", "mask_not_labels", "mask_grid",
                "mask_no_spine"}
REGION_CODES = {"region_absent", "region_partial", "region_too_small"}
ROW_CODES = {"wrong_field_count", "missing_series_id", "duplicate_series_id", "missing_subject_id", "missing_age",
             "bad_age", "age_out_of_range", "bad_sex", "undeclared_site", "bad_value", "bad_grade"}


def _config(**overrides):
    config = records_config.get_config()
    config.update_from_flattened_dict({"workers": 2, **overrides})
    return config


REGIONS = tuple(_config().regions)


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    synthesize.synthesize(out, SPEC, workers=2, progress=False)
    return out


@dataclasses.dataclass
class Built:
    cohort: Path
    out: Path
    manifest: dict
    checks: dict
    index: pd.DataFrame
    failures: pd.DataFrame
    rejections_csv: pd.DataFrame
    exported: pd.DataFrame
    outcomes: list
    rejections: list
    n_rows: int
    seconds: float


@pytest.fixture(scope="module")
def built(synth, tmp_path_factory) -> Built:
    root = tmp_path_factory.mktemp("corpus")
    cohort = root / "cohort"
    shutil.copytree(synth, cohort, symlinks=True)
    checks = bad_inputs.build_corpus(cohort)
    with open(cohort / "reports.csv", newline="", encoding="utf-8") as f:
        n_rows = sum(1 for _ in csv.reader(f)) - 1
    start = time.perf_counter()
    manifest = build_records.build(cohort, root / "records", _config(), SECRET, progress=False)
    seconds = time.perf_counter() - start
    out = root / "records"
    return Built(cohort, out, manifest, checks, _csv(out / "index.csv"), _csv(out / "failures.csv"),
                 _csv(out / "rejections.csv"), _csv(out / "reports.csv"), manifest["outcomes"],
                 manifest["rejections"], n_rows, seconds)


# ------------------------------------------------------------------------------------------- checks


def _under(where: str, prefix: str) -> bool:
    return where == prefix or where.startswith(prefix.rstrip("/") + "/")


def _about(built: Built, check: bad_inputs.Check) -> str:
    """What the build said about this input (for failure messages)."""
    seen = [o for o in built.outcomes if (check.series_id is not None and o["series_id"] == check.series_id.strip())
            or (check.where is not None and _under(o["where"], check.where))]
    rows = [r for r in built.rejections if check.line is not None and r["line"] == check.line]
    key = pseudonym.series_key(check.series_id.strip(), SECRET) if check.series_id else None
    regions = sorted(built.index.loc[built.index["series_key"] == key, "region"]) if key else []
    return f"outcomes {seen}; rejections {rows}; records in regions {regions}"


def _verify(built: Built, check: bad_inputs.Check) -> None:
    index = built.index
    if check.what in ("processed", "not_processed"):
        key = pseudonym.series_key(check.series_id, SECRET)
        rows = index[index["series_key"] == key]
        if check.what == "not_processed":
            assert rows.empty, f"{check.series_id} has records; {_about(built, check)}"
            return
        regions = set(rows["region"])
        wanted = set(check.regions or REGIONS)
        assert wanted <= regions, f"{check.series_id}: records for {sorted(regions)}, expected {sorted(wanted)}; " \
                                  f"{_about(built, check)}"
        assert not regions & set(check.no_regions), f"{check.series_id}: unexpected records {sorted(regions)}"
        if check.age is not None:
            ages = rows["age"].astype(float)
            assert (ages - check.age).abs().max() < 1e-6, f"{check.series_id}: ages {sorted(set(ages))}"
        if check.subject_id is not None:
            assert set(rows["subject_key"]) == {pseudonym.subject_key(check.subject_id, SECRET)}
        assert key in set(built.exported["series_key"]), f"{check.series_id} missing from exported reports.csv"
        return

    if check.what == "not_refused":
        found = [o for o in built.outcomes if o["series_id"] == check.series_id]
        assert not found, f"{check.series_id}: {_about(built, check)}"
        return

    if check.what == "refused":
        found = [o for o in built.outcomes
                 if (check.series_id is None or o["series_id"] == check.series_id)
                 and (check.where is None or _under(o["where"], check.where))
                 and (check.kind is None or o["kind"] == check.kind) and o["region"] == check.region]
        matching = [o for o in found if o["code"] in check.codes]
        assert matching, f"expected {check.codes}; {_about(built, check)}"
        assert len(matching) == len(found), f"expected only {check.codes}; {_about(built, check)}"
        if check.count is not None:
            assert len(matching) == check.count, f"expected {check.count} x {check.codes}; {_about(built, check)}"
        in_csv = built.failures[built.failures["code"].isin(check.codes)
                                & (built.failures["region"] == check.region)]
        if check.kind is not None:
            in_csv = in_csv[in_csv["kind"] == check.kind]
        assert len(in_csv) >= len(matching), f"failures.csv has {len(in_csv)} rows with {check.codes}"
        if check.series_id is not None and check.absent and not check.region:
            assert pseudonym.series_key(check.series_id, SECRET) not in set(index["series_key"]), \
                f"{check.series_id} refused yet has records"
        return

    if check.what == "rejected":
        found = [r for r in built.rejections if r["line"] == check.line]
        assert len(found) == 1, f"line {check.line}: expected one rejection {check.codes}; {_about(built, check)}"
        rejection = found[0]
        assert rejection["code"] in check.codes, f"line {check.line}: {rejection}, expected {check.codes}"
        if check.column is not None:
            assert rejection["column"] == check.column, f"line {check.line}: {rejection}"
        if check.series_id is not None:
            assert rejection["series_id"] == check.series_id, f"line {check.line}: {rejection}"
        in_csv = built.rejections_csv[(built.rejections_csv["line"] == str(check.line))
                                      & built.rejections_csv["code"].isin(check.codes)]
        assert len(in_csv) == 1, f"rejections.csv has no line {check.line} with {check.codes}"
        if check.column is not None:
            assert in_csv["column"].iloc[0] == check.column
        if check.series_id:
            assert in_csv["series_key"].iloc[0] == pseudonym.series_key(check.series_id, SECRET)
        return

    if check.what == "row_used":
        assert not [r for r in built.rejections if r["line"] == check.line], \
            f"line {check.line} rejected: {_about(built, check)}"
        return

    if check.what == "custom":
        check.func(built)
        return
    raise AssertionError(f"unknown check {check.what}")


@pytest.mark.parametrize("kind", list(bad_inputs.KINDS))
def test_each_kind_ends_as_the_contract_says(built, kind):
    for check in built.checks[kind]:
        _verify(built, check)


def test_counts_add_up_and_codes_are_the_contracts(built):
    counts = built.manifest["counts"]
    assert counts["inputs"] == counts["processed"] + counts["failed"]
    assert counts["rows"] == counts["rows_used"] + counts["rows_rejected"]
    assert counts["rows"] == built.n_rows  # every data line of reports.csv is a row
    assert counts["rows_rejected"] == len(built.rejections) == len(built.rejections_csv)
    assert sum(counts["by_code"].values()) == len(built.failures)
    assert counts["by_code"] == built.failures["code"].value_counts().to_dict()
    assert counts["records"] == len(built.index)
    assert len(built.outcomes) == len(built.failures)
    region_outcomes = [o for o in built.outcomes if o["region"]]
    assert counts["region_failures"] == len(region_outcomes) == int((built.failures["region"] != "").sum())
    assert counts["failed"] >= len([o for o in built.outcomes if not o["region"]])
    assert set(built.failures["code"]) <= FILE_CODES | SERIES_CODES | REGION_CODES
    assert set(built.rejections_csv["code"]) <= ROW_CODES
    assert {o["kind"] for o in built.outcomes} <= {"file", "dicom", "nifti"}
    for outcome in built.outcomes:
        assert (outcome["kind"] == "file") == (outcome["code"] in FILE_CODES), outcome
        assert bool(outcome["region"]) == (outcome["code"] in REGION_CODES), outcome
    assert list(built.failures.columns) == ["input_key", "kind", "region", "code", "reason"]
    assert list(built.rejections_csv.columns) == ["line", "series_key", "code", "column", "reason"]
    processed_keys = set(built.index["series_key"])
    assert len(processed_keys) == counts["processed"] == len(built.exported)
    print(f"corpus build: {counts['inputs']} inputs, {counts['rows']} rows, {built.seconds:.1f} s")


def test_no_raw_id_path_or_cell_value_reaches_an_output(built):
    needles = {SECRET, b"cx-", b"dicom/corpus", b"dicom/junk", b"dicom/site_", b"dicom/zz_", b"nifti/batch_2024",
               b"corpus-test", b"CXS-", bad_inputs.COMMENT_NEEDLE.encode(), b"zz-rescan-copy", b"Corpusname",
               b"forty", b"moderate", b"maybe"}
    for outcome in built.outcomes:
        if len(outcome["series_id"]) > 12:
            needles.add(outcome["series_id"].encode())
    for path in built.out.rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json"):
            data = path.read_bytes()
            for needle in needles:
                assert needle not in data, (path.name, needle)


# ------------------------------------------------------------------------------------- table level


@pytest.fixture(scope="module")
def tiny(synth, tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """One NIfTI series of the cohort with its mask: (folder, reports header, its row)."""
    root = tmp_path_factory.mktemp("tiny") / "cohort"
    with open(synth / "reports.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    nifti = sorted((synth / "nifti").iterdir())[0]
    series_id = nifti.name.removesuffix(".nii.gz")
    row = next(r for r in rows if r[0] == series_id)
    for folder in ("nifti", "masks"):
        (root / folder).mkdir(parents=True)
        shutil.copy(synth / folder / nifti.name, root / folder / nifti.name)
    return root, header, row


def _table(rows: list[list[str]], delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def _without(header: list[str], row: list[str], column: str) -> list[list[str]]:
    n = header.index(column)
    return [header[:n] + header[n + 1:], row[:n] + row[n + 1:]]


def _with(header: list[str], row: list[str], column: str, value: str) -> list[list[str]]:
    n = header.index(column)
    row = list(row)
    row[n] = value
    return [header, row]


TABLE_CASES = {
    "empty_reports_csv": lambda h, r: b"",
    "latin1_bytes": lambda h, r: _table(_with(h, r, "site", "Clínica São José")).encode("latin-1"),
    "cp1252_bytes": lambda h, r: _table(_with(h, r, "site", "Hôpital – Nord")).encode("cp1252"),
    "utf16_unicode_text_export": lambda h, r: _table([h, r], delimiter="\t").encode("utf-16"),
    "semicolon_separated": lambda h, r: _table(_with(h, r, "age", "45,5"), delimiter=";").encode(),
    "tab_separated": lambda h, r: _table([h, r], delimiter="\t").encode(),
    "no_age_column": lambda h, r: _table(_without(h, r, "age")).encode(),
    "no_subject_id_column": lambda h, r: _table(_without(h, r, "subject_id")).encode(),
    "no_series_id_column": lambda h, r: _table(_without(h, r, "series_id")).encode(),
    "repeated_column_name": lambda h, r: _table([h + ["age"], r + ["51"]]).encode(),
    "capitalised_column_names": lambda h, r: _table([[c.capitalize() for c in h], r]).encode(),
    "xlsx_renamed_to_csv": lambda h, r: b"PK\x03\x04\x14\x00\x06\x00\x08\x00" + bytes(200),
    "no_reports_csv": None,
    "no_secret": lambda h, r: _table([h, r]).encode(),
    "out_is_a_users_folder": lambda h, r: _table([h, r]).encode(),
    "out_is_a_file": lambda h, r: _table([h, r]).encode(),
}


@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_table_level_problems_raise_input_error_before_any_work(tiny, tmp_path, case):
    source, header, row = tiny
    cohort = tmp_path / "cohort"
    shutil.copytree(source, cohort)
    make = TABLE_CASES[case]
    if make is not None:
        (cohort / "reports.csv").write_bytes(make(header, row))
    out = tmp_path / "records"
    if case == "out_is_a_users_folder":
        out.mkdir()
        (out / "notes.txt").write_text("my notes")
    elif case == "out_is_a_file":
        out.write_text("not a folder")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(InputError):
        build_records.build(cohort, out, _config(workers=1), b"" if case == "no_secret" else SECRET,
                            progress=False)
    assert not out.with_name(out.name + ".partial").exists()
    after = sorted(str(p) for p in tmp_path.rglob("*") if not p.name.endswith(".lock"))
    assert after == before, "files were written or removed before the refusal"
    if case == "out_is_a_users_folder":
        assert (out / "notes.txt").read_text() == "my notes"


def test_second_concurrent_run_into_the_same_out_is_refused(synth, tmp_path):
    out = tmp_path / "records"
    partial = out.with_name("records.partial")
    env = {**os.environ, pseudonym.SECRET_ENV: SECRET.decode()}
    command = [sys.executable, "-m", "data_prep.build_records", f"--input={synth}", f"--out={out}",
               "--config.workers=1"]
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        give_up = time.monotonic() + 120.0
        while not partial.exists() and first.poll() is None and time.monotonic() < give_up:
            time.sleep(0.005)
        assert first.poll() is None and partial.exists(), "the first run ended before a second could start"
        os.killpg(first.pid, signal.SIGSTOP)  # it keeps its lock while stopped
        listing = sorted(str(p) for p in partial.rglob("*"))
        with pytest.raises(InputError):
            build_records.build(synth, out, _config(workers=1), SECRET, progress=False)
        assert sorted(str(p) for p in partial.rglob("*")) == listing, "the second run touched the first's work"
        assert not (out / "manifest.json").exists()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def test_excel_csv_utf8_export_is_read(tiny, tmp_path):
    """Excel's 'CSV UTF-8': byte-order mark, CRLF line ends, every field quoted."""
    source, header, row = tiny
    cohort = tmp_path / "cohort"
    shutil.copytree(source, cohort)
    (cohort / "reports.csv").write_bytes(b"\xef\xbb\xbf" + _table([header, row], quoting=csv.QUOTE_ALL).encode())
    manifest = build_records.build(cohort, tmp_path / "records", _config(workers=1), SECRET, progress=False)
    counts = manifest["counts"]
    assert (counts["processed"], counts["failed"], counts["rows"], counts["rows_rejected"]) == (1, 0, 1, 0)
    index = _csv(tmp_path / "records" / "index.csv")
    assert set(index["series_key"]) == {pseudonym.series_key(row[0], SECRET)}
