"""Free-text reports to the graded pathology table: the step before records and eligibility at a real site.

    python -m data_prep.report_features --input=REPORTS_TEXT --out=DIR [--schema=cohort_schema.yaml]
        [--vocabulary=configs/report_vocabulary.yaml] [--text_column=report_text]

REPORTS_TEXT is a CSV table with one row per study (the site's own columns, one of them the report's text),
or a folder of text files, one per study (`<series id>.txt`). Each report is read by
data_prep.reports_text.extract with the site's vocabulary. DIR (spinejax.output_folder: written whole, never
over the user's files) holds:
    reports.csv      the input's rows and columns, the text column left out, plus one grade column per
                     condition and level, named and coded as the cohort schema says (its column_pattern,
                     condition words, level notation and grade values), so the cohort's schema reads it as is
    provenance.csv   line, id, column, grade, sentence: the sentence each grade came from (the site's own text,
                     kept next to the table for checking; spinejax never reads it again and it never enters
                     records or any de-identified output; dates, long numbers and LAST^FIRST names masked)
    failures.csv     line, id, code, reason: rows not graded (blank_report; unreadable_report: a .txt file that is
                     not UTF-8), so counts add up; line is the CSV line (for a folder, the file's place in name order
                     plus 2)
    summary.json     counts (rows = graded + failed), phrases set aside by reason, the stamp (hashes of the
                     input, vocabulary, schema and text column: what makes the folder stale), the speed
    review.html      50 reports drawn at random, each beside the grades read from it and their sentences, for a
                     person to check (the site's own text, like provenance.csv)
The table holds only what the extractor produced from the text (grades) and the input's other columns; no
word of a report reaches it. An unchanged input, vocabulary and schema is not redone.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep import parallel
from data_prep.reports_text import extract, vocabulary
from spinejax import output_folder
from spinejax.cohort import schema as cohort_schema
from spinejax.errors import InputError

STAGE = "report_features"
REVIEW = 50  # reports in review.html
SEVERITY_WORDS = {1: "1 mild", 2: "2 moderate", 3: "3 severe"}
CODE_VERSION = 2  # raise when the extraction rules change what a report gives
CHUNK = 400  # reports per job: large enough that a worker's start-up is paid once per many reports
_MASKS = [(re.compile(r"\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b"), "[date]"), (re.compile(r"\b\d{5,}\b"), "[number]"),
          (re.compile(r"\b[A-Z][A-Za-z'-]+\^[A-Z][A-Za-z'^ -]*"), "[name]"),
          (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"), "[time]")]


def read_input(path: Path, text_column: str) -> pd.DataFrame:
    """The reports as a table of text cells (a CSV file, or a folder of <id>.txt files)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".txt")
        if not files:
            raise InputError(f"{path}: no .txt report files in this folder")
        rows = []
        for p in files:
            try:
                rows.append({"series_id": p.stem, text_column: p.read_text(encoding="utf-8-sig")})
            except (OSError, UnicodeDecodeError):
                rows.append({"series_id": p.stem, text_column: None})
        return pd.DataFrame(rows)
    try:
        raw = path.read_bytes()
    except OSError:
        raise InputError(f"{path}: the reports file cannot be read") from None
    try:
        table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        raise InputError(f"{path.name}: not a CSV table in UTF-8 (one row per report)") from None
    if text_column not in table.columns:
        raise InputError(f"{path.name}: no column {text_column!r} holding the report text (--text_column names it)")
    return table


def site_columns(schema: cohort_schema.Schema, columns: list[str]) -> dict[str, str]:
    """spinejax's `<condition>__<level>` -> the grade column named as the schema names it."""
    out = {}
    for column in columns:
        condition, level = column.split("__")
        word = schema.conditions.get(condition, condition)
        out[column] = schema.column_pattern.format(condition=word, level=schema.levels.get(level, level))
    return out


def site_grades(schema: cohort_schema.Schema) -> dict[int, str]:
    """0..3 -> the table's own value for that grade (the first the schema lists)."""
    values = {}
    for value, grade in schema.grades.items():
        values.setdefault(grade, value)
    missing = [g for g in range(4) if g not in values]
    if missing:
        raise InputError(f"the cohort schema's pathology.grades has no value for grade(s) {missing}")
    return values


_EXTRACTORS: dict[str, extract.Extractor] = {}


def _extract_chunk(job: tuple[str, list]) -> list:
    """(vocabulary path, texts) -> [(grades, findings as tuples, set_aside)] per text. Runs in a worker."""
    path, texts = job
    if path not in _EXTRACTORS:
        _EXTRACTORS[path] = extract.Extractor(vocabulary.load(path))
    out = []
    for text in texts:
        result = _EXTRACTORS[path].extract(text)
        out.append((result.grades, [(f.column, f.grade, f.sentence) for f in result.findings], result.set_aside))
    return out


def _write_review(path: Path, texts: list, ids: list, todo: list[int], results: list, names: dict, n: int,
                  seed_text: str) -> None:
    """review.html: `n` reports drawn at random (seeded by the input), each beside the grades read from it and
    the sentence of each, for a person to check. The site's own text: it stays in the output folder."""
    rng = np.random.default_rng(int(seed_text[:12], 16))
    picked = sorted(rng.choice(len(todo), size=min(n, len(todo)), replace=False).tolist()) if todo else []
    order = {column: k for k, column in enumerate(names)}
    cells = []
    for k in picked:
        i = todo[k]
        found, findings, _ = results[k]
        rows = "".join(f"<tr><td>{html.escape(names[c])}</td><td>{SEVERITY_WORDS[g]}</td><td>{html.escape(s)}</td></tr>"
                       for c, g, s in sorted(set(findings), key=lambda f: order[f[0]]) if found.get(c) == g)
        cells.append(f"<section><h2>line {i + 2}: {html.escape(str(ids[i]))}</h2><div class=pair>"
                     f"<pre>{html.escape(texts[i])}</pre><table><tr><th>column</th><th>grade</th><th>from</th></tr>"
                     f"{rows or '<tr><td colspan=3>no finding graded</td></tr>'}</table></div></section>")
    path.write_text("<!doctype html><meta charset=utf-8><title>spinejax: reports and the grades read from them"
                    "</title><style>body{font:14px sans-serif;margin:2em}.pair{display:flex;gap:2em}pre{white-space:"
                    "pre-wrap;flex:1;background:#f6f6f6;padding:1em}table{flex:1;border-collapse:collapse}td,th{border"
                    ":1px solid #ccc;padding:3px;vertical-align:top}</style><h1>"
                    f"{len(picked)} reports and the grades read from them</h1><p>Check each grade against its "
                    "sentence; a finding the report states but the table lacks is missing from the right. This file "
                    "holds your reports' text: keep it where the reports are.</p>" + "".join(cells),
                    encoding="utf-8")


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def read_reports(texts: list[str], vocabulary_path: Path, workers: int | None, progress: bool = False
                 ) -> tuple[list, float]:
    """([(grades, findings, set aside)] per text, in order; seconds): the texts read by worker processes,
    CHUNK reports per job (each worker builds its extractor once)."""
    start = time.perf_counter()
    jobs = [(str(vocabulary_path), texts[k:k + CHUNK]) for k in range(0, len(texts), CHUNK)]
    results = [r for chunk in parallel.map_jobs(_extract_chunk, jobs, workers, desc="chunks of reports",
                                                progress=progress) for r in chunk]
    return results, time.perf_counter() - start


def grade_array(results: list, columns: list[str]) -> np.ndarray:
    """[len(results), len(columns)] int8 grades 0-3 of read_reports' results."""
    position = {column: k for k, column in enumerate(columns)}
    grades = np.zeros((len(results), len(columns)), np.int8)
    for i, (found, _, _) in enumerate(results):
        for column, grade in found.items():
            grades[i, position[column]] = grade
    return grades


def mask_identifiers(sentence: str) -> str:
    for pattern, replacement in _MASKS:
        sentence = pattern.sub(replacement, sentence)
    return sentence


def run(input_path: Path, out: Path, vocabulary_path: Path = vocabulary.DEFAULT_FILE, schema_file: str = "",
        text_column: str = "report_text", workers: int | None = None, progress: bool = True,
        review: int = REVIEW) -> dict:
    """Grades every report of `input_path` into `out` (module docstring); returns the summary."""
    input_path, vocabulary_path = Path(input_path), Path(vocabulary_path).resolve()
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder")
    words = vocabulary.load(vocabulary_path)
    schema = cohort_schema.load(input_path if input_path.is_dir() else input_path.parent, schema_file)
    table = read_input(input_path, text_column)
    id_column = schema.columns.get("series_id", "series_id")
    columns = words.columns()
    names = site_columns(schema, columns)
    clash = sorted(set(names.values()) & set(table.columns))
    if clash:
        raise InputError(f"the reports table already has grade column(s) such as {clash[0]!r}: refusing to "
                         "replace them (give a table of ids, ages and report text)")
    digest = hashlib.sha256(pd.util.hash_pandas_object(table, index=True).values.tobytes()).hexdigest()
    # The schema and the text column's name are the site's words: the stamp keeps their hash, not them.
    settings = hashlib.sha256(json.dumps([schema.fingerprint_json(), text_column]).encode()).hexdigest()
    stamp = {"stage": STAGE, "code": CODE_VERSION, "input": digest, "vocabulary": words.fingerprint,
             "settings": settings, "review": review}
    summary_path = Path(out) / "summary.json"
    if summary_path.is_file():
        try:
            written = json.loads(summary_path.read_text())
        except json.JSONDecodeError:
            written = {}
        if written.get("stamp") == stamp:
            return {**written, "skipped": True}
    texts = table[text_column].tolist()
    blank = [not isinstance(t, str) or not t.strip() for t in texts]
    todo = [i for i, b in enumerate(blank) if not b]
    with output_folder.OutputFolder(Path(out), STAGE) as folder:
        folder.start(stamp)
        results, seconds = read_reports([texts[i] for i in todo], vocabulary_path, workers, progress)
        grades = np.zeros((len(table), len(columns)), np.int8)  # [rows, columns] 0-3
        grades[todo] = grade_array(results, columns)
        ids = table[id_column].tolist() if id_column in table.columns else [""] * len(table)
        provenance, set_aside, masked = [], {}, {}
        for i, (_, findings, aside) in zip(todo, results):
            for column, grade, sentence in findings:
                if sentence not in masked:
                    masked[sentence] = mask_identifiers(sentence)
                provenance.append((i + 2, ids[i], names[column], grade, masked[sentence]))
            for reason, n in aside.items():
                set_aside[reason] = set_aside.get(reason, 0) + n
        values = site_grades(schema)
        coded = np.array([values[g] for g in range(4)], dtype=object)[grades[todo]]
        kept = table.drop(columns=[text_column])
        rows = [a + b for a, b in zip(kept.iloc[todo].to_numpy(dtype=object).tolist(), coded.tolist())]
        failures = [(i + 2, ids[i], "blank_report", "the report text is blank") if isinstance(texts[i], str) else
                    (i + 2, ids[i], "unreadable_report", "the report file cannot be read as UTF-8 text")
                    for i, b in enumerate(blank) if b]
        _write_csv(folder.partial / "reports.csv", list(kept.columns) + [names[c] for c in columns], rows)
        _write_csv(folder.partial / "provenance.csv", ["line", "id", "column", "grade", "sentence"], provenance)
        _write_csv(folder.partial / "failures.csv", ["line", "id", "code", "reason"], failures)
        counts = {"rows": len(table), "graded": len(todo), "failed": len(failures),
                  "findings": int((grades > 0).sum()), "reports_with_findings": int((grades > 0).any(axis=1).sum())}
        assert counts["rows"] == counts["graded"] + counts["failed"]
        summary = {"stamp": stamp, "counts": counts, "set_aside": set_aside, "columns": len(columns),
                   "seconds": round(seconds, 3), "reports_per_second": round(len(todo) / max(seconds, 1e-9), 1)}
        (folder.partial / "summary.json").write_text(json.dumps(summary, indent=1))
        _write_review(folder.partial / "review.html", texts, ids, todo, results, names, review, digest)
        folder.commit()
    return {**summary, "skipped": False}
