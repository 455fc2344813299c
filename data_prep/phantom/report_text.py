"""Free-text spine MRI reports written from a graded pathology row, as the synthetic cohort's sites send them.

Real hospitals hand over radiology reports, not graded tables. Each function here writes one whole report
(identity header, history, comparison, findings, impression, sign-off) from a row of
`data_prep.phantom.findings` grades, in the manner of one site, so a text -> grades reader can be built and
measured against the truth. The contract (docs/report_text.md) is that a careful radiologist recovers the row:

- every nonzero (condition, level) grade is stated at its exact level with a severity word of that grade
  (mild/minimal/slight/small/early/trace = 1; moderate, mild to moderate = 2; severe/marked/advanced/large/
  extensive/pronounced, moderate to severe = 3), or on the condition's own scale (Meyerding grade for
  listhesis; Genant grade or percent height loss for fracture; Modic type 2 with a size word for marrow);
- a range ("L2-3 through L5-S1") or list ("at C4-5 and C5-6") only joins levels of one condition and grade;
  "DDD" with a severity means desiccation and height loss of that grade;
- negations, "unremarkable" and hedges ("questionable", "cannot exclude", "?", "versus") only cover grade-0
  pairs; history, comparison and distractor statements (foraminal narrowing, facet arthropathy) state no
  current grade.

A style is `(grades, rng, header) -> str`. `DEVELOPMENT_STYLES` holds three site templates (level_by_level,
narrative, impression_first); held-out styles live in another module so that a reader can be tested on sites
it never saw. `draw_header` makes the fake identity a report carries (built on `identity`), and
`write_reports` writes one report per table row, each seeded from (seed, row position) alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from data_prep.phantom import findings, identity, report_text_held_out
from data_prep.phantom.dice import Dice
from spinejax.scans import spine_labels

Style = Callable[[Mapping[str, int], np.random.Generator, Mapping[str, str]], str]

DISC_CONDITIONS: tuple[str, ...] = tuple(c for c, (_, _, kind) in findings.GRADING.items() if kind == "disc")
VERTEBRA_CONDITIONS: tuple[str, ...] = tuple(c for c, (_, _, kind) in findings.GRADING.items() if kind == "vertebra")
_DISCS = spine_labels.DISC_LEVELS
_VERTS = spine_labels.VERTEBRAE
_N = len(_DISCS)
_DISC_REGION = tuple(spine_labels.region_of_level(level) for level in _DISCS)
_VERT_REGION = tuple(spine_labels.region_of_level(v) for v in _VERTS)
_ENDS = tuple(tuple(level.split("-")) for level in _DISCS)  # ('L4', 'L5'), ..., ('L5', 'S1')
# Discs of a region: those with either end in it (C7-T1 belongs to the cervical and the thoracic spine), so
# a statement about a region's discs also covers the junctions next to it.
_TOUCHES = tuple({spine_labels.region_of_level(u), spine_labels.region_of_level(lo if lo != "S1" else u)}
                 for u, lo in _ENDS)
_REGION_DISCS = {r: tuple(i for i, regions in enumerate(_TOUCHES) if r in regions) for r in spine_labels.REGIONS}
_REGION_VERTS = {r: tuple(i for i, reg in enumerate(_VERT_REGION) if reg == r) for r in spine_labels.REGIONS}
_JUNCTIONS = {_DISCS.index("C7-T1"): "the cervicothoracic junction",
              _DISCS.index("T12-L1"): "the thoracolumbar junction", _DISCS.index("L5-S1"): "the lumbosacral junction"}


def _disc_notations() -> dict[str, tuple[str, ...]]:
    forms: dict[str, list[str]] = {k: [] for k in ("full", "short", "slash", "slash_full", "spaced", "lower", "concat")}
    for u, lo in _ENDS:
        short_lo = lo[1:] if u[0] == lo[0] else lo
        forms["full"].append(f"{u}-{lo}")
        forms["short"].append(f"{u}-{short_lo}")
        forms["slash"].append(f"{u}/{short_lo}")
        forms["slash_full"].append(f"{u}/{lo}")
        forms["spaced"].append(f"{u} - {lo}")
        forms["lower"].append(f"{u}-{short_lo}".lower())
        forms["concat"].append(f"{u}{lo}")
    return {k: tuple(v) for k, v in forms.items()}


_DISC_FORMS = _disc_notations()
_NOTATIONS = ("full", "short", "slash", "slash_full", "spaced", "lower", "concat")
_NOTATION_WEIGHTS = (0.3, 0.36, 0.12, 0.08, 0.05, 0.06, 0.03)

# ---------------------------------------------------------------------------------------------------------
# Vocabulary. Repeated entries weight the draw.

_MILD, _MOD, _SEV = ("mild", "mild", "mild", "minimal", "slight"), ("moderate", "moderate", "moderate",
                                                                    "mild to moderate", "mild-moderate"), \
    ("severe", "severe", "marked", "moderate to severe", "moderate-severe")
_ADJ: dict[str, tuple[tuple[str, ...], ...]] = {
    "disc_bulge": (_MILD + ("small", "small"), _MOD, ("severe", "large", "large", "marked", "moderate to severe")),
    "disc_desiccation": (_MILD + ("early",), _MOD, _SEV + ("advanced", "pronounced")),
    "disc_height_loss": (_MILD + ("early",), _MOD, _SEV + ("advanced",)),
    "disc_osteophyte": (_MILD + ("small", "small", "early"), _MOD, ("severe", "large", "large", "marked",
                                                                    "moderate to severe")),
    "canal_stenosis": (_MILD, _MOD, _SEV + ("advanced",)),
    "endplate_irregularity": (_MILD, _MOD, _SEV + ("pronounced",)),
    "listhesis": (_MILD + ("trace",), _MOD, ("severe", "marked", "moderate to severe")),
    "fracture": (_MILD, _MOD, ("severe", "severe", "marked", "moderate to severe")),
    "marrow_change": (_MILD + ("trace",), _MOD, ("extensive", "extensive", "marked", "severe", "pronounced")),
}
# Adjectives that read badly after "is" ("the bulge is trace"): left out of predicative use.
_NOT_PREDICATIVE = {"early", "trace", "small", "large"}
_PRED = {c: tuple(tuple(a for a in adjs if a not in _NOT_PREDICATIVE) for adjs in grades) for c, grades in _ADJ.items()}
_ADV = (("mildly", "mildly", "minimally", "slightly"), ("moderately",), ("severely", "markedly"))
_MEYERDING = (("grade 1", "grade I", "Meyerding grade 1", "Meyerding grade I"),
              ("grade 2", "grade II", "Meyerding grade 2", "Meyerding grade II"),
              ("grade 3", "grade III", "Meyerding grade III"))
_GENANT = (("Genant grade 1", "Genant 1", "grade 1 (Genant)"), ("Genant grade 2", "Genant 2", "grade 2 (Genant)"),
           ("Genant grade 3", "Genant 3", "grade 3 (Genant)"))
_PERCENT = (("approximately 20%", "about 20%", "20-25%", "approximately 20-25%", "roughly 22%"),
            ("approximately 30%", "about 30-35%", "approximately 35%", "roughly 30%"),
            ("approximately 50%", "greater than 40%", "more than 40%", "about 45%", "over 50%"))

# (singular, plural, kind): 'count' takes "a"/"an", 'mass' no article, 'pl' is plural even at one level.
_NOUNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "disc_bulge": (("disc bulge", "disc bulges", "count"), ("disc bulge", "disc bulges", "count"),
                   ("broad-based disc bulge", "broad-based disc bulges", "count"),
                   ("diffuse disc bulge", "diffuse disc bulges", "count"), ("annular bulge", "annular bulges", "count"),
                   ("bulging disc", "bulging discs", "count"), ("broad-based bulge", "broad-based bulges", "count"),
                   ("diffuse bulge", "diffuse bulges", "count"), ("disc bulging", "disc bulging", "mass")),
    "disc_desiccation": (("disc desiccation", "disc desiccation", "mass"), ("desiccation", "desiccation", "mass"),
                         ("loss of T2 signal", "loss of T2 signal", "mass"),
                         ("loss of disc signal", "loss of disc signal", "mass"),
                         ("decreased disc signal", "decreased disc signal", "mass"),
                         ("disc dehydration", "disc dehydration", "mass")),
    "disc_height_loss": (("loss of disc height", "loss of disc height", "mass"),
                         ("disc height loss", "disc height loss", "mass"),
                         ("disc space narrowing", "disc space narrowing", "mass"),
                         ("reduction in disc height", "reduction in disc height", "mass"),
                         ("narrowing of the disc space", "narrowing of the disc spaces", "mass")),
    "disc_osteophyte": (("osteophytes", "osteophytes", "pl"), ("anterior osteophytes", "anterior osteophytes", "pl"),
                        ("osteophytic spurring", "osteophytic spurring", "mass"),
                        ("marginal osteophytes", "marginal osteophytes", "pl"),
                        ("spondylotic spurring", "spondylotic spurring", "mass"),
                        ("osteophyte formation", "osteophyte formation", "mass"),
                        ("anterior spur", "anterior spurs", "count"), ("marginal spurs", "marginal spurs", "pl")),
    "canal_stenosis": (("central canal stenosis", "central canal stenosis", "mass"),
                       ("central canal stenosis", "central canal stenosis", "mass"),
                       ("spinal canal stenosis", "spinal canal stenosis", "mass"),
                       ("canal stenosis", "canal stenosis", "mass"), ("central stenosis", "central stenosis", "mass"),
                       ("spinal stenosis", "spinal stenosis", "mass"),
                       ("narrowing of the central canal", "narrowing of the central canal", "mass"),
                       ("narrowing of the spinal canal", "narrowing of the spinal canal", "mass"),
                       ("canal narrowing", "canal narrowing", "mass"),
                       ("thecal sac narrowing", "thecal sac narrowing", "mass"),
                       ("effacement of the thecal sac", "effacement of the thecal sac", "mass")),
    "endplate_irregularity": (("endplate irregularity", "endplate irregularity", "mass"),
                              ("irregularity of the endplates", "irregularity of the endplates", "mass"),
                              ("endplate undulation", "endplate undulation", "mass"),
                              ("irregular endplate contour", "irregular endplate contours", "mass")),
    "listhesis": (("anterolisthesis", "anterolisthesis", "mass"), ("anterolisthesis", "anterolisthesis", "mass"),
                  ("spondylolisthesis", "spondylolisthesis", "mass"), ("listhesis", "listhesis", "mass"),
                  ("anterior slip", "anterior slips", "count")),
    "fracture": (("compression fracture", "compression fractures", "count"),
                 ("compression fracture", "compression fractures", "count"),
                 ("wedge compression fracture", "wedge compression fractures", "count"),
                 ("anterior wedge deformity", "anterior wedge deformities", "count"),
                 ("compression deformity", "compression deformities", "count"),
                 ("wedge fracture", "wedge fractures", "count")),
    "marrow_change": (("Modic type 2 endplate change", "Modic type 2 endplate changes", "count"),
                      ("Modic type 2 changes", "Modic type 2 changes", "pl"),
                      ("Modic type 2 signal", "Modic type 2 signal", "mass"),
                      ("type II Modic change", "type II Modic changes", "count"),
                      ("Modic 2 endplate signal", "Modic 2 endplate signal", "mass"),
                      ("fatty endplate marrow change", "fatty endplate marrow changes", "count"),
                      ("Modic type II degenerative endplate signal", "Modic type II degenerative endplate signal",
                       "mass")),
}
# Subjects of "X is moderate at L4-5": read as the condition, never as a different one.
_PRED_NOUN = {
    "disc_bulge": ("Disc bulging", "Bulging of the disc"), "disc_desiccation": ("Disc desiccation", "Desiccation"),
    "disc_height_loss": ("Loss of disc height", "Disc space narrowing", "Disc height loss"),
    "disc_osteophyte": ("Osteophytic spurring", "Osteophyte formation"),
    "canal_stenosis": ("Central canal stenosis", "Canal stenosis", "Spinal canal narrowing"),
    "endplate_irregularity": ("Endplate irregularity",), "listhesis": ("Anterolisthesis",),
    "fracture": ("Vertebral body height loss",), "marrow_change": ("Modic type 2 endplate signal",),
}
_LABEL = {  # headings of telegraphic "Label: moderate at L4-5" lines
    "disc_bulge": ("Disc bulges", "Bulges", "Disc bulging"), "disc_desiccation": ("Desiccation", "Disc desiccation",
                                                                                 "Disc signal loss"),
    "disc_height_loss": ("Disc height loss", "Disc space narrowing", "Loss of disc height"),
    "disc_osteophyte": ("Osteophytes", "Spurring", "Osteophytic spurring"),
    "canal_stenosis": ("Central canal stenosis", "Canal stenosis", "Spinal stenosis"),
    "endplate_irregularity": ("Endplate irregularity", "Irregular endplates"),
    "listhesis": ("Anterolisthesis", "Listhesis", "Spondylolisthesis"),
    "fracture": ("Compression fractures", "Fractures", "Wedge deformity"),
    "marrow_change": ("Modic type 2 change", "Modic 2 signal", "Modic change (type 2)"),
}
_DDD = {1: ("mild degenerative disc disease", "mild DDD", "early degenerative disc disease",
            "mildly degenerated disc", "minimal DDD"),
        2: ("moderate degenerative disc disease", "moderate DDD", "moderately degenerated disc",
            "mild to moderate DDD"),
        3: ("severe degenerative disc disease", "severe DDD", "advanced degenerative disc disease",
            "severely degenerated disc", "advanced DDD")}

_TYPOS = {
    "mild": ("mlid", "midl"), "moderate": ("moderat", "modrate", "moderte"), "severe": ("sever", "sevear", "severre"),
    "minimal": ("minmal", "minimla"), "marked": ("markd",), "moderately": ("moderatly",),
    "stenosis": ("stenosi", "stensis", "stenossis"), "desiccation": ("desication", "dessication", "desiccaton"),
    "osteophytes": ("osteophtyes", "osteophyes"), "osteophyte": ("osteophtye",), "bulge": ("bulgle", "buldge"),
    "bulges": ("bulgles",), "anterolisthesis": ("anterolisthsis", "anterolistesis"),
    "retrolisthesis": ("retrolisthsis",), "spondylolisthesis": ("spondylolisthsis", "spondylolithesis"),
    "fracture": ("fracutre", "fratcure"), "irregularity": ("irregularty", "irreguarity"),
    "narrowing": ("narowing", "narrowng"), "deformity": ("defomity",), "endplate": ("endplte", "enplate"),
    "height": ("hieght",), "spurring": ("spuring",), "Modic": ("Modc",), "degenerative": ("degenrative",),
}

_FORAMINA = ("neural foraminal narrowing", "foraminal narrowing", "foraminal stenosis", "neuroforaminal narrowing")
_SIDES = ("bilateral ", "left ", "right ", "bilateral ", "")
_DISTRACTOR_SEV = ("mild", "mild", "moderate", "severe", "minimal")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _runs(idxs: Sequence[int]) -> bool:
    """Whether sorted `idxs` are consecutive."""
    return idxs[-1] - idxs[0] == len(idxs) - 1


class _Writer:
    """One report being written: the row's grades, the reader's habits (drawn once) and a log of every
    statement made about a (condition, level) pair, which the tests hold against the truth."""

    def __init__(self, grades: Mapping[str, int], rng: np.random.Generator, header: Mapping[str, str]):
        self.d = d = Dice(rng)
        self.h = header
        self.g: dict[str, list[int]] = {}
        for cond, (_, _, kind) in findings.GRADING.items():
            levels = _DISCS if kind == "disc" else _VERTS
            row = [int(grades[f"{cond}__{level}"]) for level in levels]
            if min(row) < 0 or max(row) > 3:
                raise ValueError(f"grades of {cond} must be 0-3, got {row}")
            self.g[cond] = row
        # (condition, level index, grade, 'pos' | 'neg' | 'hedge')
        self.claims: list[tuple[str, int, int, str]] = []
        self.notation = d.weighted(_NOTATIONS, _NOTATION_WEIGHTS)
        self.junctions = d.chance(0.4)
        self.typo_rate = 0.0 if d.chance(0.6) else d.pick((0.03, 0.06, 0.12))
        self.abbrev = d.chance(0.15)
        self.meyerding = d.u()  # share of listhesis grades given on the Meyerding scale
        self.fracture_scale = d.pick(("words", "words", "genant", "percent", "mixed"))
        self.ddd = d.chance(0.35)
        self.wording: dict[str, tuple] = {}  # the reader's own 2-3 synonyms per condition

    # -- pairs -------------------------------------------------------------------------------------------
    def nonzero(self, cond: str, idxs: Sequence[int]) -> list[int]:
        row = self.g[cond]
        return [i for i in idxs if row[i]]

    def zero(self, cond: str, idxs: Sequence[int]) -> bool:
        row = self.g[cond]
        return not any(row[i] for i in idxs)

    def said(self, cond: str, idxs: Sequence[int], grade: int, kind: str = "pos") -> None:
        """Logs that the text states `grade` (0 for 'neg' and 'hedge') for `cond` at each of `idxs`."""
        for i in idxs:
            self.claims.append((cond, i, grade, kind))

    def deny(self, conds: Sequence[str], idxs: Sequence[int]) -> bool:
        """Records a negative statement over these pairs if all are grade 0; False (record nothing) otherwise."""
        if any(not self.zero(c, idxs) for c in conds):
            return False
        for c in conds:
            self.said(c, idxs, 0, "neg")
        return True

    def quiet_disc(self, i: int) -> bool:
        """Whether 'unremarkable' may be said of disc level i: nothing at the disc nor at its two vertebrae."""
        if any(self.g[c][i] for c in DISC_CONDITIONS):
            return False
        verts = (i, i + 1) if i + 1 < _N else (i,)
        return not any(self.g[c][v] for c in VERTEBRA_CONDITIONS for v in verts)

    def deny_all(self, discs: Sequence[int], verts: Sequence[int] = ()) -> bool:
        """Records 'unremarkable' over the discs (with their vertebrae) and vertebrae, if all are grade 0."""
        if not all(self.quiet_disc(i) for i in discs) or any(self.g[c][v] for c in VERTEBRA_CONDITIONS for v in verts):
            return False
        for c in DISC_CONDITIONS:
            self.said(c, discs, 0, "neg")
        allv = sorted({*verts, *discs, *(i + 1 for i in discs if i + 1 < _N)})
        for c in VERTEBRA_CONDITIONS:
            self.said(c, allv, 0, "neg")
        return True

    def quiet_region(self, region: str) -> bool:
        return all(self.quiet_disc(i) for i in _REGION_DISCS[region]) and not any(
            self.g[c][v] for c in VERTEBRA_CONDITIONS for v in _REGION_VERTS[region])

    # -- words -------------------------------------------------------------------------------------------
    def typo(self, text: str) -> str:
        if not self.typo_rate or not self.d.chance(self.typo_rate):
            return text
        words = text.split(" ")
        spots = [k for k, w in enumerate(words) if w in _TYPOS]
        if spots:
            k = self.d.pick(spots)
            words[k] = self.d.pick(_TYPOS[words[k]])
        return " ".join(words)

    def adj(self, cond: str, grade: int, predicative: bool = False) -> str:
        word = self.d.pick((_PRED if predicative else _ADJ)[cond][grade - 1])
        if self.abbrev and self.d.chance(0.35):
            word = {"moderate": "mod", "severe": "sev"}.get(word, word)
        return word

    def adv(self, grade: int) -> str:
        return self.d.pick(_ADV[grade - 1])

    def noun(self, cond: str) -> tuple[str, str, str]:
        own = self.wording.get(cond)
        if own is None:
            options = _NOUNS[cond]
            own = self.wording[cond] = tuple(self.d.pick(options) for _ in range(3))
        return self.d.pick(own) if self.d.chance(0.9) else self.d.pick(_NOUNS[cond])

    def dname(self, i: int, junction: bool = True) -> str:
        if junction and self.junctions and i in _JUNCTIONS and self.d.chance(0.35):
            return _JUNCTIONS[i]
        notation = self.notation if self.d.chance(0.94) else self.d.pick(_NOTATIONS[:4])
        return _DISC_FORMS[notation][i]

    def dlist(self, idxs: Sequence[int], prep: str = "at", junction: bool = True) -> str:
        """Where a same-grade finding is, over sorted disc indices: 'at L4-5', 'from L2-3 through L5-S1'."""
        p = f"{prep} " if prep else ""
        if len(idxs) == 1:
            if prep == "at" and self.d.chance(0.15):
                return f"at the {self.dname(idxs[0], False)} level"
            return p + self.dname(idxs[0], junction)
        if len(idxs) >= 3 and _runs(idxs) and self.d.chance(0.6):
            a, b = self.dname(idxs[0], False), self.dname(idxs[-1], junction)
            form = self.d.pick(("from {a} through {b}", "from {a} to {b}", "{p}{a} through {b}", "{p}{a} to {b}"))
            return form.format(a=a, b=b, p=p)
        names = [self.dname(i, junction) for i in idxs]
        if prep == "at" and self.d.chance(0.1) and not any(n.startswith("the ") for n in names):
            return f"at the {self._join(names)} levels"
        return p + self._join(names)

    def vlist(self, idxs: Sequence[int], prep: str = "of") -> str:
        p = f"{prep} " if prep else ""
        if len(idxs) == 1:
            return p + self.d.pick((_VERTS[idxs[0]], _VERTS[idxs[0]], f"the {_VERTS[idxs[0]]} vertebral body",
                                    f"the {_VERTS[idxs[0]]} vertebra"))
        if len(idxs) >= 3 and _runs(idxs) and self.d.chance(0.5):
            return p + f"{_VERTS[idxs[0]]} through {_VERTS[idxs[-1]]}"
        return p + self._join([_VERTS[v] for v in idxs])

    def _join(self, names: list[str]) -> str:
        if len(names) == 1:
            return names[0]
        if self.d.chance(0.1):
            return ", ".join(names[:-1]) + ", and " + names[-1] if len(names) > 2 else f"{names[0]} and {names[1]}"
        return ", ".join(names[:-1]) + " and " + names[-1]

    # -- noun phrases ------------------------------------------------------------------------------------
    def np(self, cond: str, grade: int, plural: bool = False) -> tuple[str, str, str]:
        """(phrase before the location, phrase after it, 'count' | 'mass' | 'plural') of one graded finding."""
        d = self.d
        sing, plur, kind = self.noun(cond)
        noun = plur if plural else sing
        kind = "plural" if kind == "pl" or (plural and kind == "count") else kind
        post = ""
        if cond == "listhesis":
            if grade == 1 and d.chance(0.05):
                # The contract's synonym, though the phantom's slips are anterior: rare, mild and in words.
                return self.typo(f"{self.adj(cond, grade)} retrolisthesis"), "", "mass"
            sev = d.pick(_MEYERDING[grade - 1]) if d.u() < self.meyerding else self.adj(cond, grade)
            if d.chance(0.08) and not sev.startswith(("grade", "Meyerding")):
                sev = f"{sev} ({d.pick(_MEYERDING[grade - 1])})"
        elif cond == "fracture":
            scale = self.fracture_scale if self.fracture_scale != "mixed" else d.pick(("words", "genant", "percent"))
            if scale == "percent" and not plural:
                sev = d.pick(("", "", "chronic-appearing", "old"))
                post = d.pick((" with {p} loss of anterior height", " with {p} anterior height loss",
                               " ({p} vertebral body height loss)", " with loss of {p} of the anterior vertebral "
                               "body height")).format(p=d.pick(_PERCENT[grade - 1]))
            elif scale == "genant":
                sev = d.pick(_GENANT[grade - 1])
                if d.chance(0.3):
                    sev = f"{self.adj(cond, grade)} (Genant {d.pick(('', 'grade '))}{grade})"
            else:
                sev = self.adj(cond, grade)
        elif cond == "marrow_change":
            sev = self.adj(cond, grade)
        elif cond in ("disc_desiccation", "disc_height_loss", "canal_stenosis") and d.chance(0.12) and not plural:
            # adverb + participle: 'moderately desiccated disc', 'severely narrowed canal'
            part = {"disc_desiccation": ("desiccated disc", "dehydrated disc", "dark disc"),
                    "disc_height_loss": ("reduced disc height", "decreased disc height", "narrowed disc space"),
                    "canal_stenosis": ("narrowed central canal", "narrowed spinal canal")}[cond]
            noun = d.pick(part)
            kind = "count" if noun.endswith(("disc", "space", "canal")) else "mass"
            sev = self.adv(grade)
        else:
            sev = self.adj(cond, grade)
        text = f"{sev} {noun}" if sev else noun
        return self.typo(text), self.typo(post) if post else "", kind

    def dloc(self, cond: str, idxs: Sequence[int]) -> str:
        if cond == "listhesis" and len(idxs) == 1 and self.d.chance(0.6):
            u, lo = _ENDS[idxs[0]]
            return f"of {u} on {lo}"
        if cond in ("disc_desiccation",) and self.d.chance(0.2):
            noun = "disc" if len(idxs) == 1 else "discs"
            loc = self.dlist(idxs, "", junction=False)
            return f"{self.d.pick(('of the', 'in the'))} {loc} {noun}" if not loc.startswith("from") else loc
        return self.dlist(idxs)

    def vloc(self, cond: str, idxs: Sequence[int]) -> str:
        d = self.d
        if cond == "marrow_change":
            if len(idxs) == 1:
                v = _VERTS[idxs[0]]
                return d.pick((f"at {v}", f"at the {v} {d.pick(('inferior', 'superior'))} endplate",
                               f"involving the {v} vertebral body", f"within the {v} vertebral body",
                               f"along the {v} endplates"))
            if len(idxs) == 2 and idxs[1] == idxs[0] + 1 and d.chance(0.5):
                return f"at the {_VERTS[idxs[0]]} inferior and {_VERTS[idxs[1]]} superior endplates"
            return self.vlist(idxs, d.pick(("at", "involving")))
        return self.vlist(idxs, d.pick(("of", "of", "at", "involving")))

    def loc(self, cond: str, idxs: Sequence[int]) -> str:
        return self.vloc(cond, idxs) if cond in VERTEBRA_CONDITIONS else self.dloc(cond, idxs)

    # -- sentences ---------------------------------------------------------------------------------------
    def stmt(self, cond: str, idxs: Sequence[int]) -> str:
        """One sentence stating a same-grade finding at the levels `idxs`."""
        grade = self.g[cond][idxs[0]]
        plural = len(idxs) > 1
        pre, post, kind = self.np(cond, grade, plural)
        loc = self.loc(cond, idxs)
        self.said(cond, idxs, grade)
        d = self.d
        r = d.u()
        if r < 0.35:
            verb = "There are" if kind == "plural" else "There is"
            art = ("an " if pre[0] in "aeiouAEIOU" else "a ") if kind == "count" else ""
            return f"{verb} {art}{pre} {loc}{post}."
        if r < 0.55 and loc.startswith("at ") and not post:
            verb = "there are" if kind == "plural" else "there is"
            art = ("an " if pre[0] in "aeiouAEIOU" else "a ") if kind == "count" else ""
            return f"{_cap(loc)}, {verb} {art}{pre}."
        if r < 0.62 and loc.startswith("at ") and not post:
            return f"{_cap(loc)}: {pre}."
        return f"{_cap(pre)} {loc}{post}."

    def pred_stmt(self, cond: str, groups: Sequence[tuple[int, list[int]]]) -> str:
        """'Disc desiccation is mild at C5-6, moderate at L3-4 and L4-5 and severe at L5-S1.'"""
        parts = []
        for grade, idxs in groups:
            self.said(cond, idxs, grade)
            where = self.dloc(cond, idxs) if cond in DISC_CONDITIONS else self.vlist(idxs, "at")
            parts.append(f"{self.typo(self.adj(cond, grade, predicative=True))} {where}")
        verb = "is" if self.d.chance(0.8) else "is seen,"
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{self.typo(self.d.pick(_PRED_NOUN[cond]))} {verb} {body}."

    def colon_line(self, cond: str, groups: Sequence[tuple[int, list[int]]]) -> str:
        """'Desiccation: mild at C5-6 and C6-7; moderate L3-4 through L5-S1.'"""
        parts = []
        bare = self.d.chance(0.4)
        for grade, idxs in groups:
            self.said(cond, idxs, grade)
            if cond == "listhesis" and self.d.u() < self.meyerding:
                word = self.d.pick(_MEYERDING[grade - 1])
            elif cond == "fracture" and self.fracture_scale == "genant":
                word = self.d.pick(_GENANT[grade - 1])
            else:
                word = self.typo(self.adj(cond, grade))
            where = (self.dlist(idxs, "" if bare else "at") if cond in DISC_CONDITIONS
                     else self.vlist(idxs, "" if bare else "at"))
            parts.append(f"{word} {where}")
        return f"{self.d.pick(_LABEL[cond])}: {'; '.join(parts)}."

    def level_phrases(self, i: int, conds: Sequence[str], listhesis_loc: bool = True) -> list[str]:
        """Noun phrases of the findings `conds` (all nonzero) at disc level i, location left to the caller."""
        d = self.d
        conds = list(conds)
        out = []
        if (self.ddd and "disc_desiccation" in conds and "disc_height_loss" in conds
                and self.g["disc_desiccation"][i] == self.g["disc_height_loss"][i] and d.chance(0.7)):
            grade = self.g["disc_desiccation"][i]
            self.said("disc_desiccation", [i], grade)
            self.said("disc_height_loss", [i], grade)
            out.append(self.typo(d.pick(_DDD[grade])))
            conds = [c for c in conds if c not in ("disc_desiccation", "disc_height_loss")]
        for cond in conds:
            grade = self.g[cond][i]
            pre, post, _ = self.np(cond, grade, plural=False)
            self.said(cond, [i], grade)
            if cond == "listhesis" and listhesis_loc and d.chance(0.5):
                u, lo = _ENDS[i]
                pre = f"{pre} of {u} on {lo}"
            out.append(pre + post)
        return out

    def join_phrases(self, phrases: list[str], conds: Sequence[str] | None = None, one_sentence: bool = False) -> str:
        """Phrases of one level as one sentence or (under a level heading) several; 'X resulting in Y' where a
        bulge narrows the canal."""
        d = self.d
        if len(phrases) == 1:
            return _cap(phrases[0]) + "."
        r = d.u() * (0.65 if one_sentence else 1.0) + (0.35 if one_sentence else 0.0)
        if r < 0.35:
            return " ".join(_cap(p) + "." for p in phrases)
        if r < 0.5 and conds is not None and "canal_stenosis" in conds and len(conds) == len(phrases):
            k = list(conds).index("canal_stenosis")
            rest = phrases[:k] + phrases[k + 1:]
            link = d.pick((" resulting in ", " causing ", " with ", ", contributing to "))
            return _cap(self._join(rest)) + link + phrases[k] + "."
        if r < 0.7:
            return _cap(phrases[0]) + " with " + self._join(phrases[1:]) + "."
        return _cap(self._join(phrases)) + "." if d.chance(0.6) else _cap(", ".join(phrases)) + "."

    def groups(self, cond: str, idxs: Sequence[int]) -> list[tuple[int, list[int]]]:
        """Nonzero levels among `idxs`, grouped by grade (mildest first)."""
        row = self.g[cond]
        by: dict[int, list[int]] = {}
        for i in idxs:
            if row[i]:
                by.setdefault(row[i], []).append(i)
        return sorted(by.items())

    def split_group(self, idxs: list[int]) -> list[list[int]]:
        """A same-grade group said in one go, or in pieces when long or scattered."""
        if len(idxs) <= 3 or (_runs(idxs) and self.d.chance(0.7)) or self.d.chance(0.5):
            return [idxs]
        cut = self.d.randint(1, len(idxs) - 1)
        return [idxs[:cut], idxs[cut:]]

    # -- negations, hedges, distractors -----------------------------------------------------------------
    def hedge(self, discs: Sequence[int], verts: Sequence[int]) -> str | None:
        """A hedged statement about one grade-0 pair in scope, or None when there is none to pick."""
        d = self.d
        cond = d.weighted(("listhesis", "fracture", "marrow_change", "canal_stenosis", "disc_bulge",
                           "endplate_irregularity", "disc_osteophyte"), (3, 2, 2, 2, 1, 1, 0.5))
        kind = findings.GRADING[cond][2]
        scope = discs if kind == "disc" else verts
        free = [i for i in scope if not self.g[cond][i]]
        if not free:
            return None
        i = d.pick(free)
        self.said(cond, [i], 0, "hedge")
        small = d.pick(_ADJ[cond][0]) if d.chance(0.6) else ""
        if kind == "disc":
            at = f"at {self.dname(i)}"
            if cond == "listhesis":
                u, lo = _ENDS[i]
                noun = d.pick(("retrolisthesis", "anterolisthesis", "listhesis"))
                at = d.pick((at, f"of {u} on {lo}"))
                return d.pick((f"Questionable {small or 'minimal'} {noun} {at}.",
                               f"Possible {small} {noun} {at}, may be positional.",
                               f"{_cap(small or 'trace')} {noun} {at} versus positional.",
                               f"? trace {noun} {at}.", f"Equivocal {small or 'minimal'} {noun} {at}.",
                               f"{_cap(noun)} {at} cannot be excluded.")).replace("  ", " ")
            noun = self.noun(cond)[0]
            return d.pick((f"Possible {small} {noun} {at}.", f"Questionable {small} {noun} {at}.",
                           _cap(f"{small} {noun} {at} cannot be excluded.".lstrip()),
                           f"Cannot exclude {small} {noun} {at}.", f"Equivocal {small} {noun} {at}.",
                           f"Suspected {small} {noun} {at}, not definite.")).replace("  ", " ").replace(" .", ".")
        v = _VERTS[i]
        if cond == "fracture":
            return d.pick((f"Possible {small} superior endplate compression fracture of {v}.",
                           f"Cannot exclude a {small or 'subtle'} compression fracture of {v}.",
                           f"Questionable {small or 'subtle'} anterior wedging of {v}.",
                           f"Suspected {small} compression deformity of {v}, not definite.",
                           f"? fracture {v}.", f"Equivocal height loss of the {v} vertebral body.")).replace("  ", " ")
        return d.pick((f"Subtle endplate signal at {v} may represent {small or 'early'} Modic type 2 change.",
                       f"Possible {small} Modic type 2 signal at the {v} inferior endplate.",
                       f"Questionable fatty endplate marrow change at {v}.",
                       f"Equivocal Modic type 2 change at {v} versus artifact.")).replace("  ", " ")

    def foramina(self) -> str:
        """Foraminal narrowing: not canal stenosis and not graded, so any severity goes."""
        d = self.d
        return self.typo(f"{d.pick(_DISTRACTOR_SEV)} {d.pick(_SIDES)}{d.pick(_FORAMINA)}")

    def facets(self) -> str:
        d = self.d
        kind = d.pick(("facet arthropathy", "facet joint hypertrophy", "facet arthrosis"))
        return f"{d.pick(_DISTRACTOR_SEV)} {kind}"

    def level_negation(self, i: int, present: Sequence[str]) -> str | None:
        """A negative statement about grade-0 conditions at disc level i (never one in `present`)."""
        d = self.d
        options = []
        for conds, texts in (
            (("canal_stenosis",), ("No canal stenosis.", "No central canal stenosis.", "The central canal is patent.",
                                   "No spinal stenosis.")),
            (("disc_bulge",), ("No disc bulge.", "No significant disc bulge.")),
            (("disc_bulge", "canal_stenosis"), ("No disc bulge or canal stenosis.", "No disc bulge or stenosis.",
                                                "No disc bulge, canal stenosis or foraminal narrowing.")),
            (("disc_height_loss",), ("Disc height is preserved.", "Normal disc height.")),
            (("disc_desiccation",), ("Normal disc signal.", "Disc hydration is preserved.")),
            (("listhesis",), ("No listhesis.", "No anterolisthesis.")),
            (("disc_osteophyte",), ("No osteophytes.",)),
        ):
            if not any(c in present for c in conds) and self.zero(conds[0], [i]) and all(
                    self.zero(c, [i]) for c in conds):
                options.append((conds, texts))
        if not options:
            return None
        conds, texts = d.pick(options)
        self.deny(conds, [i])
        return d.pick(texts)

    def vertebra_negations(self, verts: Sequence[int], otherwise: bool) -> tuple[list[str], list[str]]:
        """Statements that the (other) vertebrae in scope have no fracture, and no marrow change."""
        d = self.d
        out: list[str] = []
        marrow: list[str] = []
        if self.zero("fracture", verts):
            self.deny(("fracture",), verts)
            out.append(d.pick(("Vertebral body heights are maintained.", "No fracture.", "No compression fracture.",
                               "No acute fracture.", "Vertebral body heights are preserved.")))
        elif otherwise and not all(self.g["fracture"][v] for v in verts):
            rest = [v for v in verts if not self.g["fracture"][v]]
            self.deny(("fracture",), rest)
            out.append(d.pick(("Vertebral body heights are otherwise maintained.", "No other fracture.",
                               "No acute fracture elsewhere.", "No additional fracture is seen.")))
        if self.zero("marrow_change", verts):
            self.deny(("marrow_change",), verts)
            marrow.append(d.pick(("Normal marrow signal.", "Bone marrow signal is normal.", "No Modic changes.",
                                  "Marrow signal is within normal limits.")))
        elif otherwise and not all(self.g["marrow_change"][v] for v in verts):
            rest = [v for v in verts if not self.g["marrow_change"][v]]
            self.deny(("marrow_change",), rest)
            marrow.append(d.pick(("Marrow signal is otherwise normal.", "Otherwise normal marrow signal.")))
        return out, marrow

    def alignment(self, discs: Sequence[int], scope: Sequence[int] | None = None) -> list[str]:
        """Each listhesis at `discs` stated; 'alignment is (otherwise) normal' when true of all `scope`
        (default `discs`): the latter may be empty."""
        d = self.d
        scope = discs if scope is None else scope
        slips = self.nonzero("listhesis", discs)
        out = [self.stmt("listhesis", [i]) for i in slips]
        rest = [i for i in scope if i not in slips]
        if not slips:
            if self.deny(("listhesis",), scope):
                out.append(d.pick(("Alignment is normal.", "Normal alignment.", "Alignment is maintained.",
                                   "No listhesis.", "Normal alignment without listhesis.")))
        elif rest and d.chance(0.5) and self.deny(("listhesis",), rest):
            out.append(d.pick(("Alignment is otherwise normal.", "Otherwise normal alignment.", "No other listhesis.")))
        return out

    def cord(self) -> str:
        d = self.d
        conus = d.pick(("T12-L1", "L1", "L1-L2", "the L1 level", "T12"))
        parts = [d.pick(("The spinal cord is normal in signal and caliber.", "Normal cord signal.",
                         "No cord signal abnormality.", "The cord is unremarkable."))]
        if d.chance(0.6):
            parts.append(d.pick((f"The conus terminates at {conus}.", f"Conus medullaris ends at {conus}.",
                                 f"Conus tip at {conus}.")))
        return " ".join(parts)

    def extras(self) -> list[str]:
        d = self.d
        out = []
        if d.chance(0.3):
            out.append(d.pick(("Paraspinal soft tissues are unremarkable.", "Paraspinal muscles are normal.",
                               "Visualized retroperitoneum is unremarkable.")))
        if d.chance(0.12):
            free = [v for v in range(_N) if not self.g["marrow_change"][v] and not self.g["fracture"][v]]
            if free:
                out.append(f"Incidental hemangioma in the {_VERTS[d.pick(free)]} vertebral body.")
        if d.chance(0.06):
            out.append("Small Tarlov cyst at S2.")
        return out

    # -- history and comparison -------------------------------------------------------------------------
    def history(self) -> str:
        d = self.d
        return d.pick((
            "Low back pain.", "Low back pain, rule out fracture.", "Chronic neck pain.",
            "Back pain radiating to the left leg. Evaluate for stenosis.", "Fall. R/O compression fracture.",
            "Lumbar radiculopathy.", "Neck and back pain.", "Osteoporosis, back pain, ? fracture.",
            "Evaluate for spinal stenosis.", "Severe low back pain.", "Numbness in both hands. Cervical myelopathy?",
            "Known degenerative disease, follow-up.", "Trauma. Rule out fracture.", "Sciatica.",
            "Back pain, ? disc herniation.", "Staging, evaluate marrow.", "Thoracic back pain.",
            "Progressive leg weakness, assess for canal stenosis.", "Whole spine screen.",
        ))

    def prior_date(self, fmt: str) -> str:
        exam = self.h["exam_date"]
        day = dt.date(int(exam[:4]), int(exam[4:6]), int(exam[6:])) - dt.timedelta(days=self.d.randint(150, 2200))
        return _date(day.strftime("%Y%m%d"), fmt)

    def comparison(self, fmt: str) -> tuple[str, list[str]]:
        """(comparison line, sentences about the prior study that the findings may carry)."""
        d = self.d
        if d.chance(0.45):
            return d.pick(("None.", "None available.", "No prior imaging.", "No previous studies.")), []
        date = self.prior_date(fmt)
        line = d.pick((f"MRI of the spine dated {date}.", f"Prior MRI whole spine from {date}.", f"{date}.",
                       f"Compared with prior MRI of {date}.", f"MRI lumbar spine {date}."))
        notes = []
        found = [(c, i) for c in DISC_CONDITIONS for i in range(_N) if self.g[c][i]]
        r = d.u()
        if found and r < 0.25:
            notes.append(d.pick(("Interval progression of degenerative changes.", "No significant interval change.",
                                 "Degenerative changes have progressed slightly since the prior study.")))
        elif found and r < 0.45:
            cond, i = d.pick(found)
            grade = self.g[cond][i]
            noun = self.noun(cond)[0]
            if grade >= 2 and d.chance(0.5):
                # the current grade stands next to the prior one: 'now moderate (previously mild)'
                self.said(cond, [i], grade)
                notes.append(f"The {noun} at {self.dname(i)} has progressed, now {self.adj(cond, grade)} "
                             f"(previously {d.pick(_PRED[cond][grade - 2])}).")
            else:
                change = d.pick(("unchanged", "new", "slightly more conspicuous"))
                notes.append(f"The {noun} at {self.dname(i)} is {change} compared with the prior study.")
        elif r < 0.6:
            cond = d.pick(("listhesis", "disc_bulge", "canal_stenosis"))
            free = [i for i in range(_N) if not self.g[cond][i]]
            if free:
                i = d.pick(free)
                self.deny((cond,), [i])
                notes.append(f"The previously questioned {self.noun(cond)[0]} at {self.dname(i)} is not confirmed.")
        return line, notes

    # -- impression --------------------------------------------------------------------------------------
    def worst_level(self) -> int | None:
        scores = [sum(self.g[c][i] for c in DISC_CONDITIONS if c != "listhesis") for i in range(_N)]
        best = max(scores)
        return scores.index(best) if best and scores.count(best) == 1 else None

    def impression(self, max_items: int) -> list[str]:
        """Impression items, most important first; any that names a level and severity agrees with the row.

        Candidates are written only once kept, so the statement log holds what the text says."""
        d = self.d
        items: list[tuple[float, Callable[[], str]]] = []
        every = range(_N)
        for grade, idxs in self.groups("fracture", every):
            items.append((10 + grade, lambda idxs=idxs: self.stmt("fracture", idxs)))
        for i in self.nonzero("listhesis", every):
            items.append((9 + self.g["listhesis"][i] / 4, lambda i=i: self.stmt("listhesis", [i])))
        for grade, idxs in self.groups("canal_stenosis", every):
            if grade >= 2 or d.chance(0.4):
                items.append((6 + grade, lambda idxs=idxs: self.stmt("canal_stenosis", idxs)))
        for grade, idxs in self.groups("disc_bulge", every):
            if grade == 3:
                items.append((7.5, lambda idxs=idxs: self.stmt("disc_bulge", idxs)))
        for grade, idxs in self.groups("marrow_change", every):
            if d.chance(0.6):
                items.append((5 + grade / 4, lambda idxs=idxs: self.stmt("marrow_change", idxs)))
        # A summary without severity (contract rule 8): 'degenerative changes', never 'DDD' at a level.
        n_degenerate = sum(any(self.g[c][i] for c in DISC_CONDITIONS if c != "listhesis") for i in every)
        if n_degenerate:
            many = "Multilevel degenerative changes" if n_degenerate > 1 else "Degenerative changes"
            worst = self.worst_level()
            if worst is not None and d.chance(0.7):
                text = d.pick((many + ", worst at {w}.", many + ", most prominent at {w}.",
                               "Spondylosis, greatest at {w}." if n_degenerate > 1 else many + " at {w}."))
                items.append((4, lambda text=text, worst=worst: text.format(w=self.dname(worst))))
            else:
                text = d.pick((f"{many} as described.", f"{many} as detailed above."))
                items.append((4, lambda text=text: text))
        if not items:
            return [d.pick(("Normal MRI of the whole spine.", "No significant abnormality.",
                            "Unremarkable MRI of the cervical, thoracic and lumbar spine.",
                            "No acute or significant abnormality of the spine."))]
        if self.zero("fracture", every) and d.chance(0.35):
            text = d.pick(("No fracture.", "No compression fracture.", "No vertebral fracture."))
            items.append((3, lambda text=text: self.deny(("fracture",), every) and text))
        if self.zero("canal_stenosis", every) and d.chance(0.3):
            text = d.pick(("No canal stenosis.", "No significant spinal canal stenosis."))
            items.append((3, lambda text=text: self.deny(("canal_stenosis",), every) and text))
        ranked = sorted(range(len(items)), key=lambda k: -items[k][0])
        return [items[k][1]() for k in sorted(ranked[:max_items])]


def _date(yyyymmdd: str, fmt: str) -> str:
    y, m, dd = yyyymmdd[:4], yyyymmdd[4:6], yyyymmdd[6:]
    if fmt == "iso":
        return f"{y}-{m}-{dd}"
    if fmt == "us":
        return f"{m}/{dd}/{y}"
    if fmt == "eu":
        return f"{dd}.{m}.{y}"
    if fmt == "uk":
        return f"{dd}/{m}/{y}"
    if fmt == "text":
        months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
        return f"{int(dd)} {months[int(m) - 1]} {y}"
    return yyyymmdd


def _person(dicom_name: str, fmt: str) -> str:
    last, first = dicom_name.split("^")
    return {"dicom": dicom_name, "last_first": f"{last.title()}, {first.title()}",
            "first_last": f"{first.title()} {last.title()}", "upper": f"{last}, {first}"}[fmt]


def _doctor(dicom_name: str, d: Dice) -> str:
    last, first = dicom_name.split("^")
    return d.pick((f"Dr. {last.title()}", f"Dr. {first[0]}. {last.title()}", f"{first.title()} {last.title()}, MD",
                   f"{last}, {first}", f"Dr {first[0]} {last.title()}"))


def _wrap(text: str, width: int) -> str:
    """Hard line breaks inside sentences, as old reporting systems make; never inside a level name."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        words = line.split(" ")
        merged: list[str] = []
        k = 0
        while k < len(words):  # 'L4 - L5' stays on one line
            if k + 2 < len(words) and words[k + 1] == "-":
                merged.append(" ".join(words[k:k + 3]))
                k += 3
            else:
                merged.append(words[k])
                k += 1
        cur = ""
        for w in merged:
            if cur and len(cur) + 1 + len(w) > width:
                out.append(cur)
                cur = w
            else:
                cur = f"{cur} {w}" if cur else w
        out.append(cur)
    return "\n".join(out)


def _finish(w: _Writer, body: list[str]) -> str:
    """Site-wide casing and line breaking of the report body (not of the header or sign-off)."""
    d = w.d
    text = "\n".join(body)
    r = d.u()
    if r < 0.08:
        text = text.upper()
    elif r < 0.2:
        text = "\n".join(line.upper() if d.chance(0.1) else line for line in text.split("\n"))
    if d.chance(0.2):
        text = _wrap(text, d.randint(58, 82))
    return text


# ---------------------------------------------------------------------------------------------------------
# Site (a): one line per disc level.

def _level_by_level(w: _Writer) -> str:
    d, h = w.d, w.h
    date_fmt = d.pick(("iso", "us", "eu"))
    name = _person(h["name"], d.pick(("dicom", "upper", "last_first")))
    fields = [("PATIENT", name), ("MRN", h["mrn"]), ("DOB", _date(h["birth_date"], date_fmt)),
              ("EXAM DATE", _date(h["exam_date"], date_fmt)), ("ACCESSION", h["accession"]),
              ("REFERRING PHYSICIAN", _doctor(h["referring_physician"], d))]
    if d.chance(0.3):
        fields = [(label.title() if label != "MRN" else label, value) for label, value in fields]
    head = [f"{label}: {value}" for label, value in fields]
    if d.chance(0.5):
        head = [f"{head[0]}    {head[1]}", f"{head[2]}    {head[3]}", head[4], head[5]]
    body = ["", d.pick(("EXAM: MRI WHOLE SPINE WITHOUT CONTRAST", "EXAMINATION: MRI CERVICAL, THORACIC AND LUMBAR "
                        "SPINE", "MRI TOTAL SPINE WITHOUT IV CONTRAST", "Exam: MR spine (whole) without contrast")),
            f"{d.pick(('CLINICAL HISTORY', 'HISTORY', 'INDICATION'))}: {w.history()}"]
    line, notes = w.comparison(date_fmt)
    body.append(f"COMPARISON: {line}")
    if d.chance(0.6):
        body.append("TECHNIQUE: " + d.pick((
            "Sagittal T1, T2 and STIR images of the whole spine; axial T2 images through the lumbar spine.",
            "Multiplanar multisequence MRI of the spine without contrast.",
            "Sagittal T1 and T2 weighted images of the cervical, thoracic and lumbar spine. Axial T2 images were "
            "obtained from L3-L4 to L5-S1.")))
    body += ["", "FINDINGS:"]
    body += notes

    # Alignment / vertebral bodies / marrow paragraph.
    listhesis_in_alignment = d.chance(0.6)
    vert = []
    if listhesis_in_alignment:
        vert.append("Alignment: " + " ".join(w.alignment(range(_N))))
    fr = [w.stmt("fracture", idxs) for _, group in w.groups("fracture", range(_N)) for idxs in w.split_group(group)]
    mc = [w.stmt("marrow_change", idxs) for _, group in w.groups("marrow_change", range(_N))
          for idxs in w.split_group(group)]
    fneg, mneg = w.vertebra_negations(range(_N), otherwise=True) if d.chance(0.8) else ([], [])
    if d.chance(0.5):
        if fr or fneg:
            vert.append("Vertebral bodies: " + " ".join(fr + fneg))
        if mc or mneg:
            vert.append("Marrow: " + " ".join(mc + mneg))
    elif fr or mc or fneg or mneg:
        vert.append(d.pick(("Vertebral bodies/marrow: ", "Vertebral bodies: ", "Bones: "))
                    + " ".join(fr + mc + fneg + mneg))
    hedge = w.hedge([], range(_N)) if d.chance(0.25) else None
    if hedge:
        vert.append(hedge)
    body += vert
    if d.chance(0.7):
        body.append(d.pick(("Cord: ", "Spinal cord: ", "")) + w.cord())
    body.append("")

    # Disc levels, region by region.
    sub = d.chance(0.7)
    skip_normal = d.pick((0.0, 0.5, 0.9, 1.0))
    header_fmt = d.pick(("{l}: ", "{l}: ", "{l} - ", "{l} level: ", "At {l}: "))
    hedge_rate = d.pick((0.0, 0.03, 0.08))
    for region in spine_labels.REGIONS:
        idxs = [i for i in range(_N) if _DISC_REGION[i] == region]
        if sub:
            body.append(d.pick((f"{region.upper()} SPINE:", f"{region.title()} spine:", f"{region.upper()}:")))
        if w.quiet_region(region) and d.chance(0.5 if region != "thoracic" else 0.8):
            w.deny_all(_REGION_DISCS[region], _REGION_VERTS[region])
            body.append(d.pick((f"The {region} discs and vertebrae are unremarkable.",
                                f"No significant abnormality of the {region} spine.",
                                "Unremarkable." if sub else f"{region.title()} levels: unremarkable.")))
            continue
        skipped = []
        for i in idxs:
            present = [c for c in DISC_CONDITIONS if w.g[c][i] and (c != "listhesis" or not listhesis_in_alignment)]
            if i in _JUNCTIONS and w.junctions and d.chance(0.2):
                label = _cap(_JUNCTIONS[i][4:]) + ": "
            else:
                label = header_fmt.format(l=_DISC_FORMS[w.notation][i] if d.chance(0.9) else w.dname(i, False))
            if not present:
                if d.chance(hedge_rate):
                    text = w.hedge([i], [])
                    if text:
                        body.append(label + text)
                        continue
                if d.chance(skip_normal):
                    skipped.append(i)
                    continue
                if w.quiet_disc(i) and d.chance(0.6):
                    w.deny_all([i])
                    body.append(label + d.pick(("Unremarkable.", "No significant abnormality.", "Normal.",
                                                "Unremarkable disc. No canal stenosis.")))
                else:
                    negation = w.level_negation(i, present)
                    if negation:
                        body.append(label + negation)
                continue
            order = [c for c in ("listhesis", "disc_desiccation", "disc_height_loss", "disc_bulge", "disc_osteophyte",
                                 "endplate_irregularity", "canal_stenosis") if c in present]
            if d.chance(0.3):
                order = d.shuffled(order)
            phrases = w.level_phrases(i, order)
            text = w.join_phrases(phrases, order if len(phrases) == len(order) else None)
            extra = []
            if d.chance(0.35):
                extra.append(_cap(w.foramina()) + ".")
            if d.chance(0.15):
                extra.append(_cap(w.facets()) + ".")
            negation = w.level_negation(i, present) if d.chance(0.35) else None
            if negation and negation.startswith("No ") and d.chance(0.4):
                # 'Mild disc bulge without canal stenosis.'
                text = text[:-1] + (" w/o " if w.abbrev else " without ") + negation[3:]
            elif negation:
                extra.append(negation)
            if d.chance(hedge_rate):
                hedge = w.hedge([i], [])
                if hedge:
                    extra.append(hedge)
            body.append(label + " ".join([text, *d.shuffled(extra)]))
        if skipped and d.chance(0.5):
            if all(w.quiet_disc(i) for i in skipped) and d.chance(0.6):
                w.deny_all(skipped)
                body.append(d.pick((f"Remaining {region} levels are unremarkable.",
                                    f"The other {region} levels are unremarkable.",
                                    f"No significant abnormality at the remaining {region} levels.")))
            elif w.zero("disc_bulge", skipped) and w.zero("canal_stenosis", skipped):
                w.deny(("disc_bulge", "canal_stenosis"), skipped)
                body.append(f"No disc bulge or canal stenosis at the remaining {region} levels.")
    extras = w.extras()
    if extras:
        body += ["", "OTHER: " + " ".join(extras)] if d.chance(0.5) else ["", *extras]

    items = w.impression(d.randint(3, 6))
    body += ["", d.pick(("IMPRESSION:", "IMPRESSION:", "Impression:"))]
    body += [f"{k}. {item}" for k, item in enumerate(items, 1)] if len(items) > 1 or d.chance(0.5) else items
    text = "\n".join(head) + "\n" + _finish(w, body)
    rad = _doctor(h["radiologist"], d)
    sign = d.pick((f"Electronically signed by {rad}, {_date(h['exam_date'], 'iso')} {h['signed_time']}",
                   f"Electronically signed by: {rad} on {_date(h['exam_date'], date_fmt)} at {h['signed_time']}",
                   f"Dictated and signed by {rad}"))
    return f"{text}\n\n{sign}\n"


# ---------------------------------------------------------------------------------------------------------
# Site (b): prose paragraphs per region, findings grouped by condition.

def _region_prose(w: _Writer, region: str) -> list[str]:
    d = w.d
    discs = [i for i in range(_N) if _DISC_REGION[i] == region]
    verts = list(_REGION_VERTS[region])
    if w.quiet_region(region) and d.chance(0.8):
        w.deny_all(_REGION_DISCS[region], verts)
        return [d.pick((f"The {region} spine is unremarkable.", "Unremarkable.", "No significant abnormality.",
                        f"Normal {region} alignment, vertebral body heights, disc heights and signal. No canal "
                        "stenosis."))]
    wide = _REGION_DISCS[region]
    out: list[str] = []
    slips = w.nonzero("listhesis", discs)
    if slips or d.chance(0.4):
        out += w.alignment(discs, wide)
    bones_first = d.chance(0.5)
    if bones_first:
        for cond in ("fracture", "marrow_change"):
            for _, group in w.groups(cond, verts):
                out.append(w.stmt(cond, group))
    done: set[tuple[str, int]] = {("listhesis", i) for i in slips}
    # The worst levels told level by level: 'At L4-5, a moderate disc bulge resulting in ...'.
    counts = [(sum(1 for c in DISC_CONDITIONS if w.g[c][i] and c != "listhesis"), i) for i in discs]
    heavy = [i for n, i in sorted(counts, reverse=True)[:2] if n >= 3 and d.chance(0.6)]
    for i in sorted(heavy):
        conds = [c for c in ("disc_bulge", "disc_osteophyte", "disc_desiccation", "disc_height_loss",
                             "endplate_irregularity", "canal_stenosis") if w.g[c][i]]
        phrases = w.level_phrases(i, conds)
        sentence = w.join_phrases(phrases, conds if len(phrases) == len(conds) else None, one_sentence=True)
        lead = d.pick((f"At {w.dname(i)}, there is ", f"At {w.dname(i)}, ", f"{_cap(w.dname(i))}: "))
        sentence = lead + (sentence[0].lower() + sentence[1:] if not lead.endswith(": ") else sentence)
        if d.chance(0.3):
            sentence += f" There is also {w.foramina()}."
        out.append(sentence)
        done |= {(c, i) for c in conds}
    conds = ["disc_desiccation", "disc_height_loss", "disc_bulge", "disc_osteophyte", "endplate_irregularity",
             "canal_stenosis"]
    if d.chance(0.3):
        conds = d.shuffled(conds)
    if w.ddd and d.chance(0.7):
        same = [i for i in discs if ("disc_desiccation", i) not in done and w.g["disc_desiccation"][i]
                and w.g["disc_desiccation"][i] == w.g["disc_height_loss"][i]]
        for grade in (1, 2, 3):
            idxs = [i for i in same if w.g["disc_desiccation"][i] == grade]
            if not idxs:
                continue
            w.said("disc_desiccation", idxs, grade)
            w.said("disc_height_loss", idxs, grade)
            word = d.pick(("degenerative disc disease", "DDD",
                           "degenerative disc disease (desiccation and height loss)"))
            out.append(f"{_cap(w.typo(d.pick(_ADJ['disc_height_loss'][grade - 1])))} {word} {w.dlist(idxs)}.")
            done |= {(c, i) for c in ("disc_desiccation", "disc_height_loss") for i in idxs}
    for cond in conds:
        left = [i for i in discs if w.g[cond][i] and (cond, i) not in done]
        groups = w.groups(cond, left)
        if not groups:
            if d.chance(0.15) and w.zero(cond, wide):
                neg = {"canal_stenosis": f"No {region} canal stenosis.",
                       "disc_height_loss": "Disc heights are preserved.",
                       "disc_desiccation": "Disc signal is normal.", "disc_bulge": "No disc bulge.",
                       "disc_osteophyte": "No significant osteophytes.",
                       "endplate_irregularity": "The endplates are smooth."}[cond]
                w.deny((cond,), wide)
                out.append(neg)
            continue
        if len(groups) > 1 and d.chance(0.45) and cond != "listhesis":
            out.append(w.pred_stmt(cond, groups))
        else:
            for _, group in groups:
                for idxs in w.split_group(group):
                    out.append(w.stmt(cond, idxs))
    if not bones_first:
        for cond in ("fracture", "marrow_change"):
            for _, group in w.groups(cond, verts):
                out.append(w.stmt(cond, group))
    if d.chance(0.4):
        fneg, mneg = w.vertebra_negations(verts, otherwise=True)
        out += fneg + mneg
    if d.chance(0.3):
        idxs = [i for i in discs if any(w.g[c][i] for c in DISC_CONDITIONS)]
        if idxs:
            out.append(f"{_cap(w.foramina())} at {w.dname(d.pick(idxs))}.")
    if d.chance(0.12):
        out.append(_cap(w.facets()) + (" in the lower lumbar spine." if region == "lumbar" else "."))
    if d.chance(0.2):
        hedge = w.hedge(discs, verts)
        if hedge:
            out.append(hedge)
    if region == "thoracic" and d.chance(0.3):
        out.append(w.cord())
    said = {c[1] for c in w.claims if c[3] == "pos" and c[0] in DISC_CONDITIONS}
    rest = [i for i in _REGION_DISCS[region] if i not in said]
    if rest and d.chance(0.35) and w.deny_all(rest):
        out.append(d.pick(("The remaining levels are unremarkable.", "Otherwise unremarkable.",
                           "Other levels are normal.")))
    if not out:  # nothing in the region itself, but a neighbour's finding rules out 'unremarkable'
        out = w.alignment(discs, wide) or [{"cervical": "Normal cervical lordosis.", "thoracic": "Normal thoracic "
                                            "kyphosis.", "lumbar": "Normal lumbar lordosis."}[region]]
    return out


def _narrative(w: _Writer) -> str:
    d, h = w.d, w.h
    date_fmt = d.pick(("us", "uk", "text", "iso"))
    name = _person(h["name"], d.pick(("first_last", "last_first", "dicom")))
    sep = d.pick((" | ", "   ", "; "))
    head = [sep.join((f"Name: {name}", f"DOB: {_date(h['birth_date'], date_fmt)}", f"MRN: {h['mrn']}")),
            sep.join((f"Acc#: {h['accession']}", f"Exam date: {_date(h['exam_date'], date_fmt)}",
                      f"Sex: {h['sex']}")),
            f"Referred by: {_doctor(h['referring_physician'], d)}"]
    if d.chance(0.3):
        head = [head[0], head[2], head[1]]
    body = ["", d.pick(("MRI whole spine", "MR Spine Survey", "MRI cervical, thoracic and lumbar spine",
                        "MRI of the entire spine without contrast")), ""]
    body.append(f"{d.pick(('Indication', 'Clinical information', 'History'))}: {w.history()}")
    if d.chance(0.5):
        body.append("Technique: " + d.pick(("Sagittal T1, T2 and STIR sequences of the whole spine.",
                                            "Standard non-contrast protocol.",
                                            "Sagittal and axial T2-weighted images.")))
    line, notes = w.comparison(date_fmt)
    body += [f"Comparison: {line}", "", d.pick(("Findings:", "FINDINGS:", "Report:"))]
    if notes:
        body.append(" ".join(notes))
    order = list(spine_labels.REGIONS) if d.chance(0.8) else ["lumbar", "thoracic", "cervical"]
    inline = d.chance(0.3)
    for region in order:
        sentences = _region_prose(w, region)
        if inline and sentences[0].startswith("There "):
            body.append(f"In the {region} spine, t" + " ".join(sentences)[1:])
        else:
            body.append(d.pick((f"{region.title()} spine:", f"{region.upper()}:", f"{region.title()}:")) + " "
                        + " ".join(sentences))
        body.append("")
    extras = w.extras()
    if extras:
        body.append(" ".join(extras))
        body.append("")
    items = w.impression(d.randint(1, 4))
    body.append(d.pick(("Impression:", "IMPRESSION:", "Conclusion:", "Opinion:")))
    body.append(" ".join(items))
    text = "\n".join(head) + "\n" + _finish(w, body)
    rad = h["radiologist"].split("^")
    rad_name = f"{rad[1].title()} {rad[0].title()}"
    sign = d.pick((f"Dictated by: {rad_name}, MD\nSigned: {_date(h['exam_date'], date_fmt)} {h['signed_time']}",
                   f"Reported by Dr {rad_name} (Consultant Radiologist), {_date(h['exam_date'], date_fmt)}",
                   f"{rad_name}, MD"))
    return f"{text}\n{sign}\n"


# ---------------------------------------------------------------------------------------------------------
# Site (c): impression first, then findings by finding type.

def _impression_first(w: _Writer) -> str:
    d, h = w.d, w.h
    date_fmt = d.pick(("iso", "eu", "dicom", "us"))
    name = _person(h["name"], d.pick(("upper", "dicom", "last_first")))
    head = [f"{name}  ({h['sex']})  {h['mrn']}",
            f"Born {_date(h['birth_date'], date_fmt)}   Study {_date(h['exam_date'], date_fmt)}   "
            f"Accession {h['accession']}",
            f"Requesting clinician: {_doctor(h['referring_physician'], d)}"]
    if d.chance(0.4):
        head = [f"Patient: {name}", f"ID: {h['mrn']}", f"DOB: {_date(h['birth_date'], date_fmt)}",
                f"Date of exam: {_date(h['exam_date'], date_fmt)}", f"Accession no.: {h['accession']}",
                f"Referrer: {_doctor(h['referring_physician'], d)}"]
    body = ["", d.pick(("PROCEDURE: MRI SPINE COMPLETE", "Procedure: MR whole spine, non-contrast",
                        "MRI SPINE (C/T/L) W/O CONTRAST")),
            f"{d.pick(('Reason for exam', 'INDICATION', 'Clinical details'))}: {w.history()}"]
    line, notes = w.comparison(date_fmt)
    if d.chance(0.7):
        body.append(f"{d.pick(('COMPARISON', 'Prior'))}: {line}")
    body += ["", d.pick(("IMPRESSION:", "SUMMARY:", "Impression:"))]
    items = w.impression(d.randint(3, 7))
    body += [f"{k}. {item}" for k, item in enumerate(items, 1)]
    body += ["", d.pick(("FINDINGS:", "DETAILS:", "Findings:"))]
    if notes:
        body.append(" ".join(notes))
    upper = d.chance(0.5)
    lab = (lambda s: s.upper()) if upper else (lambda s: s)
    tele = d.chance(0.5)  # telegraphic 'Label: mild at X; moderate at Y' lines

    def section(cond: str, idxs: Sequence[int]) -> list[str]:
        groups = w.groups(cond, idxs)
        if not groups:
            return []
        if tele and cond in DISC_CONDITIONS and cond not in ("listhesis", "canal_stenosis"):
            return [w.colon_line(cond, groups)]
        if len(groups) > 1 and cond not in ("listhesis", "fracture") and d.chance(0.4):
            return [w.pred_stmt(cond, groups)]
        return [w.stmt(cond, idxs) for _, group in groups for idxs in w.split_group(group)]

    alignment = w.alignment(range(_N))
    if d.chance(0.3):
        alignment.append(d.pick(("Normal cervical lordosis.", "Mild straightening of the cervical lordosis.",
                                 "Mild levoconvex scoliosis of the thoracolumbar spine.")))
    body.append(f"{lab('Alignment')}: " + " ".join(alignment))
    vb = section("fracture", range(_N))
    fneg, mneg = w.vertebra_negations(range(_N), otherwise=bool(vb)) if d.chance(0.8) else ([], [])
    vb += fneg
    if d.chance(0.15):
        hedge = w.hedge([], range(_N))
        if hedge and "Modic" not in hedge and "marrow" not in hedge:
            vb.append(hedge)
    if vb:
        body.append(f"{lab('Vertebral bodies')}: " + " ".join(vb))
    discs = []
    ddd_done: list[int] = []
    if w.ddd and d.chance(0.6):
        for grade in (1, 2, 3):
            idxs = [i for i in range(_N) if w.g["disc_desiccation"][i] == grade == w.g["disc_height_loss"][i]]
            if idxs:
                w.said("disc_desiccation", idxs, grade)
                w.said("disc_height_loss", idxs, grade)
                discs.append(f"{_cap(d.pick(_ADJ['disc_desiccation'][grade - 1]))} degenerative disc disease "
                             f"{w.dlist(idxs)}.")
                ddd_done += idxs
    for cond in ("disc_desiccation", "disc_height_loss", "disc_bulge", "disc_osteophyte", "endplate_irregularity"):
        idxs = [i for i in range(_N) if i not in ddd_done or cond not in ("disc_desiccation", "disc_height_loss")]
        lines = section(cond, idxs)
        if not lines and d.chance(0.3) and w.zero(cond, range(_N)):
            w.deny((cond,), range(_N))
            lines = [{"disc_desiccation": "Normal disc signal throughout.",
                      "disc_height_loss": "Disc heights are preserved throughout.",
                      "disc_bulge": "No disc bulge.", "disc_osteophyte": "No osteophytes.",
                      "endplate_irregularity": "Endplates are smooth."}[cond]]
        discs += lines
    if d.chance(0.1):
        hedge = w.hedge(range(_N), [])
        if hedge and "listhesis" not in hedge:
            discs.append(hedge)
    if discs:
        sep = "\n" if tele else " "
        body.append(f"{lab('Discs')}:{sep}" + sep.join(discs))
    canal = section("canal_stenosis", range(_N))
    if not canal:
        w.deny(("canal_stenosis",), range(_N))
        canal = [d.pick(("No canal stenosis at any level.", "The spinal canal is patent throughout.",
                         "No central canal stenosis."))]
    if d.chance(0.5):
        busy = [i for i in range(_N) if sum(w.g[c][i] for c in DISC_CONDITIONS) >= 3]
        for i in busy[-2:]:
            canal.append(f"{_cap(w.foramina())} at {w.dname(i)}.")
    body.append(f"{lab('Canal')}: " + " ".join(canal))
    marrow = section("marrow_change", range(_N)) + mneg
    if marrow:
        body.append(f"{lab('Marrow')}: " + " ".join(marrow))
    if d.chance(0.7):
        body.append(f"{lab('Cord')}: {w.cord()}")
    extras = w.extras()
    if extras:
        body.append(f"{lab('Other')}: " + " ".join(extras))
    text = "\n".join(head) + "\n" + _finish(w, body)
    rad = _doctor(h["radiologist"], d)
    sign = d.pick((f"Electronically signed by {rad}, {_date(h['exam_date'], 'iso')} {h['signed_time']}",
                   f"Signed: {rad} {_date(h['exam_date'], date_fmt)} {h['signed_time']}",
                   f"Radiologist: {rad}"))
    return f"{text}\n\n{sign}\n"


_BUILDERS: dict[str, Callable[[_Writer], str]] = {
    "level_by_level": _level_by_level, "narrative": _narrative, "impression_first": _impression_first}


def _style(name: str) -> Style:
    build = _BUILDERS[name]

    def style(grades: Mapping[str, int], rng: np.random.Generator, header: Mapping[str, str]) -> str:
        return build(_Writer(grades, rng, header))

    style.__name__ = name
    style.__doc__ = f"Report in the '{name}' site style."
    return style


DEVELOPMENT_STYLES: dict[str, Style] = {name: _style(name) for name in _BUILDERS}


def _write_with_claims(name: str, grades: Mapping[str, int], rng: np.random.Generator,
                       header: Mapping[str, str]) -> tuple[str, list[tuple[str, str, int, str]]]:
    """A development style's report and its log of (condition, level, grade, 'pos'|'neg'|'hedge') statements,
    for tests that hold every statement against the row."""
    w = _Writer(grades, rng, header)
    text = _BUILDERS[name](w)
    kinds = {c: findings.GRADING[c][2] for c in findings.GRADING}
    return text, [(c, (_DISCS if kinds[c] == "disc" else _VERTS)[i], g, k) for c, i, g, k in w.claims]


# ---------------------------------------------------------------------------------------------------------

def draw_header(rng: np.random.Generator, sex: str | None = None, age: float | None = None) -> dict[str, str]:
    """Fake identity of one report: what de-identification must never let through.

    Args:
        rng: drawn from.
        sex: 'F' or 'M'; drawn when None.
        age: the patient's age at the exam in years, which sets the birth date; drawn when None.

    Returns:
        name ('LAST^FIRST'), sex, mrn, accession, birth_date and exam_date ('YYYYMMDD'),
        referring_physician and radiologist ('LAST^FIRST'), signed_time ('HH:MM'). Styles print these in
        their own formats (e.g. 'Smith, John', '03/12/1958'); mrn and accession are printed verbatim.
    """
    if sex not in ("F", "M"):
        sex = "F" if rng.random() < 0.5 else "M"
    doctors = ["F" if x < 0.5 else "M" for x in rng.random(2)]
    name, referring, radiologist = identity.patient_names(rng, np.array([sex, *doctors]))
    exam_day = int(identity.study_day(rng, 1)[0])
    if age is None or not np.isfinite(age):
        age = float(rng.uniform(18.0, 90.0))
    birth_day = exam_day - int(age * 365.25) - int(rng.integers(0, 365))
    prefix = ("MRN", "", "H", "PT")[int(rng.integers(0, 4))]
    hour, minute = rng.integers(7, 20), rng.integers(0, 60)
    return {
        "name": name, "sex": sex, "mrn": identity.unique_numbers(rng, 1, 7 + int(rng.integers(0, 2)), prefix)[0],
        "accession": identity.unique_numbers(rng, 1, 8, ("ACC", "A", "RAD")[int(rng.integers(0, 3))])[0],
        "birth_date": identity.date_string(birth_day), "exam_date": identity.date_string(exam_day),
        "referring_physician": referring, "radiologist": radiologist, "signed_time": f"{hour:02d}:{minute:02d}",
        "referring": f"Dr. {referring.split('^')[0].title()}",  # the held-out styles' name for it
    }


def row_header(seed: int, position: int, sex: str | None = None, age: float | None = None) -> dict[str, str]:
    """The header `write_reports(..., seed)` printed on the row at `position` (given the same sex and age)."""
    return draw_header(np.random.default_rng([seed, position]), sex, age)


def write_reports(grades_table: pd.DataFrame, styles: Mapping[str, Style], style_of_row: Sequence[str],
                  seed: int) -> pd.DataFrame:
    """One free-text report per row of a graded table.

    Args:
        grades_table: `series_id` and the 207 `<condition>__<level>` grade columns; `sex` ('F'/'M') and `age`
            are used for the header when present.
        styles: style name -> style.
        style_of_row: the style name of each row.
        seed: with the row's position, seeds the row's report alone, so a row's text depends on nothing
            else in the table.

    Returns:
        DataFrame[series_id, style, text] in the table's row order.
    """
    columns = findings.feature_columns()
    missing = [c for c in ["series_id", *columns] if c not in grades_table.columns]
    if missing:
        raise ValueError(f"grades table lacks {len(missing)} columns, e.g. {missing[:3]}")
    if len(style_of_row) != len(grades_table):
        raise ValueError(f"{len(style_of_row)} style names for {len(grades_table)} rows")
    unknown = sorted(set(style_of_row) - set(styles))
    if unknown:
        raise ValueError(f"unknown styles {unknown}; have {sorted(styles)}")
    values = grades_table[columns].to_numpy(dtype=np.int64)
    n = len(grades_table)
    sexes = grades_table["sex"].tolist() if "sex" in grades_table.columns else [None] * n
    ages = pd.to_numeric(grades_table["age"], errors="coerce").tolist() if "age" in grades_table.columns else [None] * n
    texts = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        header = draw_header(rng, sexes[i], ages[i])
        grades = dict(zip(columns, values[i].tolist()))
        texts.append(styles[style_of_row[i]](grades, rng, header))
    return pd.DataFrame({"series_id": grades_table["series_id"].to_numpy(), "style": list(style_of_row),
                         "text": texts})


# Every style, and which sites write which: site_C and site_D write the held-out styles, so a cohort's reports
# mix templates the reader was developed on with templates it never saw.
STYLES: dict[str, Style] = {**DEVELOPMENT_STYLES, **report_text_held_out.HELD_OUT_STYLES}
HELD_OUT: tuple[str, ...] = tuple(report_text_held_out.HELD_OUT_STYLES)
SITE_STYLES: dict[str, tuple[str, ...]] = {"site_A": ("level_by_level", "narrative"), "site_B": ("impression_first",),
                                           "site_C": ("teaching_hospital",), "site_D": ("dictation",)}


def site_styles(sites: Sequence[str], seed: int) -> list[str]:
    """The style of each report: one of its site's (SITE_STYLES; a site's readers alternate at random)."""
    rng = np.random.default_rng([seed, 31])
    return [SITE_STYLES.get(site, ("narrative",))[int(rng.integers(0, len(SITE_STYLES.get(site, ("narrative",)))))]
            for site in sites]


def write_with_statements(style: str, grades: Mapping[str, int], rng: np.random.Generator,
                          header: Mapping[str, str]) -> tuple[str, set[str], set[str]]:
    """(report, the `<condition>__<level>` columns it states as absent or normal, the columns it hedges):
    what a reader must not grade, for measuring its negation and hedge handling."""
    if style in DEVELOPMENT_STYLES:
        text, claims = _write_with_claims(style, grades, rng, header)
        said = lambda kind: {f"{c}__{level}" for c, level, _, k in claims if k == kind}
        return text, said("neg"), said("hedge")
    return report_text_held_out.write_with_statements(style, grades, rng, header)
