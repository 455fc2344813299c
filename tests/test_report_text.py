"""data_prep.phantom.report_text: free-text reports that state every graded finding at its level, and nothing
that contradicts the row, in each development style."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from data_prep.phantom import findings, report_text
from spinejax.scans import spine_labels

COLUMNS = findings.feature_columns()
STYLES = list(report_text.DEVELOPMENT_STYLES)
DISCS, VERTS = spine_labels.DISC_LEVELS, spine_labels.VERTEBRAE


def _draw_rows(n: int, seed: int) -> list[dict[str, int]]:
    """Grade rows the way the phantom's look: mostly zeros, degeneration growing with age and worst in the
    lower cervical and lower lumbar discs, conditions of a level moving together, and rare fractures, slips
    and Modic changes."""
    rng = np.random.default_rng(seed)
    region_weight = np.array([1.0 if lvl[0] == "C" else 0.6 if lvl[0] == "T" else 1.1 for lvl in DISCS])
    region_weight[[DISCS.index("C5-C6"), DISCS.index("C6-C7"), DISCS.index("L4-L5"), DISCS.index("L5-S1")]] = 1.4
    offsets = {"disc_desiccation": 0.15, "disc_height_loss": 0.3, "disc_bulge": 0.45, "disc_osteophyte": 0.55,
               "canal_stenosis": 0.65, "endplate_irregularity": 0.5}
    rows = []
    for _ in range(n):
        age = rng.uniform(20, 90)
        d = (age - 20) / 70 * region_weight + rng.normal(0, 0.15, len(DISCS))
        row = dict.fromkeys(COLUMNS, 0)
        for cond, offset in offsets.items():
            grades = np.clip(np.floor((d - offset + rng.normal(0, 0.1, len(DISCS))) / 0.2), 0, 3).astype(int)
            row.update({f"{cond}__{lvl}": int(g) for lvl, g in zip(DISCS, grades)})
        if rng.random() < 0.15:
            for v in rng.choice(np.arange(VERTS.index("T6"), VERTS.index("L3")), rng.integers(1, 3), replace=False):
                row[f"fracture__{VERTS[v]}"] = int(rng.integers(1, 4))
        if rng.random() < 0.15:
            row[f"listhesis__{rng.choice(['L4-L5', 'L5-S1', 'L3-L4'])}"] = int(rng.integers(1, 4))
        for i in np.flatnonzero(d > 0.95):  # Modic change on both sides of the worst discs
            for v in (i, i + 1):
                if v < len(VERTS):
                    row[f"marrow_change__{VERTS[v]}"] = max(row[f"marrow_change__{VERTS[v]}"], int(rng.integers(1, 4)))
        rows.append(row)
    return rows


ZERO = dict.fromkeys(COLUMNS, 0)
SEVERE = dict.fromkeys(COLUMNS, 3)
ROWS = [ZERO, SEVERE, *_draw_rows(50, seed=11)]


def _table(rows: list[dict[str, int]]) -> pd.DataFrame:
    table = pd.DataFrame(rows)[COLUMNS]
    table.insert(0, "series_id", [f"S{k:03d}" for k in range(len(rows))])
    table["sex"] = ["F" if k % 2 else "M" for k in range(len(rows))]
    table["age"] = 30.0 + np.arange(len(rows))
    return table


# -- a small reader of level names, only to see that each finding's level is written somewhere ---------
_NEXT = {v: nxt for v, nxt in zip(VERTS, (*VERTS[1:], "S1"))}
_JUNCTIONS = {"cervicothoracic junction": "C7-T1", "thoracolumbar junction": "T12-L1",
              "lumbosacral junction": "L5-S1"}
_DISC_RE = re.compile(r"(?<![A-Za-z0-9])([CTL])(\d{1,2})(?: - |-|/|)([CTLS]?)(\d{1,2})(?![0-9%])", re.I)
_ON_RE = re.compile(r"\b([CTL]\d{1,2}) on ([CTLS]\d{1,2})\b", re.I)
_VERT_RE = re.compile(r"(?<![A-Za-z0-9])([CTL]\d{1,2})(?![0-9/-])", re.I)
_RANGE_RE = re.compile(r"(\S+) (?:through|to) (?:the )?(\S+)", re.I)
_SPACED_RE = re.compile(r"\b([CTL]\d{1,2}) - ([CTLS]\d{1,2})\b", re.I)


def _disc(upper: str, lower_letter: str, lower_number: str) -> str | None:
    upper = upper.upper()
    lower = (lower_letter.upper() or upper[0]) + lower_number
    return f"{upper}-{lower}" if _NEXT.get(upper) == lower else None


def _mentioned(text: str) -> set[str]:
    """Disc levels and vertebrae the text names, in the notations the styles use, ranges expanded."""
    text = _SPACED_RE.sub(r"\1-\2", text.replace("\n", " "))
    for phrase, level in _JUNCTIONS.items():
        text = re.sub(phrase, level, text, flags=re.I)
    found = {lvl for m in _DISC_RE.finditer(text) if (lvl := _disc(m[1] + m[2], m[3], m[4]))}
    found |= {f"{a.upper()}-{b.upper()}" for a, b in _ON_RE.findall(text)}
    found |= {v.upper() for v in _VERT_RE.findall(text)}
    for a, b in _RANGE_RE.findall(text):
        a, b = a.strip(",.;:").upper(), b.strip(",.;:").upper()
        for names, canon in ((DISCS, lambda s: next(iter(_mentioned_one(s)), None)), (VERTS, lambda s: s)):
            lo, hi = canon(a), canon(b)
            if lo in names and hi in names:
                found |= set(names[names.index(lo):names.index(hi) + 1])
    return found


def _mentioned_one(token: str) -> set[str]:
    m = _DISC_RE.fullmatch(token)
    return {lvl} if m and (lvl := _disc(m[1] + m[2], m[3], m[4])) else set()


def test_level_reader_reads_the_notations():
    text = ("L4-5, L3/4, l2-3, T12/L1, L5-S1, C7 - T1, T11T12, the lumbosacral junction, of T2 on T3; from C3-C4 "
            "through C5-6; T11 through L1")
    assert _mentioned(text) >= {"L4-L5", "L3-L4", "L2-L3", "T12-L1", "L5-S1", "C7-T1", "T11-T12", "T2-T3",
                                "C3-C4", "C4-C5", "C5-C6", "T11", "T12", "L1"}
    assert "L2-L3" not in _mentioned("T1 and T2 weighted; L1 and L3; 20-25% height loss")


# -- the contract -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
def test_every_finding_stated_at_its_level_and_nothing_contradicts_the_row(style):
    for k, row in enumerate(ROWS):
        rng = np.random.default_rng([3, k])
        header = report_text.draw_header(rng)
        text, claims = report_text._write_with_claims(style, row, rng, header)
        stated = {(cond, level) for cond, level, _, kind in claims if kind == "pos"}
        for cond, level, grade, kind in claims:
            truth = row[f"{cond}__{level}"]
            if kind == "pos":
                assert grade == truth != 0, (style, k, cond, level, grade, truth)
            else:  # negations and hedges only ever cover grade-0 pairs
                assert truth == 0, (style, k, kind, cond, level, truth)
        nonzero = [c.split("__") for c in COLUMNS if row[c]]
        missing = [(c, lvl) for c, lvl in nonzero if (c, lvl) not in stated]
        assert not missing, (style, k, missing[:5])
        unnamed = {lvl for _, lvl in nonzero} - _mentioned(text)
        assert not unnamed, (style, k, sorted(unnamed), text)
        if row is ZERO:
            assert not stated


@pytest.mark.parametrize("style", STYLES)
def test_a_single_finding_is_named_with_its_level(style):
    for k, (column, grade) in enumerate([("listhesis__L4-L5", 1), ("fracture__L1", 2), ("marrow_change__L4", 3),
                                         ("canal_stenosis__C5-C6", 2), ("disc_bulge__T12-L1", 1)]):
        row = {**ZERO, column: grade}
        for seed in range(8):
            rng = np.random.default_rng([seed, k])
            text = report_text.DEVELOPMENT_STYLES[style](row, rng, report_text.draw_header(rng))
            assert column.split("__")[1] in _mentioned(text), (column, text)


def test_styles_differ_and_vary():
    rows = ROWS[2:12]
    texts = {s: [report_text.DEVELOPMENT_STYLES[s](r, np.random.default_rng([0, k]),
                                                   report_text.draw_header(np.random.default_rng(k)))
                 for k, r in enumerate(rows)] for s in STYLES}
    for style, reports in texts.items():
        assert len(set(reports)) == len(reports), style
    # impression_first opens with its numbered impression; level_by_level writes lines headed by a level
    for text in texts["impression_first"]:
        assert re.search(r"^1\. ", text, flags=re.M).start() < text.lower().index("alignment:")
    assert any(re.search(r"^(At )?[CTL]\d{1,2}[-/ ]", text, flags=re.M | re.I) for text in texts["level_by_level"])


# -- identity header --------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
def test_header_identity_is_printed(style):
    for k, row in enumerate(ROWS[:12]):
        rng = np.random.default_rng([9, k])
        header = report_text.draw_header(rng, sex="F" if k % 2 else "M", age=40.0 + k)
        text = report_text.DEVELOPMENT_STYLES[style](row, rng, header)
        last, first = header["name"].split("^")
        assert last.lower() in text.lower() and first.lower() in text.lower()
        assert header["mrn"] in text and header["accession"] in text
        assert header["radiologist"].split("^")[0].lower() in text.lower()


def test_draw_header_fields():
    header = report_text.draw_header(np.random.default_rng(1), sex="F", age=50.0)
    assert set(header) == {"name", "sex", "mrn", "accession", "birth_date", "exam_date", "referring_physician",
                           "radiologist", "signed_time", "referring"}
    assert header["sex"] == "F" and "^" in header["name"]
    years = (pd.Timestamp(header["exam_date"]) - pd.Timestamp(header["birth_date"])).days / 365.25
    assert 50.0 <= years < 51.1


# -- write_reports ----------------------------------------------------------------------------------------
def test_write_reports_is_deterministic_and_rows_independent():
    table = _table(ROWS[:20])
    style_of_row = [STYLES[k % 3] for k in range(len(table))]
    first = report_text.write_reports(table, report_text.DEVELOPMENT_STYLES, style_of_row, seed=5)
    assert list(first.columns) == ["series_id", "style", "text"]
    assert first["series_id"].tolist() == table["series_id"].tolist() and first["style"].tolist() == style_of_row
    again = report_text.write_reports(table, report_text.DEVELOPMENT_STYLES, style_of_row, seed=5)
    pd.testing.assert_frame_equal(first, again)
    other_seed = report_text.write_reports(table, report_text.DEVELOPMENT_STYLES, style_of_row, seed=6)
    assert (first["text"] != other_seed["text"]).all()

    # Other rows changed, or the table cut short: the remaining rows' texts stay the same.
    changed = table.copy()
    changed.loc[changed.index[::2], COLUMNS] = 3 - changed.loc[changed.index[::2], COLUMNS]
    second = report_text.write_reports(changed, report_text.DEVELOPMENT_STYLES, style_of_row, seed=5)
    assert (second["text"][1::2].to_numpy() == first["text"][1::2].to_numpy()).all()
    assert (second["text"][::2].to_numpy() != first["text"][::2].to_numpy()).all()
    head = report_text.write_reports(table.iloc[:7], report_text.DEVELOPMENT_STYLES, style_of_row[:7], seed=5)
    assert head["text"].tolist() == first["text"][:7].tolist()

    # The header printed on a row can be drawn again for de-identification checks.
    for k in range(len(table)):
        header = report_text.row_header(5, k, table["sex"][k], table["age"][k])
        assert header["mrn"] in first["text"][k] and header["name"].split("^")[0].lower() in first["text"][k].lower()


def test_write_reports_rejects_bad_input():
    table = _table(ROWS[:3])
    with pytest.raises(ValueError, match="columns"):
        report_text.write_reports(table.drop(columns=["fracture__L1"]), report_text.DEVELOPMENT_STYLES,
                                  ["narrative"] * 3, 0)
    with pytest.raises(ValueError, match="unknown styles"):
        report_text.write_reports(table, report_text.DEVELOPMENT_STYLES, ["narrative", "x", "narrative"], 0)
    with pytest.raises(ValueError, match="style names"):
        report_text.write_reports(table, report_text.DEVELOPMENT_STYLES, ["narrative"], 0)
    bad = table.copy()
    bad.loc[0, "fracture__L1"] = 4
    with pytest.raises(ValueError, match="0-3"):
        report_text.write_reports(bad, report_text.DEVELOPMENT_STYLES, ["narrative"] * 3, 0)
