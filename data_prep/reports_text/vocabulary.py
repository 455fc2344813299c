"""The report vocabulary: the words a site's radiologists use for each condition, severity, cue and section.

One YAML or JSON file (configs/report_vocabulary.yaml is spinejax's; docs/report_text.md is the reference)
read by `load`. Everything is checked before any report is read; a mistake is an InputError naming the key.
Phrases are lower-cased and matched as whole words by data_prep.reports_text.extract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

from spinejax.cohort import schema as cohort_schema
from spinejax.errors import InputError
from spinejax.scans import spine_labels

FORMAT_VERSION = 1
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "configs" / "report_vocabulary.yaml"
_TOP_KEYS = {"spinejax_report_vocabulary", "conditions", "other_findings", "combined", "vertebra_conditions",
             "severity", "numbered_grades", "percent_grades", "pseudo_cues", "negation", "hedge", "history",
             "terminators", "sections", "junctions", "never_correct"}
_CUE_KINDS = ("negation", "hedge", "history")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """A checked vocabulary. Phrases are lower-case; `phrases` maps each to the conditions it names."""

    phrases: dict  # phrase -> tuple of conditions; () for a finding that is not graded (other_findings)
    conditions: tuple  # every condition, in file order
    vertebra_conditions: frozenset
    severity: dict  # phrase -> grade 1..3
    numbered_words: tuple
    numbered_values: dict  # 'ii' -> 2
    percent_grades: dict  # condition -> (mild, moderate, severe) lowest percents
    pseudo_cues: tuple
    cues: dict  # (kind, 'before'|'after') -> phrases
    terminators: tuple
    skip_line: frozenset
    skip_block: frozenset
    read_sections: frozenset
    junctions: dict  # phrase -> level
    never_correct: frozenset
    fingerprint: str  # sha256 of the canonical content: what the extraction depends on

    def columns(self) -> list[str]:
        """The grade columns `<condition>__<level>` an extraction fills, in a fixed order."""
        out = []
        for condition in self.conditions:
            levels = spine_labels.VERTEBRAE if condition in self.vertebra_conditions else spine_labels.DISC_LEVELS
            out += [f"{condition}__{level}" for level in levels]
        return out


def load(path: str | Path = DEFAULT_FILE) -> Vocabulary:
    """The vocabulary in `path` (YAML or JSON), checked."""
    path = Path(path)
    return parse(cohort_schema.read_mapping_file(path), path.name)


def parse(data, source: str) -> Vocabulary:
    def fail(message: str):
        raise InputError(f"{source}: {message}")

    if not isinstance(data, dict):
        fail("the vocabulary must be a mapping of keys (conditions, severity, negation, ...)")
    if str(data.get("spinejax_report_vocabulary", "")) != str(FORMAT_VERSION):
        fail(f"spinejax_report_vocabulary: {FORMAT_VERSION} must be the first key (the format version)")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        fail(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")

    phrases: dict[str, tuple] = {}
    conditions = []
    for condition, words in _mapping(data.get("conditions"), "conditions", fail).items():
        if not _NAME.match(condition) or "__" in condition:
            fail(f"conditions.{condition}: a condition is named in lower-case letters, digits and single underscores")
        conditions.append(condition)
        for phrase in _phrases(words, f"conditions.{condition}", fail):
            phrases[phrase] = tuple(dict.fromkeys(phrases.get(phrase, ()) + (condition,)))
    if not conditions:
        fail("conditions is empty")
    for phrase in _phrases(data.get("other_findings", []), "other_findings", fail):
        if phrase in phrases:
            fail(f"other_findings: {phrase!r} also names a condition ({', '.join(phrases[phrase])})")
        phrases[phrase] = ()
    for i, block in enumerate(_list(data.get("combined", []), "combined", fail)):
        block = _mapping(block, f"combined[{i}]", fail)
        named = tuple(_phrases(block.get("conditions"), f"combined[{i}].conditions", fail))
        bad = [c for c in named if c not in conditions]
        if bad:
            fail(f"combined[{i}].conditions: {', '.join(bad)} not among conditions")
        for phrase in _phrases(block.get("phrases"), f"combined[{i}].phrases", fail):
            phrases[phrase] = tuple(dict.fromkeys(phrases.get(phrase, ()) + named))
    vertebra = frozenset(_phrases(data.get("vertebra_conditions", []), "vertebra_conditions", fail))
    if vertebra - set(conditions):
        fail(f"vertebra_conditions: {', '.join(sorted(vertebra - set(conditions)))} not among conditions")

    severity = {}
    for grade, words in _mapping(data.get("severity"), "severity", fail).items():
        if grade not in ("1", "2", "3"):
            fail(f"severity.{grade}: grades are 1 (mild), 2 (moderate) and 3 (severe)")
        for phrase in _phrases(words, f"severity.{grade}", fail):
            if phrase in severity and severity[phrase] != int(grade):
                fail(f"severity: {phrase!r} is given two grades")
            severity[phrase] = int(grade)
    numbered = _mapping(data.get("numbered_grades", {"words": [], "values": {}}), "numbered_grades", fail)
    numbered_values = {}
    for value, grade in _mapping(numbered.get("values", {}), "numbered_grades.values", fail).items():
        if str(grade) not in ("1", "2", "3"):
            fail(f"numbered_grades.values.{value}: {grade!r} is not 1, 2 or 3")
        numbered_values[value.lower()] = int(grade)
    percent = {}
    for condition, cuts in _mapping(data.get("percent_grades", {}), "percent_grades", fail).items():
        if condition not in conditions:
            fail(f"percent_grades.{condition}: not among conditions")
        values = [_number(v, f"percent_grades.{condition}", fail) for v in _list(cuts, "percent_grades", fail)]
        if len(values) != 3 or not values[0] < values[1] < values[2]:
            fail(f"percent_grades.{condition}: three increasing percents (the lowest of mild, moderate, severe)")
        percent[condition] = tuple(values)

    cues = {}
    for kind in _CUE_KINDS:
        block = _mapping(data.get(kind, {}), kind, fail)
        bad = sorted(set(block) - {"before", "after"})
        if bad:
            fail(f"{kind}: unknown key(s) {', '.join(bad)}; known: before, after")
        for side in ("before", "after"):
            cues[(kind, side)] = tuple(_phrases(block.get(side, []), f"{kind}.{side}", fail))
    sections = _mapping(data.get("sections", {}), "sections", fail)
    bad = sorted(set(sections) - {"skip_line", "skip_block", "read"})
    if bad:
        fail(f"sections: unknown key(s) {', '.join(bad)}; known: skip_line, skip_block, read")
    junctions = {}
    for phrase, level in _mapping(data.get("junctions", {}), "junctions", fail).items():
        if level not in spine_labels.DISC_LEVELS + spine_labels.VERTEBRAE:
            fail(f"junctions.{phrase}: {level!r} is not a spine level (C2..L5, C2-C3..L5-S1)")
        junctions[" ".join(phrase.lower().split())] = level

    canonical = json.dumps(data, sort_keys=True, default=str)
    return Vocabulary(
        phrases=phrases, conditions=tuple(conditions), vertebra_conditions=vertebra, severity=severity,
        numbered_words=tuple(_phrases(numbered.get("words", []), "numbered_grades.words", fail)),
        numbered_values=numbered_values, percent_grades=percent,
        pseudo_cues=tuple(_phrases(data.get("pseudo_cues", []), "pseudo_cues", fail)), cues=cues,
        terminators=tuple(_phrases(data.get("terminators", []), "terminators", fail)),
        skip_line=frozenset(_phrases(sections.get("skip_line", []), "sections.skip_line", fail)),
        skip_block=frozenset(_phrases(sections.get("skip_block", []), "sections.skip_block", fail)),
        read_sections=frozenset(_phrases(sections.get("read", []), "sections.read", fail)),
        junctions=junctions,
        never_correct=frozenset(_phrases(data.get("never_correct", []), "never_correct", fail)),
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest())


def _mapping(value, key: str, fail) -> dict:
    if not isinstance(value, dict):
        fail(f"{key} must be a mapping")
    return value


def _list(value, key: str, fail) -> list:
    if not isinstance(value, list):
        fail(f"{key} must be a list")
    return value


def _phrases(value, key: str, fail) -> list[str]:
    out = []
    for item in _list(value, key, fail):
        if not isinstance(item, str) or not item.strip():
            fail(f"{key}: {item!r} is not a word or phrase")
        out.append(" ".join(item.lower().split()))
    return out


def _number(value, key: str, fail) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        fail(f"{key}: {value!r} is not a number")
