"""Misspelt vocabulary words read as the word meant: 'stenosi' -> 'stenosis', 'mlid' -> 'mild'.

Only words of the vocabulary are targets (a condition or severity word), so a correction can only make a
report say what its author meant to write in the site's own terms. Allowed edits (Damerau-Levenshtein:
insert, delete, substitute, swap two neighbours): a swap or a left-out letter in 4-letter words, one edit in
5 to 7 letters, two in longer words; a word with two equally close targets is left as written, as is every
word in `keep`.
Candidates come from a deletion index (SymSpell, Garbe 2012), so a lookup costs a few dictionary probes;
results are cached per word.
"""

from __future__ import annotations

from itertools import combinations


def _deletions(word: str, n: int) -> set[str]:
    out = {word}
    for k in range(1, n + 1):
        out |= {"".join(c for i, c in enumerate(word) if i not in drop) for drop in combinations(range(len(word)), k)}
    return out


def _allowed(length: int) -> int:
    return 0 if length < 4 else 1 if length <= 7 else 2


def damerau(a: str, b: str) -> int:
    """Optimal-string-alignment distance between a and b."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


class Speller:
    def __init__(self, targets, keep):
        self.targets = {w for w in targets if w.isalpha() and len(w) >= 4}
        self.keep = {w.lower() for w in keep} | self.targets
        self._index: dict[str, set[str]] = {}
        for word in self.targets:
            for deleted in _deletions(word, _allowed(len(word))):
                self._index.setdefault(deleted, set()).add(word)
        self._cache: dict[str, str | None] = {}

    def correct(self, word: str) -> str | None:
        """The vocabulary word `word` was meant to be (lower case), or None to leave it as written."""
        cached = self._cache.get(word, False)
        if cached is not False:
            return cached
        original, word = word, word.lower()
        best = None
        if word.isalpha() and word not in self.keep:
            allowed = _allowed(len(word))
            candidates = set()
            for deleted in _deletions(word, allowed):
                candidates |= self._index.get(deleted, set())
            scored = sorted((damerau(word, c), c) for c in candidates)
            scored = [(d, c) for d, c in scored if 0 < d <= min(allowed, _allowed(len(c)))]
            if len(word) == 4:  # a swap of two neighbours ('mlid') or a letter left out ('modc')
                scored = [(d, c) for d, c in scored if sorted(c) == sorted(word)
                          or (len(c) == 5 and any(c[:i] + c[i + 1:] == word for i in range(5)))]
            if scored and (len(scored) == 1 or scored[0][0] < scored[1][0]):
                best = scored[0][1]
        self._cache[original] = best
        return best
