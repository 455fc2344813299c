"""One free-text spine MRI report to graded findings: condition x level -> severity 1-3, with the sentence of each.

The method is ConText-style rules (Harkema et al. 2009) over spaCy's tokenizer and phrase matchers, driven by
a site's vocabulary (data_prep.reports_text.vocabulary; docs/report_text.md):
1. Normalise: one kind of dash; 'w/o', 'c/w', 'r/o' spelt out; misspelt vocabulary words read as the word
   meant (spelling.Speller, on the tokens the matchers see; the text itself is kept).
2. Lines: a line break inside a sentence is joined; section names decide what is read (history, comparison
   and technique are not; identity and sign-off lines are not).
3. Sentences and clauses; level expressions by pattern: notations (L4-L5, L4-5, L4/5, l4-5, L4L5, C7-T1),
   lists, ranges ('L3-4 through L5-S1', 'T11 through L1'), 'L4 on L5', junction names; a level before ':'
   at a line's start is the label of what follows on that line.
4. spaCy PhraseMatchers find condition phrases, severity words and cues (negation, hedge, history, pseudo
   cues, terminators); numbered grades ('Meyerding grade II', 'Genant 2') and percentages by pattern.
5. Each condition phrase gets a severity (the nearest severity word before it in its phrase, else one just
   after it), levels (those it owns in its clause, else its sentence's, else its line's label) and its cues
   (a cue before it in its clause up to a terminator, or right after it).
6. A finding is a condition phrase with a severity, no cue, levels of its kind, in a section that is read.
   A level's grade is its worst finding. Words that name nothing (an unmentioned level) mean grade 0.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
import sys

from data_prep.reports_text import spelling
from data_prep.reports_text.vocabulary import Vocabulary
from spinejax.scans import spine_labels

# spaCy's thinc imports torch whenever it is installed (1.3 s per process, measured) to offer layers a tokenizer
# and phrase matchers never use; hide it while spaCy loads, then give it back to whoever imports it later.
_HIDE_TORCH = "torch" not in sys.modules
if _HIDE_TORCH:
    sys.modules["torch"] = None  # an import of torch now raises ImportError: thinc goes without it
try:
    import spacy
    from spacy.matcher import PhraseMatcher
    from spacy.tokens import Doc
finally:
    if _HIDE_TORCH:
        del sys.modules["torch"]

_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]|_")
_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
                         "\u00a0": " ", "\t": " "})
_SPELLED = [(re.compile(r"\bw/o\b", re.I), "without"), (re.compile(r"\bc/w\b", re.I), "consistent with"),
            (re.compile(r"\br/o\b", re.I), "rule out"), (re.compile(r"\bs/p\b", re.I), "status post"),
            (re.compile(r"\bw/\s", re.I), "with ")]
_VERTEBRA_ORDER = ("C1",) + spine_labels.VERTEBRAE + ("S1",)  # C1 and S1 close ranges; they are not graded
_INDEX = {name: i for i, name in enumerate(_VERTEBRA_ORDER)}
_LEVEL = r"([CTLS])\s?(\d{1,2})"
# Order matters: 'L4 on L5' and disc notations before single vertebrae.
# One pass finds every level expression: 'L4 on L5', a disc ('L4-L5', 'L4-5', 'L4/5', 'L4 - L5', 'T12-L1'), a
# glued disc ('L4L5'), or a vertebra ('L1'); a disc notation between non-neighbours is a run of vertebrae.
_ANY_LEVEL = re.compile(r"(?<![A-Za-z0-9])([CTLS])\s?(\d{1,2})(?:(\s+on\s+)([CTLS])\s?(\d{1,2})"
                        r"|\s*(?:-|/|_)\s*([CTLS])?\s?(\d{1,2})|([CTLS])(\d{1,2}))?(?![0-9])", re.I)
_LEADING_LEVEL = re.compile(r"(?<![A-Za-z0-9])([CTL])\s?(\d{1,2})"
                            r"(?:\s*(?:-|/|_)\s*([CTLS])?\s?(\d{1,2})|[CTLS]\d{1,2})?(?![0-9])", re.I)
_RANGE_WORD = re.compile(r"^\s*(?:through|thru|to|till|until|-)\s*$", re.I)
_LIST_GAP_AFTER_COMMA = re.compile(r"\s*(?:and|or)?\s*(?:at\s+)?(?:the\s+)?", re.I)
_LIST_GAP = re.compile(r"^\s*(?:,|and|,\s*and|&|or|,\s*or|/)\s*$", re.I)
_LABEL_TAIL = re.compile(r"^\s*(?:disc|disk|level|levels|disc level|intervertebral disc|vertebra|vertebral body)?"
                         r"\s*(?::|\s-\s|\s--\s)", re.I)  # 'L4-L5:', 'L4/5 disc:', 'C3-C4 - '

_LIST_MARKER = re.compile(r"^(\s*)(?:\d{1,2}[.)]|[-*\u2022o]\s|\(\d{1,2}\))\s*")
_WEIGHTING = re.compile(r"\s*-?\s*(?:signal|weight|w\b|wi\b|hyper|hypo|intens|sequence|image|imaging|bright|dark|"
                        r"stir|flair|and\s+t[12]|/t[12]|,\s*t[12])", re.I)
_COLON_AFTER = re.compile(r"\s*(?:\([^)]{0,30}\))?\s*:|(?:\s+[\w-]+){0,3}?\s+(?:is|are)\b(?:\s+(?:seen|present|noted|"
                          r"identified))?\s*[,:]?\s+(?=\S)", re.I)
_HEADING = re.compile(r"^\s*(?:[A-Za-z][A-Za-z ]{0,30}:)?\s*$")
# '20-25%' is a range: its lower end grades it (the contract's classes start there).
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)(?:\s*(?:-|to)\s*\d{1,3}(?:\.\d+)?)?\s?(?:%|percent|per cent)", re.I)
_SENTENCE_END = re.compile(r"[.;!](?=\s|$)")
_LABEL_STARTS = set("CTLctlAa")  # a line opening with a level label starts with a level or 'At'
_ABBREVIATIONS = {"dr", "vs", "approx", "mr", "ms", "no", "st", "e.g", "i.e", "fig", "ca"}
_BRACKET_OPEN = re.compile(r"\s*\(")
_BRACKET_GLUE = re.compile(r"\b(?:and|or|with|i\.e|ie|both)\b|[,/&.\s]", re.I)
_CLAUSE_END = re.compile(r"[,;:]")  # not brackets: 'a moderate (Genant 2) wedge fracture' is one phrase
# Words that may follow a severity placed after its condition ('stenosis of moderate degree').
_AFTER_SEVERITY = {"degree", "severity", "in", "extent", "size", "grade", "type", "at", "of", "and", "or", "on",
                   "the", "level", "levels"}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One graded finding: its column `<condition>__<level>`, grade 1-3 and the sentence it came from."""

    column: str
    grade: int
    sentence: str


@dataclasses.dataclass
class Extraction:
    """What one report says: grades (column -> worst grade, nonzero only), every finding, and counts of
    condition phrases set aside, by reason (negated, hedged, history, no_severity, no_level, skipped_section)."""

    grades: dict
    findings: list
    set_aside: dict


@dataclasses.dataclass(frozen=True)
class _Span:
    start: int  # characters in the normalised text
    end: int
    label: object  # conditions tuple, grade, cue kind or level list


class Extractor:
    """Reads reports with one vocabulary. Build once (spaCy matchers), then `extract` many texts."""

    def __init__(self, vocabulary: Vocabulary):
        self.vocabulary = vocabulary
        self.nlp = spacy.blank("en")
        self.speller = spelling.Speller(
            [w for p in list(vocabulary.phrases) + list(vocabulary.severity) for w in p.split()],
            vocabulary.never_correct | _cue_words(vocabulary))
        groups = {"condition": vocabulary.phrases, "severity": vocabulary.severity,
                  "pseudo": dict.fromkeys(vocabulary.pseudo_cues), "terminator": dict.fromkeys(vocabulary.terminators),
                  "junction": vocabulary.junctions}
        for (kind, side), phrases in vocabulary.cues.items():
            groups[f"{kind}:{side}"] = dict.fromkeys(phrases)
        # One matcher over every phrase (one pass per report); a match id says its group and what it names.
        self._matcher = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        self._named = {}
        for group, phrases in groups.items():
            for phrase, label in phrases.items():
                key = f"{group}\t{phrase}"
                self._matcher.add(key, [self.tokens(phrase)[0]])
                self._named[self.nlp.vocab.strings[key]] = (group, group if label is None else label)
        self._groups = tuple(groups)
        numbered = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(vocabulary.numbered_words, key=len,
                                                                                 reverse=True))
        values = "|".join(re.escape(v) for v in sorted(vocabulary.numbered_values, key=len, reverse=True))
        self._numbered = (re.compile(rf"(?<![A-Za-z])(?:{numbered})\.?\s*({values})(?![A-Za-z0-9])", re.I)
                          if numbered and values else None)

    def tokens(self, text: str):
        """(spaCy Doc of `text`'s words, numbers and punctuation marks, [(start, end)] of each in `text`).

        Words and numbers apart ('t2' is 't', '2'; 'broad-based' is three tokens), for the text and for the
        vocabulary's phrases alike. Measured 4-5x faster than spaCy's rule-based English tokenizer on these
        reports, which is most of a report's time; the matchers are spaCy's either way."""
        matches = list(_TOKEN.finditer(text))
        correct = self.speller.correct
        words = [w if len(w) < 4 else correct(w) or w for w in (m.group() for m in matches)]
        return Doc(self.nlp.vocab, words=words, spaces=[True] * len(words)), [m.span() for m in matches]

    def normalise(self, text: str) -> str:
        text = text.translate(_DASHES).replace("\r\n", "\n").replace("\r", "\n")
        for pattern, words in _SPELLED:
            text = pattern.sub(words, text)
        return text

    def extract(self, text: str) -> Extraction:
        """The findings of one report (module docstring)."""
        text = self.normalise(text if isinstance(text, str) else "")
        text, lines = _logical_lines(text, self._section_of)
        doc, offsets = self.tokens(text)
        found = {group: [] for group in self._groups}
        for match_id, start, end in self._matcher(doc):
            group, label = self._named[match_id]
            found[group].append(_Span(offsets[start][0], offsets[end - 1][1], label))
        for spans in found.values():
            spans.sort(key=lambda s: (s.start, -s.end))
        severities = self._severities(text, found["severity"])
        conditions = _adjacent_merged(text, _longest(found["condition"]), severities)
        pseudo = _occupied(len(text), found["pseudo"])
        every_cue = _Sorted(sorted((c for name, spans in found.items() if ":" in name for c in spans
                                    if pseudo.find(1, c.start, c.end) < 0), key=lambda c: c.start))
        terminators = _Sorted(found["terminator"])
        # A level inside a condition phrase ('loss of T2 signal') or naming an MRI weighting is not a level.
        in_phrase = _occupied(len(text), conditions)
        levels = _Sorted([lv for lv in _levels(text, found["junction"])
                          if in_phrase.find(0, lv.start, lv.end) >= 0
                          and not (lv.label[0] == "vertebra" and lv.label[1] in ("T1", "T2")
                                   and _WEIGHTING.match(text, lv.end))])
        conditions, severities = _Sorted(conditions), _Sorted(severities)
        grades, findings = {}, []
        set_aside = dict.fromkeys(("negated", "hedged", "history", "no_severity", "no_level", "skipped_section"), 0)

        sentence_text = {}

        def record(conditions_named, grade, owned, s_start, s_end) -> None:
            placed = False
            for condition in conditions_named:
                for level in self._levels_of_kind(condition, owned):
                    column = f"{condition}__{level}"
                    grades[column] = max(grades.get(column, 0), grade)
                    if s_start not in sentence_text:
                        sentence_text[s_start] = " ".join(text[s_start:s_end].split())
                    findings.append(Finding(column, grade, sentence_text[s_start]))
                    placed = True
            if not placed:
                set_aside["no_level"] += 1

        held = []  # a label's levels hold for the lines after it, up to another label, section or blank line
        for line_start, line_end, read, new_block in lines:
            line_conditions = conditions.within(line_start, line_end)
            body = text[line_start:line_end].strip()
            if not line_conditions and body[:1] not in _LABEL_STARTS and not body.endswith(":"):
                if new_block:  # nothing here can be a label or a finding: skip the line's level search
                    held = []
                continue
            line_levels = levels.within(line_start, line_end)
            label = _label_levels(text, line_start, line_levels)
            if label[0]:
                held = label[0]
            elif new_block:
                held = []
            label = (label[0] or held, label[1])
            trailing = _trailing_label(text, line_start, line_end, line_levels)
            if trailing:  # '... C5-C6:' ending a line labels the lines after it
                held = trailing
            if not line_conditions:
                continue
            if not read:
                set_aside["skipped_section"] += sum(bool(m.label) for m in line_conditions)
                continue
            carried = ()  # the condition a sentence without one speaks of ('Disc bulges: mild at X; moderate at Y')
            for s_start, s_end in _sentences(text, line_start, line_end):
                mentions = [m for m in line_conditions if s_start <= m.start and m.end <= s_end]
                if not mentions and not carried:
                    continue
                s_levels = [lv for lv in levels.within(s_start, s_end) if lv not in label[1]]
                s_severities = severities.within(s_start, s_end)
                s_cues = every_cue.within(s_start, s_end)
                head = mentions[0] if mentions and _is_condition_label(text, mentions[0], s_start) else None
                if head is not None and len(mentions) == 1:
                    carried = head.label
                    mentions = []
                if not mentions:
                    if carried:
                        start = head.end if head is not None else s_start
                        for grade, owned, a, b in _groups(text, start, s_end, s_severities, s_levels):
                            cue = next((c.label for c in s_cues if a <= c.start < b), None)
                            if cue:
                                set_aside[_REASONS[cue.split(":")[0]]] += 1
                            else:
                                record(carried, grade, owned or label[0], s_start, s_end)
                    if text[s_end - 1:s_end] != ";" and head is None:
                        carried = ()
                    continue
                clauses = _clauses(text, s_start, s_end, s_levels)
                taken = _left_severities(text, mentions, s_severities, clauses, s_levels)
                sentence_terminators = terminators.within(s_start, s_end)
                for m in mentions:
                    if not m.label:  # a finding that is not graded: it only takes its own words
                        continue
                    cue = self._cue(text, m, mentions, s_cues, sentence_terminators)
                    if cue:
                        set_aside[cue] += 1
                        continue
                    grade = taken.get(m) or _right_severity(text, m, mentions, s_severities, s_end)
                    if not grade:
                        grade = self._percent_grade(text, m, clauses)
                    if not grade:
                        set_aside["no_severity"] += 1
                        continue
                    owned = _owned_levels(m, mentions, s_levels, clauses) or label[0]
                    record(m.label, grade, owned, s_start, s_end)
                carried = mentions[-1].label if text[s_end - 1:s_end] == ";" else ()
        return Extraction(grades, findings, set_aside)

    # -- pieces -------------------------------------------------------------------------------------------

    def _section_of(self, name: str) -> str | None:
        """'skip_line', 'skip_block', 'read' or None (not a section name)."""
        name = " ".join(name.lower().replace(".", " ").split())
        if name in self.vocabulary.skip_line:
            return "skip_line"
        if name in self.vocabulary.skip_block:
            return "skip_block"
        if name in self.vocabulary.read_sections:
            return "read"
        return None

    def _severities(self, text: str, words: list[_Span]) -> list[_Span]:
        """Severity words and numbered grades; 'mild to moderate' and 'moderate-severe' as their worse end."""
        spans = list(words)
        if self._numbered:
            for match in self._numbered.finditer(text):
                spans.append(_Span(match.start(), match.end(), self.vocabulary.numbered_values[match.group(1).lower()]))
        spans = _longest(spans)
        merged = []
        for span in spans:
            if merged and re.fullmatch(r"\s*(?:-|to|/|or)\s*", text[merged[-1].end:span.start], re.I):
                merged[-1] = _Span(merged[-1].start, span.end, max(merged[-1].label, span.label))
            else:
                merged.append(span)
        return merged

    def _cue(self, text: str, mention: _Span, mentions: list, cues: list, terminators: list) -> str | None:
        """'negated', 'hedged' or 'history' when a cue's scope covers `mention` (negation first), else None.
        cues: the sentence's cue spans, labelled '<kind>:before' or '<kind>:after'."""
        found = set()
        for cue in cues:
            kind, side = cue.label.split(":")
            if side == "before":
                covers = cue.end <= mention.start and _in_scope(text, cue.end, mention.start, terminators, 8)
            else:
                covers = (cue.start >= mention.end and _in_scope(text, mention.end, cue.start, terminators, 5)
                          and not any(mention.end <= m.start < cue.start for m in mentions))
            if covers:
                found.add(kind)
        return next((_REASONS[k] for k in ("negation", "hedge", "history") if k in found), None)

    def _percent_grade(self, text: str, mention: _Span, clauses) -> int:
        cuts = [self.vocabulary.percent_grades.get(c) for c in mention.label]
        cuts = next((c for c in cuts if c), None)
        if not cuts:
            return 0
        start, end = next(((a, b) for a, b in clauses if a <= mention.start < b), (mention.start, mention.end))
        for match in _PERCENT.finditer(text, start, end):
            value = float(match.group(1))
            return sum(value >= cut for cut in cuts)
        return 0

    def _levels_of_kind(self, condition: str, owned: list) -> list[str]:
        """The graded levels of `condition` that `owned` level expressions name (module docstring, step 3)."""
        vertebral = condition in self.vocabulary.vertebra_conditions
        out = []
        for kind, first, last in owned:
            if vertebral:
                if kind == "disc":  # a disc level's two vertebrae ('Modic change at L4-5')
                    names = [first.split("-")[0], last.split("-")[1]]
                    names = _VERTEBRA_ORDER[_INDEX[names[0]]:_INDEX[names[1]] + 1]
                else:
                    names = _VERTEBRA_ORDER[_INDEX[first]:_INDEX[last] + 1]
                out += [n for n in names if n in spine_labels.VERTEBRAE]
            elif kind == "disc":
                a, b = _INDEX[first.split("-")[0]], _INDEX[last.split("-")[0]]
                out += [f"{_VERTEBRA_ORDER[i]}-{_VERTEBRA_ORDER[i + 1]}" for i in range(a, b + 1)]
            elif first != last:  # 'C3-C7 disc degeneration': the discs between the vertebrae
                a, b = _INDEX[first], _INDEX[last]
                out += [f"{_VERTEBRA_ORDER[i]}-{_VERTEBRA_ORDER[i + 1]}" for i in range(a, b)]
            elif condition == "listhesis" and first != "S1":  # 'retrolisthesis of L3': over the disc below
                i = _INDEX[first]
                out.append(f"{_VERTEBRA_ORDER[i]}-{_VERTEBRA_ORDER[i + 1]}")
        return [lv for lv in dict.fromkeys(out) if lv in spine_labels.DISC_LEVELS or lv in spine_labels.VERTEBRAE]


_REASONS = {"negation": "negated", "hedge": "hedged", "history": "history"}


def _is_condition_label(text: str, mention: _Span, sentence_start: int) -> bool:
    """A condition phrase opening its sentence and followed by ':' ('Disc bulges: mild at L4-5')."""
    return bool(_HEADING.match(text[sentence_start:mention.start]) and _COLON_AFTER.match(text, mention.end))


def _groups(text: str, start: int, end: int, severities: list, levels: list) -> list[tuple]:
    """[(grade, levels, from, to)]: each severity word with the levels after it up to the next severity word
    (levels before the first go with the first): 'mild at C5-6 and C6-7; moderate at L4-5'."""
    words = [s for s in severities if start <= s.start < end]
    out = []
    for k, severity in enumerate(words):
        begin = start if k == 0 else words[k - 1].end
        stop = words[k + 1].start if k + 1 < len(words) else end
        owned = [lv.label for lv in levels if (begin if k == 0 else severity.end) <= lv.start < stop]
        out.append((severity.label, owned, begin, stop))
    return out


class _Sorted:
    """Spans sorted by start, for the ones inside a range in logarithmic time."""

    def __init__(self, spans: list[_Span]):
        self.spans = spans
        self.starts = [s.start for s in spans]

    def within(self, a: int, b: int) -> list[_Span]:
        return [s for s in self.spans[bisect.bisect_left(self.starts, a):bisect.bisect_left(self.starts, b)]
                if s.end <= b]


def _occupied(length: int, spans: list[_Span]) -> bytearray:
    """1 at each character some span covers."""
    taken = bytearray(length)
    for s in spans:
        taken[s.start:s.end] = b"\x01" * (s.end - s.start)
    return taken


def _cue_words(vocabulary: Vocabulary) -> set[str]:
    words = set()
    for phrases in list(vocabulary.cues.values()) + [vocabulary.terminators, vocabulary.pseudo_cues]:
        words |= {w for p in phrases for w in p.split()}
    return words


def _longest(spans: list[_Span]) -> list[_Span]:
    """Overlapping spans reduced to the longest (then the first)."""
    out, taken = [], bytearray(max((s.end for s in spans), default=0))
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
        if taken.find(1, span.start, span.end) < 0:
            out.append(span)
            taken[span.start:span.end] = b"\x01" * (span.end - span.start)
    return sorted(out, key=lambda s: s.start)


def _adjacent_merged(text: str, spans: list[_Span], severities: list[_Span]) -> list[_Span]:
    """Neighbouring phrases of the same conditions as one ('Modic' + 'type 2 endplate'), and a phrase with the
    brackets that spell it out ('degenerative disc disease (desiccation and height loss)')."""
    out = []
    k = 0
    while k < len(spans):
        span = spans[k]
        if out and out[-1].label == span.label and not text[out[-1].end:span.start].strip(" -"):
            out[-1] = _Span(out[-1].start, span.end, span.label)
            k += 1
            continue
        opening = _BRACKET_OPEN.match(text, span.end)
        if opening and span.label:
            closing = text.find(")", opening.end())
            inside = [s for s in spans[k + 1:] if s.start >= opening.end() and s.end <= closing] if closing > 0 else []
            rest = text[opening.end():closing]
            for s in reversed(inside):
                rest = rest[:s.start - opening.end()] + rest[s.end - opening.end():]
            graded_inside = any(opening.end() <= s.start < closing for s in severities)
            if inside and not graded_inside and len(_BRACKET_GLUE.sub(" ", rest).split()) <= 3:  # an apposition
                named = tuple(dict.fromkeys(span.label + tuple(c for s in inside for c in s.label)))
                out.append(_Span(span.start, closing + 1, named))
                k += 1 + len(inside)
                continue
        out.append(span)
        k += 1
    return out


def _logical_lines(text: str, section_of) -> tuple[str, list[tuple[int, int, bool]]]:
    """(text with list markers blanked and in-sentence line breaks joined, [(start, end, read, new block)] per
    logical line; a new block follows a blank line or opens a section). Lengths are kept, so character offsets
    stay valid."""
    raw = text.split("\n")
    chars = list(text)
    offset, starts = 0, []
    for line in raw:
        starts.append(offset)
        offset += len(line) + 1
    # Blank list markers ('1.', '2)', '-') at line starts: they are not sentence ends.
    for start, line in zip(starts, raw):
        match = _LIST_MARKER.match(line)
        if match and match.end() > len(match.group(1)):
            for i in range(start + len(match.group(1)), start + match.end()):
                chars[i] = " "
    text = "".join(chars)
    raw = text.split("\n")
    joined = []  # indices of line breaks that continue a sentence
    for k in range(len(raw) - 1):
        here, after = raw[k].rstrip(), raw[k + 1].strip()
        if here and after and here[-1] not in ".:!" and not _starts_section(after, section_of) \
                and not _starts_with_level_label(after) and not after[0].isdigit():
            joined.append(starts[k] + len(raw[k]))
    chars = list(text)
    for i in joined:
        chars[i] = " "
    text = "".join(chars)
    lines, state, position = [], "read", 0
    blank = True
    for line in text.split("\n"):
        start, end = position, position + len(line)
        position = end + 1
        stripped = line.strip()
        if not stripped:
            state = "read" if state == "skip_block" else state
            blank = True
            continue
        section = _starts_section(stripped, section_of)
        if section:
            state = section
        elif _starts_with_level_label(stripped) and state == "skip_block":
            state = "read"
        lines.append((start, end, state == "read", blank or bool(section)))
        blank = False
        if state == "skip_line":
            state = "read"
    return text, lines


def _starts_section(line: str, section_of) -> str | None:
    head = line.split(":", 1)[0] if ":" in line else line.rstrip(".")
    if len(head) > 40:
        return None
    return section_of(head)


def _starts_with_level_label(line: str) -> bool:
    match = _LEADING_LEVEL.match(line)
    return bool(match and _LABEL_TAIL.match(line[match.end():]))


def _levels(text: str, junctions: list[_Span]) -> list[_Span]:
    """Level expressions [(kind, first, last)] as spans: discs, vertebrae, ranges and lists merged into runs."""
    found, taken = [], bytearray(len(text))

    def free(a, b):
        return taken.find(1, a, b) < 0

    for m in _ANY_LEVEL.finditer(text):
        upper = f"{m.group(1).upper()}{int(m.group(2))}"
        if upper not in _INDEX:
            continue
        if m.group(3):  # 'L4 on L5'
            lower, kind = f"{m.group(4).upper()}{int(m.group(5))}", "on"
        elif m.group(7):  # 'L4-L5', 'L4-5', 'L4/5', 'T11-L1'
            lower, kind = f"{(m.group(6) or m.group(1)).upper()}{int(m.group(7))}", "disc"
        elif m.group(8):  # 'L4L5'
            lower, kind = f"{m.group(8).upper()}{int(m.group(9))}", "glued"
        else:
            lower, kind = upper, "vertebra"
        if kind != "vertebra" and (lower not in _INDEX or _INDEX[lower] <= _INDEX[upper]
                                   or (kind != "disc" and _INDEX[lower] != _INDEX[upper] + 1)):
            lower, kind = upper, "vertebra"  # not a disc level: the first vertebra alone
            end = m.end(2)
        else:
            end = m.end()
        if kind == "vertebra":
            found.append(_Span(m.start(), end, ("vertebra", upper, upper)))
        elif _INDEX[lower] == _INDEX[upper] + 1:
            found.append(_Span(m.start(), end, ("disc", f"{upper}-{lower}", f"{upper}-{lower}")))
        else:  # 'T11-L1', 'C3-C7': a run of vertebrae
            found.append(_Span(m.start(), end, ("vertebra", upper, lower)))
        taken[m.start():end] = b"\x01" * (end - m.start())
    for j in junctions:
        if free(j.start, j.end):
            found.append(_Span(j.start, j.end, ("disc", j.label, j.label) if "-" in j.label else
                               ("vertebra", j.label, j.label)))
    found.sort(key=lambda s: s.start)
    merged = []  # ranges: 'L3-4 through L5-S1', 'T11 to L1', 'from C3-4 to C6-7'
    for span in found:
        if merged and _RANGE_WORD.match(text[merged[-1].end:span.start]) and merged[-1].label[0] == span.label[0]:
            kind, first, _ = merged[-1].label
            if _INDEX[span.label[2].split("-")[0]] > _INDEX[first.split("-")[0]]:
                merged[-1] = _Span(merged[-1].start, span.end, (kind, first, span.label[2]))
                continue
        merged.append(span)
    return merged


def _label_levels(text: str, line_start: int, levels: list[_Span]) -> tuple[list, list]:
    """(level expressions of the line's label 'L4-L5:' / 'L3-4 and L4-5:', their spans); empty when none."""
    spans, position = [], line_start
    while position < len(text) and text[position] == " ":
        position += 1
    if text[position:position + 3].lower() == "at ":
        position += 3
    for level in levels:
        if level.start < position:
            continue
        gap = text[position:level.start]
        if level.start == position or (spans and _LIST_GAP.match(gap)):
            spans.append(level)
            position = level.end
        else:
            break
    if spans and _LABEL_TAIL.match(text[position:]):
        return [s.label for s in spans], spans
    return [], []


def _trailing_label(text: str, start: int, end: int, levels: list[_Span]) -> list:
    """The levels of a label that ends its line ('... there is also foraminal narrowing. C5-C6:'), else []."""
    tail = text[start:end].rstrip()
    if not tail.endswith(":") or not levels:
        return []
    last = levels[-1]
    if _LABEL_TAIL.match(text[last.end:start + len(tail)]) and not text[last.end:start + len(tail)].strip(" :"):
        run = [last]
        for level in reversed(levels[:-1]):
            if _LIST_GAP.match(text[level.end:run[0].start]):
                run.insert(0, level)
            else:
                break
        return [lv.label for lv in run]
    return []


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """A line cut after each '.', ';' or '!' followed by a space (not after 'Dr.', 'vs.', 'No.')."""
    out, position = [], start
    for match in _SENTENCE_END.finditer(text, start, end):
        i = match.start()
        before = text[max(start, i - 7):i].rsplit(None, 1)
        if text[i] == "." and before and before[-1].lower() in _ABBREVIATIONS:
            continue
        if match.end() > position:
            out.append((position, match.end()))
            position = match.end()
    if text[position:end].strip():
        out.append((position, end))
    return out


def _clauses(text: str, start: int, end: int, levels: list[_Span]) -> list[tuple[int, int]]:
    """A sentence cut at commas, semicolons, colons and brackets, except a comma inside a list of levels."""
    cuts = []
    for match in _CLAUSE_END.finditer(text, start, end):
        i = match.start()
        if text[i] == ",":
            before = any(lv.end <= i and not text[lv.end:i].strip() for lv in levels)
            after = any(lv.start > i and _LIST_GAP_AFTER_COMMA.fullmatch(text, i + 1, lv.start) for lv in levels)
            if before and after:
                continue
        cuts.append(i)
    bounds, position = [], start
    for i in cuts:
        bounds.append((position, i))
        position = i + 1
    bounds.append((position, end))
    return [(a, b) for a, b in bounds if b > a]


def _clause_of(position: int, clauses) -> tuple[int, int]:
    return next(((a, b) for a, b in clauses if a <= position < b), clauses[-1])


def _words_between(text: str, a: int, b: int) -> int:
    return len(text[a:b].split())


def _left_severities(text: str, mentions: list, severities: list, clauses, levels) -> dict:
    """Each mention's severity word before it in its phrase: after the previous mention, level or clause cut,
    at most 5 words back. Returns {mention: grade}."""
    out = {}
    for k, m in enumerate(mentions):
        start, _ = _clause_of(m.start, clauses)
        if k and mentions[k - 1].end > start:
            start = mentions[k - 1].end
        candidates = [s for s in severities if start <= s.start and s.end <= m.start
                      and _words_between(text, s.end, m.start) <= 5
                      and not any(s.end <= lv.start and lv.end <= m.start for lv in levels)]
        if candidates:
            out[m] = candidates[-1].label
    return out


def _right_severity(text: str, m: _Span, mentions: list, severities: list, end: int) -> int:
    """A severity word just after the mention ('stenosis, moderate', 'bulge (mild)', 'anterolisthesis of L4 on
    L5, grade 1'), not one that belongs to the next mention."""
    following = [x for x in mentions if x.start >= m.end]
    limit = following[0].start if following else end
    for s in severities:
        if m.end <= s.start and s.end <= limit and _words_between(text, m.end, s.start) <= 7:
            owner = next((x for x in following if x.start >= s.end and _words_between(text, s.end, x.start) <= 3
                          and not re.search(r"[,;:.]", text[s.end:x.start])), None)
            # 'moderate' in 'osteophytes causing moderate foraminal narrowing' describes another noun
            describes = re.match(r"[^,;:.()]*", text[s.end:limit]).group(0).lower().split()
            if owner is None and not re.search(r"[;.]", text[m.end:s.start]) \
                    and set(describes) <= _AFTER_SEVERITY:
                return s.label
    return 0


def _in_scope(text: str, a: int, b: int, terminators: list, max_words: int) -> bool:
    """Nothing between positions a and b ends a cue's scope: no terminator, comma or semicolon, few words."""
    if _words_between(text, a, b) > max_words or re.search(r"[,;.]", text[a:b]):
        return False
    return not any(a <= t.start and t.end <= b for t in terminators)


def _owned_levels(m: _Span, mentions: list, levels: list, clauses) -> list:
    """The levels a mention is about (module docstring, step 5)."""
    start, end = _clause_of(m.start, clauses)
    in_clause = [lv for lv in levels if start <= lv.start < end]
    following = [x for x in mentions if x.start >= m.end and x.start < end]
    preceding = [x for x in mentions if x.end <= m.start and x.start >= start]
    after = [lv for lv in in_clause if lv.start >= m.end and (not following or lv.start < following[0].start)]
    if after:
        return [lv.label for lv in after]
    before = [lv for lv in in_clause if lv.end <= m.start and (not preceding or lv.start > preceding[-1].end)]
    if before:
        return [lv.label for lv in before]
    if in_clause:
        nearest = min(in_clause, key=lambda lv: abs(lv.start - m.start))
        return [nearest.label]
    # No level in its clause: the nearest clause of the sentence that has one, the previous first.
    here = clauses.index((start, end)) if (start, end) in clauses else 0
    order = sorted(range(len(clauses)), key=lambda i: (abs(i - here), i > here))
    for i in order:
        a, b = clauses[i]
        owned = [lv.label for lv in levels if a <= lv.start < b]
        if owned:
            return owned
    return []
