"""Held-out site report templates: two hospitals whose reports the extractor was never developed on.

A report extractor (free text -> grades) is developed on the synthetic cohort's development templates.
To measure how it generalises to a new hospital, the cohort can also write its reports in the two house
styles here, which the extractor's developer never sees:

- "teaching_hospital": a European (British-English) university hospital neuroradiology section. Header
  block with hospital number, "Clinical details:" with a query ("?fracture"), a technique line that names
  levels, and findings either as a systematic condition-by-condition checklist ("Disc bulges: small at
  C5/6; moderate at L4/5.") or as regional prose paragraphs; a numbered or prose "Conclusion:"/"Opinion:",
  a consultant sign-off with a timestamp; British spelling ("oedema", "calibre", "haemangioma").
- "dictation": a US private-practice group dictating into speech recognition. Capitalised header fields,
  "HISTORY: ... r/o stenosis", "COMPARISON:" with a date, level-first telegraphic lines ("L4-5: mod DDD;
  small broad-based bulge; mild central canal stenosis"), range lines for the thoracic spine, a numbered
  IMPRESSION, electronic signature and a voice-recognition disclaimer; dictation artefacts (lowercase
  sentence starts, missing periods, a "period" left in, a doubled word, the odd typo).

Both follow the cohort's language contract: every nonzero grade is stated at its exact level with a word of
its grade; negations, normal statements and hedges only ever cover grade-0 pairs; ranges and lists only
join levels of the same condition and grade. A style is `style(grades, rng, header) -> str`; everything it
varies comes from `rng`, so it is deterministic given the generator's state.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from data_prep.phantom import findings, identity
from data_prep.phantom.dice import Dice
from spinejax.scans import spine_labels

Style = Callable[[Mapping[str, int], np.random.Generator, Mapping[str, str]], str]

DISCS: tuple[str, ...] = spine_labels.DISC_LEVELS
VERTS: tuple[str, ...] = spine_labels.VERTEBRAE
DISC_CONDITIONS = tuple(c for c, (_, _, kind) in findings.GRADING.items() if kind == "disc")
VERTEBRA_CONDITIONS = tuple(c for c, (_, _, kind) in findings.GRADING.items() if kind == "vertebra")
_COLUMNS = {c: tuple(f"{c}__{lv}" for lv in (DISCS if kind == "disc" else VERTS))
            for c, (_, _, kind) in findings.GRADING.items()}
_N = len(DISCS)
assert len(VERTS) == _N and all(d.split("-")[0] == v for d, v in zip(DISCS, VERTS))

# Disc index ranges of the three regions as each site lays its report out, and the (wider, overlapping)
# sets a region-wide normal statement is taken to cover: "the cervical discs" may be read to include C7-T1,
# "the thoracic discs" C7-T1 and T12-L1, "the lumbar discs" T12-L1.
_CERV, _THOR, _LUMB = range(0, 6), range(6, 17), range(17, 23)
_COVER = {"cervical": range(0, 6), "thoracic": range(5, 18), "lumbar": range(17, 23)}
_VREGION = {"cervical": range(0, 6), "thoracic": range(6, 18), "lumbar": range(18, 23)}


def _disc_forms(level: str) -> dict[str, str]:
    upper, lower = level.split("-")
    short = f"{upper}-{lower[1:]}" if upper[0] == lower[0] else level
    return {"dash": level, "short": short, "slash": short.replace("-", "/"), "slashfull": f"{upper}/{lower}",
            "spaced": f"{upper} - {lower}", "lower": short.lower(), "concat": upper + lower}


_FORMS = {key: tuple(_disc_forms(lv)[key] for lv in DISCS) for key in _disc_forms(DISCS[0])}
_JUNCTIONS = {DISCS.index("C7-T1"): "the cervicothoracic junction",
              DISCS.index("T12-L1"): "the thoracolumbar junction", DISCS.index("L5-S1"): "the lumbosacral junction"}
_PAIRS = tuple(tuple(lv.split("-")) for lv in DISCS)


def _w(*pairs) -> tuple:
    """Weighted choice list: _w(("mild", 3), ("slight", 1)) -> ("mild", "mild", "mild", "slight")."""
    return tuple(item for item, weight in pairs for _ in range(weight))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(text: str) -> str:
    return ("an " if text[:1] in "aeiou" else "a ") + text


def _runs(idxs: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in idxs:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _parse_date(text: str) -> dt.date | None:
    text = text.strip()
    if len(text) == 8 and text.isdigit():
        try:
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            return None
    for fmt in ("%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    return None


def _split_name(text: str) -> tuple[str, str]:
    """(first, last) of a 'LAST^FIRST', 'Last, First' or 'First Last' name."""
    text = text.strip()
    if "^" in text:
        last, first = text.split("^", 1)
        return first.replace("^", " ").strip(), last.strip()
    if "," in text:
        last, first = text.split(",", 1)
        return first.strip(), last.strip()
    parts = text.split()
    return " ".join(parts[:-1]), (parts[-1] if parts else "")


def _doctor(text: str) -> str:
    """The name of a doctor without its title: 'Dr. K. Tanaka' -> 'K. Tanaka', 'HANSEN^PETER' -> 'Peter Hansen'."""
    text = text.strip()
    if "^" in text:
        first, last = _split_name(text)
        return f"{first.title()} {last.title()}".strip()
    for title in ("Dr. ", "Dr ", "DR. ", "DR "):
        if text.startswith(title):
            text = text[len(title):]
    for suffix in (", MD", " MD", ", M.D."):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    return text.strip()


# ----------------------------------------------------------------------------------------------------------
# Vocabulary of each site (all inside the contract's lists; see the module docstring)

_DEGEN = ("disc_desiccation", "disc_height_loss", "ddd", "disc_osteophyte")
_SIZED = ("disc_bulge", "disc_osteophyte")


def _severity_table(base: dict, degen: dict, sized: dict, marrow: dict) -> dict[tuple[str, int], tuple]:
    table = {}
    for cond in (*DISC_CONDITIONS, "ddd", "marrow_change"):
        for grade in (1, 2, 3):
            words = list(base[grade])
            if cond in _DEGEN:
                words += degen.get(grade, ())
            if cond in _SIZED:
                words += sized.get(grade, ())
            if cond == "marrow_change":
                words = [w for w in words if w not in ("small", "large")] + list(marrow.get(grade, ()))
            table[cond, grade] = tuple(words)
    return table


_T_SEV = _severity_table(
    base={1: _w(("mild", 6), ("slight", 2), ("minimal", 1)), 2: _w(("moderate", 8), ("mild to moderate", 2)),
          3: _w(("marked", 4), ("severe", 3), ("pronounced", 1), ("moderate to severe", 1))},
    degen={1: _w(("early", 1)), 3: _w(("advanced", 2))},
    sized={1: _w(("small", 6)), 3: _w(("large", 3))},
    marrow={1: _w(("trace", 1)), 3: _w(("extensive", 3))},
)
_D_SEV = _severity_table(
    base={1: _w(("mild", 8), ("minimal", 2), ("slight", 1)),
          2: _w(("moderate", 8), ("mild-moderate", 1), ("mild to moderate", 1), ("mod", 1)),
          3: _w(("severe", 6), ("moderate-severe", 1), ("moderate to severe", 1), ("sev", 1), ("marked", 1))},
    degen={3: _w(("advanced", 2))},
    sized={1: _w(("small", 6)), 3: _w(("large", 3))},
    marrow={1: _w(("trace", 1)), 3: _w(("extensive", 2))},
)
_T_ADV = {1: _w(("mildly", 3), ("slightly", 2), ("minimally", 1)), 2: ("moderately",),
          3: _w(("markedly", 2), ("severely", 1))}
_D_ADV = {1: _w(("mildly", 3), ("minimally", 1)), 2: ("moderately",), 3: _w(("severely", 2), ("markedly", 1))}

# Noun phrases: (template with {a} = severity adjective or {v} = severity adverb, countable)
_T_PHRASES = {
    "disc_bulge": _w((("{a} disc bulge", True), 3), (("{a} broad-based disc bulge", True), 2),
                     (("{a} diffuse disc bulge", True), 1), (("{a} annular bulge", True), 1),
                     (("{v} bulging disc", True), 1)),
    "disc_desiccation": _w((("{a} disc desiccation", False), 3), (("{a} loss of T2 signal", False), 1),
                           (("{a} loss of disc signal", False), 1), (("{v} desiccated disc", True), 1),
                           (("{a} disc dehydration", False), 1), (("{v} decreased disc signal", False), 1)),
    "disc_height_loss": _w((("{a} loss of disc height", False), 3), (("{a} disc space narrowing", False), 2),
                           (("{v} reduced disc height", False), 1), (("{a} disc height loss", False), 1)),
    "ddd": _w((("{a} degenerative disc disease", False), 2), (("{v} degenerated disc", True), 2),
              (("{a} DDD", False), 1)),
    "disc_osteophyte": _w((("{a} osteophytes", False), 2), (("{a} anterior osteophyte", True), 1),
                          (("{a} marginal osteophytes", False), 1), (("{a} osteophyte formation", False), 1),
                          (("{a} spondylotic spurring", False), 1), (("{a} osteophytic spurring", False), 1)),
    "canal_stenosis": _w((("{a} narrowing of the spinal canal", False), 2), (("{a} central canal stenosis", False), 2),
                         (("{a} canal stenosis", False), 1), (("{a} spinal stenosis", False), 1),
                         (("{a} effacement of the thecal sac", False), 1), (("{a} canal narrowing", False), 1)),
    "endplate_irregularity": _w((("{a} endplate irregularity", False), 2), (("{v} irregular endplates", False), 1),
                                (("{a} endplate undulation", False), 1),
                                (("{a} irregularity of the endplates", False), 1)),
}
_D_PHRASES = {
    "disc_bulge": _w((("{a} disc bulge", True), 3), (("{a} broad-based disc bulge", True), 3),
                     (("{a} diffuse disc bulge", True), 1), (("{a} broad-based bulge", True), 1),
                     (("{a} diffuse bulge", True), 1), (("{a} annular bulge", True), 1)),
    "disc_desiccation": _w((("{a} disc desiccation", False), 3), (("{a} loss of disc signal", False), 1),
                           (("{v} decreased disc signal", False), 1), (("{a} disc dehydration", False), 1),
                           (("dark disc ({a} desiccation)", False), 1)),
    "disc_height_loss": _w((("{a} loss of disc height", False), 2), (("{a} disc height loss", False), 2),
                           (("{a} disc space narrowing", False), 1), (("{v} decreased disc height", False), 1)),
    "ddd": _w((("{a} DDD", False), 3), (("{a} degenerative disc disease", False), 2),
              (("{v} degenerated disc", True), 1)),
    "disc_osteophyte": _w((("{a} osteophytic spurring", False), 2), (("{a} osteophytes", False), 1),
                          (("{a} anterior spurs", False), 1), (("{a} marginal osteophytes", False), 1),
                          (("{a} anterior osteophyte", True), 1), (("{a} spondylotic spurring", False), 1)),
    "canal_stenosis": _w((("{a} central canal stenosis", False), 3), (("{a} spinal stenosis", False), 2),
                         (("{a} central stenosis", False), 1), (("{a} canal narrowing", False), 1),
                         (("{a} thecal sac effacement", False), 1), (("{a} narrowing of the central canal", False), 1)),
    "endplate_irregularity": _w((("{a} endplate irregularity", False), 2), (("{v} irregular endplates", False), 1),
                                (("{a} irregular endplate contour", False), 1),
                                (("{a} endplate undulation", False), 1)),
}
# Nouns for the severity-after-the-noun forms ("disc bulge, moderate", "loss of disc height (mild)")
_NOUNS = {
    "disc_bulge": ("disc bulge", "broad-based disc bulge", "annular bulge", "diffuse bulge"),
    "disc_desiccation": ("disc desiccation", "loss of T2 signal", "disc dehydration", "decreased disc signal"),
    "disc_height_loss": ("loss of disc height", "disc height loss", "disc space narrowing"),
    "ddd": ("degenerative disc disease", "DDD"),
    "disc_osteophyte": ("osteophytes", "osteophytic spurring", "osteophyte formation"),
    "canal_stenosis": ("central canal stenosis", "canal stenosis", "spinal stenosis", "narrowing of the spinal canal"),
    "endplate_irregularity": ("endplate irregularity", "endplate undulation"),
}
# Checklist labels of the teaching hospital's condition-by-condition layout
_LABELS = {
    "ddd": ("Degenerative disc disease",),
    "disc_desiccation": ("Disc desiccation", "Loss of T2 signal", "Disc desiccation"),
    "disc_height_loss": ("Loss of disc height", "Disc space narrowing", "Disc height loss"),
    "disc_bulge": ("Disc bulges", "Disc bulge"),
    "disc_osteophyte": ("Osteophytes", "Osteophyte formation", "Marginal osteophytes"),
    "endplate_irregularity": ("Endplate irregularity", "Endplate irregularity"),
    "canal_stenosis": ("Central canal stenosis", "Canal stenosis", "Spinal canal narrowing"),
}
_LIST_SEV = {1: _w(("mild", 3), ("minimal", 1), ("slight", 1), ("trace", 1)), 2: ("moderate",),
             3: _w(("severe", 2), ("marked", 1))}
_MEYERDING = {1: ("grade 1", "grade I"), 2: ("grade 2", "grade II"), 3: ("grade 3", "grade III")}
_FRACT_SEV = {1: _w(("mild", 3), ("minimal", 1)), 2: ("moderate",), 3: _w(("severe", 2), ("marked", 1))}
_PERCENT = {1: ("approximately 20%", "20-25%", "about 20%"),
            2: ("approximately 30%", "30-35%", "approximately 35%", "about 30%"),
            3: ("approximately 50%", "more than 40%", "over 40%", "approximately 60%", "about 45%")}
_MARROW_SEV = {g: tuple(w for w in _T_SEV["marrow_change", g] if w not in ("early", "advanced")) for g in (1, 2, 3)}
_TYPOS = (("stenosis", "stenosi"), ("desiccation", "desication"), ("osteophytes", "osteophtyes"),
          ("osteophyte", "osteophtye"), ("bulge", "bulgle"), ("moderate", "moderat"), ("mild", "mlid"),
          ("anterolisthesis", "anterolisthsis"), ("retrolisthesis", "retrolisthsis"))
_TYPO_RES = tuple((re.compile(rf"\b{word}\b"), typo) for word, typo in _TYPOS)


# ----------------------------------------------------------------------------------------------------------


class _Writer:
    """Shared machinery of a site: the graded row, its notation habits and what each sentence claims.

    Every sentence that states a grade goes through `claim`; every negation or normal statement through
    `negate`, every hedge through `hedge_of`, so tests can check the text against the row.
    """

    SEV: dict = _T_SEV
    ADV: dict = _T_ADV
    PHRASES: dict = _T_PHRASES
    FORMS: tuple = ()
    ALT: tuple = ("slash", "slashfull", "short", "dash")
    BRITISH = True

    def __init__(self, grades: Mapping[str, int], rng: np.random.Generator, header: Mapping[str, str]):
        d = self.d = Dice(rng)
        self.g = {c: [int(grades[k]) for k in cols] for c, cols in _COLUMNS.items()}
        self.h = header
        self.claims: set[tuple[str, int, int]] = set()
        self.negated: set[tuple[str, int]] = set()
        self.hedged: set[tuple[str, int]] = set()
        self.form = d.pick(self.FORMS)
        self.names = _FORMS[self.form]
        self.p_alt = d.pick((0.0, 0.0, 0.05, 0.15))
        self.p_junction = d.pick((0.0, 0.1, 0.3))
        self.p_range = d.pick((0.6, 0.9, 1.0))
        self.oxford = (not self.BRITISH) and d.chance(0.6)
        # what is still to be stated once; "ddd" takes levels whose desiccation and height loss are equal
        rem = self.rem = {c: list(v) for c, v in self.g.items()}
        merge = d.pick((0.0, 0.5, 0.9, 1.0))
        desic, height = rem["disc_desiccation"], rem["disc_height_loss"]
        ddd = [0] * _N
        if merge:
            for i in range(_N):
                if desic[i] and desic[i] == height[i] and d.chance(merge):
                    ddd[i], desic[i], height[i] = desic[i], 0, 0
        rem["ddd"] = ddd
        first, last = _split_name(header["name"])
        self.first, self.last = first.title(), last.title()
        self.exam = _parse_date(header["exam_date"])
        self.birth = _parse_date(header["birth_date"])

    # --- bookkeeping ---

    def claim(self, cond: str, idxs: Sequence[int], grade: int) -> None:
        for c in (("disc_desiccation", "disc_height_loss") if cond == "ddd" else (cond,)):
            for i in idxs:
                self.claims.add((c, i, grade))

    def take(self, cond: str, idxs: Sequence[int], grade: int) -> None:
        """Claims and marks as stated."""
        self.claim(cond, idxs, grade)
        rem = self.rem[cond]
        for i in idxs:
            rem[i] = 0

    def all_zero(self, cond: str, idxs) -> bool:
        conds = ("disc_desiccation", "disc_height_loss") if cond == "ddd" else (cond,)
        return all(not self.g[c][i] for c in conds for i in idxs)

    def negate(self, cond: str, idxs) -> None:
        for c in (("disc_desiccation", "disc_height_loss") if cond == "ddd" else (cond,)):
            for i in idxs:
                self.negated.add((c, i))

    def try_negate(self, conds: Sequence[str], idxs) -> bool:
        """Records a normal statement over `conds` x `idxs` if all of them are grade 0."""
        if all(self.all_zero(c, idxs) for c in conds):
            for c in conds:
                self.negate(c, idxs)
            return True
        return False

    def groups(self, cond: str, idxs=None, source: dict | None = None) -> list[tuple[int, list[int]]]:
        """(grade, levels) of the nonzero grades of `cond` among `idxs`, by grade."""
        values = (source or self.rem)[cond]
        out: dict[int, list[int]] = {}
        for i in (range(_N) if idxs is None else idxs):
            if values[i]:
                out.setdefault(values[i], []).append(i)
        return sorted(out.items())

    # --- levels ---

    def disc(self, i: int) -> str:
        if self.p_alt and self.d.chance(self.p_alt):
            return _FORMS[self.d.pick(self.ALT)][i]
        return self.names[i]

    def join(self, items: Sequence[str], conj: str = "and") -> str:
        if len(items) == 1:
            return items[0]
        comma = "," if self.oxford and len(items) > 2 else ""
        return ", ".join(items[:-1]) + f"{comma} {conj} " + items[-1]

    def disc_at(self, idxs: Sequence[int]) -> str:
        """Locative phrase of disc levels: 'at L4/5', 'from C3/4 to C6/7', 'at C5/6, C6/7 and L4/5'."""
        d = self.d
        if len(idxs) == 1:
            i = idxs[0]
            if i in _JUNCTIONS and self.p_junction and d.chance(self.p_junction):
                return "at " + _JUNCTIONS[i]
            return "at " + self.disc(i)
        runs = _runs(idxs)
        if len(runs) == 1 and len(idxs) >= 3 and d.chance(self.p_range):
            a, b = self.disc(idxs[0]), self.disc(idxs[-1])
            return d.pick((f"from {a} to {b}", f"at {a} through {b}", f"from {a} to {b}",
                           f"at all levels from {a} to {b}" if self.BRITISH else f"from {a} through {b}"))
        items = []
        for run in runs:
            if len(run) >= 3 and d.chance(self.p_range):
                items.append(f"{self.disc(run[0])} through {self.disc(run[-1])}")
            else:
                items += [self.disc(i) for i in run]
        return "at " + self.join(items)

    def verts(self, idxs: Sequence[int]) -> str:
        """'L1', 'T12 and L1', 'T11 through L1'."""
        runs = _runs(idxs)
        if len(runs) == 1 and len(idxs) >= 3 and self.d.chance(self.p_range):
            return f"{VERTS[idxs[0]]} through {VERTS[idxs[-1]]}"
        return self.join([VERTS[i] for i in idxs])

    # --- phrases ---

    def sev(self, cond: str, grade: int) -> str:
        return self.d.pick(self.SEV[cond, grade])

    def phrase(self, cond: str, grade: int, plural: bool = False, article: bool = False) -> str:
        template, countable = self.d.pick(self.PHRASES[cond])
        if "{v}" in template:
            text = template.replace("{v}", self.d.pick(self.ADV[grade]))
        else:
            text = template.replace("{a}", self.sev(cond, grade))
        if countable and plural:
            text += "s"
        elif countable and article and not text.startswith(("mod ", "sev ")):
            text = _article(text)
        return text

    def postfix(self, cond: str, grade: int, paren: bool | None = None) -> str:
        """Severity after the noun: 'disc bulge, moderate', 'loss of disc height (mild)'."""
        noun = self.d.pick(_NOUNS[cond])
        word = self.sev(cond, grade)
        if paren is None:
            paren = self.d.chance(0.4)
        return f"{noun} ({word})" if paren else f"{noun}, {word}"

    def listhesis(self, i: int, grade: int, with_level: bool = True) -> str:
        d = self.d
        upper, lower = _PAIRS[i]
        meyer = d.pick(_MEYERDING[grade])
        sev = d.pick(_LIST_SEV[grade])
        u = d.u()
        if u < 0.3:
            core = f"{meyer} anterolisthesis"
        elif u < 0.45:
            core = f"Meyerding {meyer} spondylolisthesis" if self.BRITISH else f"{meyer} spondylolisthesis"
        elif u < 0.65:
            core = f"{sev} anterolisthesis"
        elif u < 0.8:
            core = f"{meyer} degenerative spondylolisthesis"
        elif u < 0.9:
            core = f"{sev} ({meyer}) anterolisthesis"
        else:
            core = f"{meyer} anterior slip"
        self.take("listhesis", [i], grade)
        if not with_level:
            return core
        return f"{core} of {upper} on {lower}" if d.chance(0.7) else f"{core} {self.disc_at([i])}"

    def fracture(self, idxs: list[int], grade: int) -> str:
        d = self.d
        many = len(idxs) > 1
        where = self.verts(idxs)
        sev = d.pick(_FRACT_SEV[grade])
        pct = d.pick(_PERCENT[grade])
        s = "s" if many else ""
        u = d.u()
        if u < 0.22:
            text = f"{sev if many else _article(sev)} anterior wedge compression " \
                   f"deformit{'ies' if many else 'y'} of {where}"
        elif u < 0.4:
            body = f"the {where} vertebral bod{'ies' if many else 'y'}"
            text = f"Genant grade {grade} compression fracture{s} of {body}"
        elif u < 0.58:
            text = f"{sev} wedge fracture{s} of {where} with {pct} loss of anterior vertebral body height"
        elif u < 0.72:
            text = f"{sev} compression deformit{'ies' if many else 'y'} of {where} (Genant {grade})"
        elif u < 0.86:
            text = f"vertebral body height loss of {pct} at {where}, in keeping with " \
                   f"{sev + ' wedge fractures' if many else _article(sev) + ' wedge fracture'}"
        else:
            text = f"{sev} compression fracture{s} of {where}, {pct} anterior height loss"
        self.take("fracture", idxs, grade)
        return text

    def marrow(self, idxs: list[int], grade: int, side: str | None = None) -> str:
        d = self.d
        many = len(idxs) > 1
        sev = d.pick(_MARROW_SEV[grade])
        where = self.verts(idxs)
        u = d.u()
        if u < 0.3:
            text = f"{sev} Modic type 2 endplate change{'s' if many else ''} at {where}"
        elif u < 0.5:
            text = f"type II Modic change, {sev}, in the {where} vertebral bod{'ies' if many else 'y'}"
        elif u < 0.65:
            text = f"{sev} fatty (Modic type 2) endplate marrow change at {where}"
        elif (u < 0.8 or side) and not many:
            side = side or d.pick(("inferior", "superior"))
            text = f"Modic 2 signal at the {side} endplate of {where}, {sev}"
        else:
            text = f"{sev} Modic type 2 signal at the endplates of {where}"
        self.take("marrow_change", idxs, grade)
        return text

    def distractor_foramen(self, i: int) -> str:
        d = self.d
        side = d.pick(("bilateral", "left", "right", "bilateral"))
        word = d.pick(("mild", "mild", "moderate", "severe", "mild to moderate"))
        noun = d.pick(("foraminal narrowing", "neural foraminal stenosis", "exit foraminal narrowing")
                      if self.BRITISH else ("neural foraminal narrowing", "foraminal stenosis", "foraminal narrowing"))
        return f"{word} {side} {noun}"

    def hedge(self) -> str | None:
        """One hedged statement about a grade-0 pair (or None if the chosen condition has none)."""
        d = self.d
        cond = d.pick(("listhesis", "listhesis", "disc_bulge", "fracture", "marrow_change", "canal_stenosis",
                       "endplate_irregularity", "disc_osteophyte"))
        zeros = [i for i in range(_N) if not self.g[cond][i]]
        if not zeros:
            return None
        i = d.pick(zeros)
        self.hedged.add((cond, i))
        lv, v = self.disc(i), VERTS[i]
        upper, lower = _PAIRS[i]
        oedema = "oedema" if self.BRITISH else "edema"
        options = {
            "listhesis": (f"Questionable trace retrolisthesis of {upper} on {lower}.",
                          f"? minimal anterolisthesis at {lv}, possibly positional.",
                          f"Possible slight retrolisthesis at {lv}."),
            "disc_bulge": (f"Possible small disc bulge at {lv}, not confirmed on the axial images.",
                           f"A minimal annular bulge at {lv} cannot be excluded."),
            "fracture": (f"Possible mild wedge deformity of {v}, which may represent a normal variant.",
                         f"Subtle superior endplate depression at {v} - ?minimal compression fracture, "
                         f"no marrow {oedema}."),
            "marrow_change": (f"Suspected minimal Modic type 2 change at {v} versus partial volume.",
                              f"Equivocal trace Modic 2 signal at the {v} endplate."),
            "canal_stenosis": (f"Questionable mild canal narrowing at {lv}, possibly accentuated by motion.",),
            "endplate_irregularity": (f"Possible mild endplate irregularity at {lv} versus artefact.",),
            "disc_osteophyte": (f"? small anterior osteophyte at {lv}.",),
        }
        return d.pick(options[cond])

    def worst_disc(self) -> int | None:
        totals = [sum(self.g[c][i] for c in DISC_CONDITIONS) for i in range(_N)]
        best = max(totals)
        return totals.index(best) if best else None

    def date(self, day: dt.date | None, raw: str) -> str:
        if day is None:
            return raw
        if self.BRITISH:
            return day.strftime(self.d.pick(("%d.%m.%Y", "%d/%m/%Y", "%d %B %Y")))
        return f"{day.month}/{day.day}/{day.year}" if self.d.chance(0.5) else day.strftime("%m/%d/%Y")

    def prior(self) -> dt.date | None:
        return None if self.exam is None else self.exam - dt.timedelta(days=self.d.randint(90, 2200))

    # --- impression / conclusion, shared ---

    def summary_items(self) -> list[str]:
        d, g = self.d, self.g
        items = []
        for grade, idxs in self.groups("fracture", source=g):
            items.append(_cap(self.fracture(idxs, grade)) + d.pick(("", "", ", no retropulsion")))
        canal_done = set()
        for grade, idxs in self.groups("listhesis", source=g):
            for i in idxs:
                text = _cap(self.listhesis(i, grade))
                if g["canal_stenosis"][i] and d.chance(0.7):
                    text += f" with {self.phrase('canal_stenosis', g['canal_stenosis'][i])}"
                    self.claim("canal_stenosis", [i], g["canal_stenosis"][i])
                    canal_done.add(i)
                items.append(text)
        for grade, idxs in self.groups("canal_stenosis", source=g):
            idxs = [i for i in idxs if i not in canal_done]
            if grade >= 2 and idxs:
                items.append(_cap(self.phrase("canal_stenosis", grade)) + " " + self.disc_at(idxs))
                self.claim("canal_stenosis", idxs, grade)
        worst = self.worst_disc()
        if worst is not None:
            levels = sum(any(g[c][i] for c in DISC_CONDITIONS) for i in range(_N))
            lead = d.pick(("Multilevel degenerative disc disease", "Multilevel degenerative changes",
                           "Multilevel spondylosis")) if levels > 1 else "Degenerative changes"
            if levels > 1:
                text = f"{lead}, {d.pick(('worst', 'worst', 'predominantly', 'maximal'))} at {self.disc(worst)}"
            else:
                text = f"{lead} at {self.disc(worst)}"
            canal = g["canal_stenosis"][worst]
            if canal and worst not in canal_done and d.chance(0.5):
                text += f", with {self.phrase('canal_stenosis', canal)} at this level"
                self.claim("canal_stenosis", [worst], canal)
            items.append(text)
        for grade, idxs in self.groups("marrow_change", source=g):
            if grade == 3:
                items.append(_cap(self.marrow(idxs, grade)))
        if not any(any(v) for v in g.values()):
            items.append(d.pick(("No abnormality detected", "Normal appearances of the whole spine",
                                 "Normal MRI of the whole spine") if self.BRITISH else
                                ("Unremarkable MRI of the cervical, thoracic and lumbar spine",
                                 "Negative MRI of the cervical, thoracic, and lumbar spine")))
            for c in findings.GRADING:
                self.negate(c, range(_N))
        else:
            if d.chance(0.4) and self.try_negate(("fracture",), range(_N)):
                items.append(d.pick(("No fracture", "No vertebral fracture")))
            if d.chance(0.4) and self.try_negate(("canal_stenosis",), range(_N)):
                items.append(d.pick(("No canal stenosis", "No spinal stenosis at any level")))
        return items


# ----------------------------------------------------------------------------------------------------------
# Site 1: European teaching hospital


class _TeachingHospital(_Writer):
    SEV, ADV, PHRASES = _T_SEV, _T_ADV, _T_PHRASES
    FORMS = _w(("slash", 6), ("slashfull", 1), ("short", 2), ("spaced", 1))
    BRITISH = True
    HOSPITALS = ("Westbrook University Hospital", "Noordhaven University Medical Centre",
                 "St Aldric's Teaching Hospital", "Ostfeld University Hospital")

    def write(self) -> str:
        d = self.d
        head = [self.header(), self.clinical(), self.technique(), self.comparison()]
        body = [self.by_condition() if d.chance(0.5) else self.by_region(), self.conclusion()]
        if self.form != "spaced" and d.chance(0.25):
            width = d.randint(68, 92)
            body = [_wrap(part, width) for part in body]
        text = "\n\n".join(p for p in (*head, *body, self.signoff()) if p)
        if d.chance(0.06):
            text = _typo(text, d)
        return text

    def header(self) -> str:
        d, h = self.d, self.h
        name = d.pick((f"{self.last.upper()}, {self.first}", f"{self.first} {self.last.upper()}",
                       f"{self.last}, {self.first}"))
        dob = self.date(self.birth, h["birth_date"])
        exam = self.date(self.exam, h["exam_date"])
        ref = f"Dr {_doctor(h['referring'])}"
        dept = d.pick(("Department of Radiology", "Department of Radiology - Neuroradiology Section",
                       "Radiology Department"))
        if d.chance(0.5):
            return (f"{d.pick(self.HOSPITALS)}\n{dept}\n"
                    f"Patient: {name}    Hospital no.: {h['mrn']}\n"
                    f"Date of birth: {dob}\n"
                    f"Examination: MRI whole spine    Date of examination: {exam}\n"
                    f"Accession no.: {h['accession']}    Referrer: {ref}")
        return (f"{d.pick(self.HOSPITALS).upper()} - {dept}\n"
                f"Name: {name} | Hosp. no. {h['mrn']} | D.o.B. {dob}\n"
                f"MRI spine (cervical, thoracic and lumbar) | {exam} | Acc. {h['accession']}\n"
                f"Requested by {ref}")

    def clinical(self) -> str:
        d = self.d
        fractured = [VERTS[i] for i in range(_N) if self.g["fracture"][i]]
        options = ["Low back pain radiating to the right leg. ?disc prolapse ?canal stenosis.",
                   "Fall down stairs, thoracolumbar pain. ?fracture.",
                   "Osteoporosis, acute back pain. ?vertebral collapse.",
                   "Neck pain with bilateral arm paraesthesia. Query cervical canal stenosis.",
                   "Neurogenic claudication. Exclude spinal stenosis.",
                   f"Left {d.pick(('L5', 'S1', 'L4'))} radiculopathy.",
                   "Back pain and weight loss. ?metastases.",
                   "Chronic back pain, not responding to physiotherapy."]
        if fractured:
            options.append(f"Known {fractured[0]} fracture, follow-up.")
        label = d.pick(("Clinical details", "Clinical details", "Clinical information", "Indication"))
        return f"{label}: {d.pick(options)}"

    def technique(self) -> str:
        d = self.d
        if d.chance(0.4):
            return ""
        axial = d.pick((f"axial T2 from {self.disc(19)} to {self.disc(22)}",
                        f"axial T2 from {self.disc(3)} to {self.disc(5)} and from {self.disc(20)} to {self.disc(22)}",
                        "axial T2 through the lumbar discs"))
        text = f"Technique: Sagittal T1, T2 and STIR of the whole spine; {axial}."
        if d.chance(0.15):
            text += " Some motion degradation of the axial images."
        return text

    def comparison(self) -> str:
        d = self.d
        self.prior_day = None
        if d.chance(0.45):
            return d.pick(("Comparison: None available.", "Comparison: none.", ""))
        self.prior_day = self.prior()
        date = self.date(self.prior_day, "")
        what = d.pick(("MRI lumbar spine", "radiographs of the thoracolumbar spine", "CT thorax and abdomen",
                       "MRI cervical spine (outside institution)"))
        return f"Comparison: {what} dated {date}." if date else f"Comparison: {what}."

    # condition-by-condition checklist
    def by_condition(self) -> str:
        d = self.d
        lines = [d.pick(("Findings:", "FINDINGS", "Report:"))]
        lines.append("Alignment: " + self.alignment())
        lines.append(d.pick(("Vertebral bodies: ", "Vertebrae: ")) + self.vertebral_bodies())
        lines.append(d.pick(("Bone marrow: ", "Marrow: ")) + self.marrow_line())
        order = ["ddd", "disc_desiccation", "disc_height_loss", "disc_bulge", "disc_osteophyte",
                 "endplate_irregularity"]
        if d.chance(0.3):
            order[3], order[4] = order[4], order[3]
        descending = d.chance(0.3)
        for cond in order:
            groups = self.groups(cond)
            if not groups:
                if cond != "ddd" and d.chance(0.35) and self.try_negate((cond,), range(_N)):
                    lines.append(d.pick(_LABELS[cond]) + ": " + d.pick(("none.", "none.", "not seen.")))
                continue
            if descending:
                groups = groups[::-1]
            items = []
            for grade, idxs in groups:
                items.append(f"{self.sev(cond, grade)} {self.disc_at(idxs)}")
                self.take(cond, idxs, grade)
            lines.append(d.pick(_LABELS[cond]) + ": " + "; ".join(items) + ".")
        lines.append(self.canal_line())
        degenerate = [i for i in range(_N) if self.g["disc_height_loss"][i] or self.g["disc_bulge"][i]
                      or self.g["disc_osteophyte"][i]]
        foramina = sorted({d.pick(degenerate) for _ in range(d.randint(0, 2))}) if degenerate else []
        if foramina:
            lines.append("Exit foramina: " + _cap(self.distractor_foramen(foramina[0])) + " "
                         + self.disc_at(foramina) + "; otherwise patent.")
        elif d.chance(0.5):
            lines.append("Exit foramina: patent.")
        lines.append(self.cord())
        other = self.other()
        if other:
            lines.append(other)
        hedge = self.hedge() if d.chance(0.35) else None
        if hedge:
            lines.append(hedge)
        return "\n".join(lines)

    def alignment(self) -> str:
        d = self.d
        found = [(i, self.rem["listhesis"][i]) for i in range(_N) if self.rem["listhesis"][i]]
        if not found:
            self.negate("listhesis", range(_N))
            extra = d.pick(("", "", " Mild straightening of the cervical lordosis.", " Mild lumbar scoliosis."))
            return d.pick(("Normal.", "Normal sagittal alignment.", "Maintained; no listhesis.")) + extra
        parts = [self.listhesis(i, grade) for i, grade in found]
        text = _cap("; ".join(parts))
        if d.chance(0.5):
            self.negate("listhesis", [i for i in range(_N) if not self.g["listhesis"][i]])
            text += d.pick(("; alignment otherwise maintained", ". Otherwise normal alignment"))
        return text + "."

    def vertebral_bodies(self) -> str:
        d = self.d
        groups = self.groups("fracture")
        if not groups:
            self.negate("fracture", range(_N))
            return d.pick(("Normal height.", "Vertebral body heights are preserved.", "No fracture."))
        parts = []
        for grade, idxs in groups:
            text = _cap(self.fracture(idxs, grade))
            extra = d.pick(("no retropulsion", "no marrow oedema on STIR to suggest an acute injury",
                            "posterior wall intact", "", ""))
            if self.prior_day is not None and d.chance(0.3):
                extra = d.pick(("new since the previous examination", "unchanged from the previous examination"))
            parts.append(text + (f", {extra}" if extra else "") + ".")
        if d.chance(0.5):
            self.negate("fracture", [i for i in range(_N) if not self.g["fracture"][i]])
            parts.append("Vertebral body heights are otherwise preserved.")
        return " ".join(parts)

    def marrow_line(self) -> str:
        d = self.d
        groups = self.groups("marrow_change")
        if not groups:
            self.negate("marrow_change", range(_N))
            return d.pick(("Normal signal.", "Normal marrow signal; no Modic endplate change.",
                           "No Modic endplate change. No suspicious marrow lesion."))
        parts = [_cap(self.marrow(idxs, grade)) + "." for grade, idxs in groups]
        if d.chance(0.4):
            parts.append(d.pick(("No oedematous (type 1) component.", "No suspicious marrow lesion.")))
        return " ".join(parts)

    def canal_line(self) -> str:
        d = self.d
        groups = self.groups("canal_stenosis")
        label = d.pick(("Spinal canal", "Canal", "Central canal stenosis" if groups else "Spinal canal"))
        if not groups:
            self.negate("canal_stenosis", range(_N))
            return f"{label}: " + d.pick(("normal calibre throughout.", "no stenosis at any level.",
                                         "no canal stenosis."))
        items = []
        for grade, idxs in groups[::-1]:
            what = self.sev("canal_stenosis", grade) if items or label.startswith("Central") else \
                self.phrase("canal_stenosis", grade)
            items.append(f"{what} {self.disc_at(idxs)}")
            self.take("canal_stenosis", idxs, grade)
        text = f"{label}: " + "; ".join(items) + "."
        if d.chance(0.5):
            self.negate("canal_stenosis", [i for i in range(_N) if not self.g["canal_stenosis"][i]])
            text += d.pick((" Elsewhere the canal is of normal calibre.", " No canal stenosis elsewhere."))
        return text

    def cord(self) -> str:
        d = self.d
        conus = d.pick(("L1", "T12/L1", "the L1/2 level", "L1", "the lower third of L1"))
        return d.pick((f"Cord: normal signal; the conus terminates at {conus}.",
                       f"Spinal cord and conus: normal calibre and signal, conus at {conus}.",
                       f"Normal cord signal. Conus ends at {conus}."))

    def other(self) -> str:
        d = self.d
        u = d.u()
        if u < 0.12:
            return f"Other: incidental typical haemangioma in the {d.pick(VERTS[6:18])} vertebral body."
        if u < 0.2:
            return "Other: perineural (Tarlov) cyst at S2, of no significance."
        if u < 0.4:
            return "Paravertebral soft tissues: unremarkable."
        return ""

    # regional prose
    def by_region(self) -> str:
        d = self.d
        paras = [d.pick(("Findings:", "FINDINGS:", "Report:"))]
        regions = (("Cervical spine", "cervical", _CERV), ("Thoracic spine", "thoracic", _THOR),
                   ("Lumbar spine", "lumbar", _LUMB))
        if d.chance(0.5):
            regions = (("Cervical spine", "cervical", _CERV), ("Thoracic spine", "thoracic", range(6, 18)),
                       ("Lumbar spine", "lumbar", range(18, 23)))
        for label, region, discs in regions:
            sents = self.region_sentences(region, discs)
            paras.append(f"{label}: " + " ".join(sents))
        hedge = self.hedge() if d.chance(0.35) else None
        if hedge:
            paras.append(hedge)
        other = self.other()
        if other:
            paras.append(other)
        return "\n".join(paras)

    def region_sentences(self, region: str, discs: range) -> list[str]:
        d, rem = self.d, self.rem
        verts = _VREGION[region]
        cover = _COVER[region]
        sents = []
        listheses = [i for i in discs if rem["listhesis"][i]]
        for i in listheses:
            sents.append(_cap(self.listhesis(i, rem["listhesis"][i])) + ".")
        if not listheses and d.chance(0.5) and self.try_negate(("listhesis",), cover):
            sents.append(d.pick(("Normal alignment.", "Alignment is maintained.", "No listhesis.")))
        for grade, idxs in self.groups("fracture", verts):
            extra = d.pick(("", "", " There is no marrow oedema to suggest an acute fracture.",
                            " No retropulsion."))
            sents.append(_cap(self.fracture(idxs, grade)) + "." + extra)
        if not any(self.g["fracture"][j] for j in verts) and d.chance(0.3):
            self.negate("fracture", verts)
            sents.append("Vertebral body heights are maintained.")
        for grade, idxs in self.groups("marrow_change", verts):
            sents.append(_cap(self.marrow(idxs, grade)) + ".")
        # the levels that matter clinically, level by level
        for i in discs:
            if rem["disc_bulge"][i] or rem["canal_stenosis"][i]:
                sents.append(self.level_sentence(i))
        # the rest grouped by condition
        order = ["ddd", "disc_desiccation", "disc_height_loss", "disc_osteophyte", "endplate_irregularity"]
        if d.chance(0.5):
            order.reverse()
        for cond in order:
            groups = self.groups(cond, discs)
            if groups:
                sents.append(self.grouped_sentence(cond, groups))
        if self.try_negate(DISC_CONDITIONS, cover):
            sents.append(d.pick((f"The {region} discs are of normal height and signal, with no disc bulge or "
                                 "canal stenosis.", f"The {region} discs are unremarkable.",
                                 "No disc or canal abnormality.")))
        elif d.chance(0.5) and self.try_negate(("canal_stenosis",), cover):
            sents.append(d.pick(("No canal stenosis.", f"No {region} canal stenosis.",
                                 "The spinal canal is of normal calibre.")))
        if region == "cervical" and d.chance(0.6):
            sents.append("Normal cord signal.")
        if region == "lumbar" and d.chance(0.7):
            sents.append(f"The conus terminates at {d.pick(('L1', 'T12/L1', 'the L1/2 level'))}.")
        if not sents and self.try_negate(DISC_CONDITIONS, discs) and self.try_negate(VERTEBRA_CONDITIONS, verts):
            sents.append(d.pick(("Unremarkable.", "No abnormality.")))
        return sents

    def level_sentence(self, i: int) -> str:
        d, rem = self.d, self.rem
        frags = []
        for cond in ("disc_bulge", "ddd", "disc_desiccation", "disc_height_loss", "disc_osteophyte",
                     "endplate_irregularity", "canal_stenosis"):
            grade = rem[cond][i]
            if grade and (cond in ("disc_bulge", "canal_stenosis") or d.chance(0.5)):
                if d.chance(0.75):
                    frags.append(self.phrase(cond, grade, article=True))
                else:
                    text = self.postfix(cond, grade, paren=True)
                    frags.append(text if cond not in ("disc_bulge",) else _article(text))
                self.take(cond, [i], grade)
        if not self.g["canal_stenosis"][i] and d.chance(0.4):
            self.negate("canal_stenosis", [i])
            frags.append(d.pick(("no canal stenosis", "no narrowing of the spinal canal")))
        if d.chance(0.3):
            frags.append(self.distractor_foramen(i))
        level = self.disc(i)
        body = self.join(frags) if len(frags) < 3 or d.chance(0.5) else frags[0] + " with " + self.join(frags[1:])
        u = d.u()
        if u < 0.45:
            return f"At {level} there is {body}."
        if u < 0.7:
            return f"{level}: {_cap(body)}."
        if u < 0.85:
            return f"The {level} level shows {body}."
        return f"{_cap(body)} {self.disc_at([i])}."

    def grouped_sentence(self, cond: str, groups: list[tuple[int, list[int]]]) -> str:
        d = self.d
        u = d.u()
        parts = []
        for k, (grade, idxs) in enumerate(groups):
            where = self.disc_at(idxs)
            if k == 0:
                if u < 0.45:
                    parts.append(f"{self.phrase(cond, grade, plural=len(idxs) > 1)} {where}")
                elif u < 0.75:
                    text = self.postfix(cond, grade)
                    parts.append(f"{text} {where}" if text.endswith(")") else f"{text}, {where}")
                else:
                    parts.append(f"{d.pick(_NOUNS[cond])} {where} ({self.sev(cond, grade)})")
            elif u >= 0.75:
                parts.append(f"{where} ({self.sev(cond, grade)})")
            else:
                parts.append(f"{self.sev(cond, grade)} {where}")
            self.take(cond, idxs, grade)
        sep = "; " if d.chance(0.5) else ", "
        return _cap(sep.join(parts)) + "."

    def conclusion(self) -> str:
        d = self.d
        items = self.summary_items()
        head = d.pick(("Conclusion:", "Opinion:", "CONCLUSION", "Summary:"))
        if d.chance(0.6):
            return head + "\n" + "\n".join(f"{k}. {item}." for k, item in enumerate(items, 1))
        return head + ("\n" if head.isupper() else " ") + " ".join(f"{item}." for item in items)

    def signoff(self) -> str:
        d = self.d
        rad = _doctor(self.h["radiologist"])
        when = self.exam + dt.timedelta(days=d.randint(0, 2)) if self.exam else None
        day = when.strftime("%d/%m/%Y") if when else self.h["exam_date"]
        stamp = f"{day} {d.randint(8, 19):02d}:{d.randint(0, 59):02d}"
        role = d.pick(("Consultant Neuroradiologist", "Consultant Radiologist", "Radiologist"))
        if d.chance(0.5):
            return f"Reported by: Dr {rad}, {role}\nAuthorised: {stamp}"
        return f"Dr {rad} ({role}) - verified {stamp}"


# ----------------------------------------------------------------------------------------------------------
# Site 2: US private practice, dictated into speech recognition


class _Dictation(_Writer):
    SEV, ADV, PHRASES = _D_SEV, _D_ADV, _D_PHRASES
    FORMS = _w(("short", 6), ("dash", 3), ("lower", 1))
    ALT = ("short", "dash", "lower", "concat", "slash")
    BRITISH = False

    def write(self) -> str:
        self.prior_day = None
        top = "\n".join(p for p in (self.header(), self.exam_line(), self.history(), self.technique(),
                                    self.comparison()) if p)
        body = self.findings()
        impression = self.impression()
        body, impression = self.artefacts(body), self.artefacts(impression)
        tail = self.signoff()
        return f"{top}\n\n{body}\n\n{impression}\n\n{tail}"

    def header(self) -> str:
        d, h = self.d, self.h
        name = f"{self.last.upper()}, {self.first.upper()}"
        dob = self.date(self.birth, h["birth_date"])
        exam = self.date(self.exam, h["exam_date"])
        core = _doctor(h["referring"])
        ref = f"{core}, MD" if " " in core and d.chance(0.6) else f"Dr. {core}"
        if d.chance(0.5):
            return (f"PATIENT: {name}    MRN: {h['mrn']}    DOB: {dob}\n"
                    f"DATE OF SERVICE: {exam}    ACCESSION #: {h['accession']}\n"
                    f"ORDERING PHYSICIAN: {ref}")
        return (f"Patient Name: {name} | MRN {h['mrn']} | DOB {dob} | Exam Date {exam}\n"
                f"Acc# {h['accession']}   Referring: {ref}   Location: {d.pick(('OP Imaging Ctr', 'Main Campus MRI'))}")

    def exam_line(self) -> str:
        return "EXAM: " + self.d.pick(("MRI CERVICAL, THORACIC AND LUMBAR SPINE WITHOUT CONTRAST",
                                       "MRI TOTAL SPINE W/O CONTRAST",
                                       "MR SPINE SCREENING (C/T/L) WITHOUT IV CONTRAST"))

    def history(self) -> str:
        d = self.d
        options = ("Low back pain radiating to left leg x 3 months. r/o stenosis",
                   "M54.50 Low back pain, unspecified. Eval for compression fx",
                   "fall, r/o fracture", "neck pain, C6 radiculopathy", "r/o spinal stenosis, claudication",
                   "M48.062 spinal stenosis lumbar w neurogenic claudication", "back pain. r/o stenosis",
                   "numbness bilateral hands and feet, evaluate for cord compression")
        return f"{d.pick(('HISTORY', 'CLINICAL HISTORY', 'INDICATION'))}: {d.pick(options)}"

    def technique(self) -> str:
        if self.d.chance(0.3):
            return ""
        return ("TECHNIQUE: Multiplanar multisequence MR imaging of the cervical, thoracic and lumbar spine "
                "was performed without IV contrast.")

    def comparison(self) -> str:
        d = self.d
        if d.chance(0.4):
            return "COMPARISON: " + d.pick(("None.", "None available.", "No prior studies."))
        self.prior_day = self.prior()
        date = self.date(self.prior_day, "prior")
        return "COMPARISON: " + d.pick((f"Lumbar spine radiographs {date}.", f"MRI lumbar spine dated {date}.",
                                         f"CT abdomen/pelvis {date}."))

    def findings(self) -> str:
        d, rem = self.d, self.rem
        lines = [d.pick(("FINDINGS:", "FINDINGS:", "Findings:"))]
        listhesis_in_alignment = d.chance(0.5)
        # ALIGNMENT
        found = [i for i in range(_N) if self.g["listhesis"][i]]
        if not found:
            self.negate("listhesis", range(_N))
            lines.append("ALIGNMENT: " + d.pick(("Normal.", "Maintained.", "Normal. No listhesis.",
                                                 "Straightening of the normal cervical lordosis.")))
        elif not listhesis_in_alignment:
            if d.chance(0.5):
                lines.append("ALIGNMENT: " + d.pick(("See below.", "Listhesis as detailed below.")))
        else:
            parts = [_cap(self.listhesis(i, self.g["listhesis"][i])) for i in found]
            text = "ALIGNMENT: " + ". ".join(parts) + "."
            if d.chance(0.5):
                self.negate("listhesis", [i for i in range(_N) if not self.g["listhesis"][i]])
                text += " Otherwise normal."
            lines.append(text)
        # VERTEBRAE
        groups = self.groups("fracture")
        if not groups:
            self.negate("fracture", range(_N))
            lines.append(d.pick(("VERTEBRAE: Vertebral body heights are maintained.",
                                 "VERTEBRAL BODIES: No fracture.", "VERTEBRAE: Heights maintained.")))
        else:
            parts = []
            for grade, idxs in groups:
                text = _cap(self.fracture(idxs, grade))
                extra = d.pick(("age indeterminate", "no retropulsion", "no marrow edema to suggest acute fracture",
                                "likely chronic", ""))
                if self.prior_day is not None and d.chance(0.3):
                    extra = d.pick(("new compared to prior", "unchanged from prior"))
                parts.append(text + (f", {extra}" if extra else "") + ".")
            if d.chance(0.4):
                self.negate("fracture", [i for i in range(_N) if not self.g["fracture"][i]])
                parts.append("Remaining vertebral body heights are maintained.")
            lines.append("VERTEBRAE: " + " ".join(parts))
        # MARROW: here, or at the disc levels next to each vertebra
        marrow_at: dict[int, list[int]] = {}
        if d.chance(0.5):
            for j in range(_N):
                if rem["marrow_change"][j]:
                    marrow_at.setdefault(j if j == 0 or d.chance(0.5) else j - 1, []).append(j)
            if not marrow_at and d.chance(0.5):
                self.negate("marrow_change", range(_N))
                lines.append("MARROW: Normal marrow signal.")
        else:
            groups = self.groups("marrow_change")
            if groups:
                lines.append("MARROW: " + " ".join(_cap(self.marrow(idxs, g)) + "." for g, idxs in groups))
            else:
                self.negate("marrow_change", range(_N))
                lines.append("MARROW: " + d.pick(("Normal marrow signal.", "No marrow replacing lesion. "
                                                  "No Modic endplate changes.")))
        lines.append("CORD: " + d.pick(("Normal in caliber and signal. Conus terminates at L1.",
                                        "Normal signal. Conus tip at L1-2.", "Unremarkable. Conus ends at T12-L1.")))
        # levels
        all_cervical = d.chance(0.8)
        for region, discs, every in (("cervical", _CERV, all_cervical), ("thoracic", _THOR, False),
                                     ("lumbar", _LUMB, True)):
            title = f"{region.upper()} SPINE:"
            lines.append("")
            lines.append(title if d.chance(0.8) else title.title())
            lines += self.region_lines(region, discs, every, marrow_at)
        if d.chance(0.3):
            hedge = self.hedge()
            if hedge:
                lines.append(hedge)
        if d.chance(0.3):
            lines.append(d.pick(("Paraspinal soft tissues are unremarkable.", "Incidental note of bilateral "
                                 "renal cysts.", "Tarlov cyst at S2.")))
        return "\n".join(lines)

    def region_lines(self, region: str, discs: range, every: bool, marrow_at: dict[int, list[int]]) -> list[str]:
        d, rem = self.d, self.rem
        lines = []
        abnormal = [i for i in discs if any(rem[c][i] for c in (*DISC_CONDITIONS, "ddd")) or i in marrow_at]
        if every:
            for i in discs:
                lines.append(self.level_line(i, marrow_at.get(i, ())))
            return lines
        # only the abnormal levels; runs of identical mild levels as one range line
        signature = {i: tuple(rem[c][i] for c in (*DISC_CONDITIONS, "ddd")) for i in abnormal}
        k = 0
        while k < len(abnormal):
            i = abnormal[k]
            run = [i]
            while (k + len(run) < len(abnormal) and abnormal[k + len(run)] == run[-1] + 1
                   and signature[abnormal[k + len(run)]] == signature[i] and not rem["listhesis"][i]
                   and i not in marrow_at and abnormal[k + len(run)] not in marrow_at):
                run.append(abnormal[k + len(run)])
            if len(run) >= 2 and d.chance(0.7):
                lines.append(self.range_line(run))
            else:
                run = [i]
                lines.append(self.level_line(i, marrow_at.get(i, ())))
            k += len(run)
        rest = [i for i in discs if i not in abnormal]
        if rest and self.try_negate(DISC_CONDITIONS, rest):
            lines.append(d.pick((f"Remaining {region} disc levels are unremarkable." if abnormal else
                                 f"No disc bulge or stenosis at any {region} level.",
                                 f"Otherwise no disc bulge, canal stenosis or foraminal narrowing in the {region} "
                                 "spine." if abnormal else f"{region.title()} disc levels are unremarkable.")))
        return lines

    def range_line(self, run: list[int]) -> str:
        d, rem = self.d, self.rem
        if len(run) == 2:
            label = f"{self.disc(run[0])} and {self.disc(run[1])}"
        else:
            label = f"{self.disc(run[0])} through {self.disc(run[-1])}"
        frags = []
        for cond in ("ddd", "disc_desiccation", "disc_height_loss", "disc_bulge", "disc_osteophyte",
                     "endplate_irregularity", "canal_stenosis"):
            grade = rem[cond][run[0]]
            if grade:
                frags.append(self.phrase(cond, grade, plural=True))
                self.take(cond, run, grade)
        if self.try_negate(("canal_stenosis",), run) and d.chance(0.5):
            frags.append("no stenosis")
        return f"{label}: {_cap(self.join(frags))}."

    def level_line(self, i: int, marrow: Sequence[int]) -> str:
        d, rem = self.d, self.rem
        frags = []
        if self.g["listhesis"][i]:
            frags.append(self.listhesis(i, self.g["listhesis"][i], with_level=d.chance(0.3)))
        telegraphic = d.chance(0.5)
        for cond in ("ddd", "disc_desiccation", "disc_height_loss", "disc_bulge", "disc_osteophyte",
                     "endplate_irregularity", "canal_stenosis"):
            grade = rem[cond][i]
            if not grade:
                continue
            if cond == "disc_bulge" and rem["canal_stenosis"][i] and d.chance(0.4):
                canal = rem["canal_stenosis"][i]
                frags.append(self.phrase(cond, grade, article=not telegraphic)
                             + d.pick((" resulting in ", " with ", " causing ")) + self.phrase("canal_stenosis", canal))
                self.take("canal_stenosis", [i], canal)
            elif d.chance(0.15):
                frags.append(self.postfix(cond, grade))
            else:
                frags.append(self.phrase(cond, grade, article=not telegraphic))
            self.take(cond, [i], grade)
        for j in marrow:  # vertebra i above the disc (inferior endplate) or i + 1 below it (superior endplate)
            frags.append(self.marrow([j], rem["marrow_change"][j], side="inferior" if j == i else "superior"))
        neighbours_clean = all(not self.g[c][j] for c in VERTEBRA_CONDITIONS for j in (i, i + 1) if j < _N)
        if not frags and neighbours_clean and d.chance(0.7):
            self.negate_level(i)
            return f"{self.disc(i)}: {d.pick(('Negative.', 'Unremarkable.', 'Normal.', 'Negative.'))}"
        if not self.g["canal_stenosis"][i] and d.chance(0.5):
            self.negate("canal_stenosis", [i])
            frags.append(d.pick(("no canal stenosis", "no spinal stenosis", "no central stenosis")))
        if not frags:
            self.negate_level(i)
            frags.append("no disc bulge, canal stenosis, or foraminal narrowing")
        if d.chance(0.3):
            frags.append(self.distractor_foramen(i) if d.chance(0.7) else
                         d.pick(("mild facet arthropathy", "moderate facet hypertrophy", "no foraminal narrowing",
                                 "ligamentum flavum thickening")))
        text = "; ".join(frags) if telegraphic else ". ".join(_cap(f) for f in frags)
        return f"{self.disc(i)}: {_cap(text)}."

    def negate_level(self, i: int) -> None:
        for c in DISC_CONDITIONS:
            assert not self.g[c][i]
            self.negated.add((c, i))

    def impression(self) -> str:
        d = self.d
        items = self.summary_items()
        head = d.pick(("IMPRESSION:", "IMPRESSION:", "Impression:"))
        return head + "\n" + "\n".join(f"{k}. {item}." for k, item in enumerate(items, 1))

    def artefacts(self, text: str) -> str:
        """Speech-recognition habits of the dictating radiologist."""
        d = self.d
        if d.chance(0.3):
            text = re.sub(r"([.:] )([A-Z])(?=[a-z])", lambda m: m.group(1) + m.group(2).lower(), text)
        if d.chance(0.4):
            text = "\n".join(line[:-1] if line.endswith(".") and not line[:3].rstrip(".").isdigit()
                             and d.chance(0.6) else line for line in text.split("\n"))
        if d.chance(0.06):
            k = text.find(". ", len(text) // 3)
            if k > 0:
                text = text[:k] + " period" + text[k + 1:]
        if d.chance(0.12):
            word = d.pick((" the ", " at ", " of ", " with ", " is "))
            k = text.find(word)
            if k >= 0:
                text = text[:k] + word + word.lstrip() + text[k + len(word):]
        if d.chance(0.12):
            text = _typo(text, d)
        return text

    def signoff(self) -> str:
        d = self.d
        rad = _doctor(self.h["radiologist"])
        when = self.exam + dt.timedelta(days=d.randint(0, 1)) if self.exam else None
        hour, minute = d.randint(7, 18), d.randint(0, 59)
        day = f"{when.month}/{when.day}/{when.year}" if when else self.h["exam_date"]
        sig = f"Electronically signed by: {rad}, MD on {day} at {(hour - 1) % 12 + 1}:{minute:02d} " \
              f"{'AM' if hour < 12 else 'PM'}"
        if d.chance(0.6):
            sig += ("\nThis report was generated using voice recognition software. Unintended word substitutions "
                    "may occur; please contact the reading radiologist with any questions.")
        return sig


def _typo(text: str, d: Dice) -> str:
    pattern, typo = d.pick(_TYPO_RES)
    return pattern.sub(typo, text, count=1)


def _wrap(text: str, width: int) -> str:
    """Hard line breaks inside sentences, as a RIS export does."""
    out = []
    for line in text.split("\n"):
        while len(line) > width:
            k = line.rfind(" ", 0, width)
            if k <= 0:
                break
            out.append(line[:k])
            line = line[k + 1:]
        out.append(line)
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------


def _compose(writer: type[_Writer], grades: Mapping[str, int], rng: np.random.Generator,
             header: Mapping[str, str]) -> tuple[str, _Writer]:
    """The report and its writer (whose claims / negated / hedged sets record what the text says)."""
    w = writer(grades, rng, header)
    return w.write(), w


def teaching_hospital(grades: Mapping[str, int], rng: np.random.Generator, header: Mapping[str, str]) -> str:
    """A report in the house style of a European teaching hospital."""
    return _TeachingHospital(grades, rng, header).write()


def dictation(grades: Mapping[str, int], rng: np.random.Generator, header: Mapping[str, str]) -> str:
    """A report dictated into speech recognition at a US private practice group."""
    return _Dictation(grades, rng, header).write()


HELD_OUT_STYLES: dict[str, Style] = {"teaching_hospital": teaching_hospital, "dictation": dictation}
_WRITERS: dict[str, type[_Writer]] = {"teaching_hospital": _TeachingHospital, "dictation": _Dictation}


def write_with_statements(style: str, grades: Mapping[str, int], rng: np.random.Generator,
                          header: Mapping[str, str]) -> tuple[str, set[str], set[str]]:
    """(report, the `<condition>__<level>` columns it states as absent or normal, the columns it hedges)."""
    text, writer = _compose(_WRITERS[style], grades, rng, header)
    return (text, {_COLUMNS[c][i] for c, i in writer.negated}, {_COLUMNS[c][i] for c, i in writer.hedged})


def draw_header(rng: np.random.Generator, sex: str | None = None) -> dict[str, str]:
    """A fake identity header: name ('LAST^FIRST'), MRN, birth and exam dates ('YYYYMMDD'), accession,
    referring physician and reading radiologist."""
    sex = sex or str(rng.choice(["F", "M"]))
    name = identity.patient_names(rng, np.array([sex]))[0]
    exam = int(identity.study_day(rng, 1)[0])
    birth = exam - int(rng.uniform(20.0, 85.0) * 365.25)
    doctors = identity.patient_names(rng, np.array(["F", "M"]))
    referring_last = doctors[0].split("^")[0].title()
    rad_last, rad_first = doctors[1].split("^")
    return {
        "name": name,
        "mrn": identity.unique_numbers(rng, 1, 8, "")[0],
        "birth_date": identity.date_string(birth),
        "exam_date": identity.date_string(exam),
        "accession": identity.unique_numbers(rng, 1, 9, "A")[0],
        "referring": f"Dr. {referring_last}",
        "radiologist": f"Dr. {rad_first[0]}. {rad_last.title()}",
    }
