"""Uniform draws from a numpy Generator taken in blocks of 256: the report writers make thousands of small
choices per report, and one numpy call per block keeps a report under a millisecond. Deterministic given the
generator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Dice:
    __slots__ = ("_rng", "_u", "_i")

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._u = rng.random(256).tolist()
        self._i = 0

    def u(self) -> float:
        """Uniform in [0, 1)."""
        if self._i == 256:
            self._u, self._i = self._rng.random(256).tolist(), 0
        self._i += 1
        return self._u[self._i - 1]

    def chance(self, p: float) -> bool:
        return self.u() < p

    def pick(self, seq: Sequence):
        return seq[int(self.u() * len(seq))]

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return lo + int(self.u() * (hi - lo + 1))

    def weighted(self, seq: Sequence, weights: Sequence[float]):
        x, acc = self.u() * sum(weights), 0.0
        for item, w in zip(seq, weights):
            acc += w
            if x < acc:
                return item
        return seq[-1]

    def shuffled(self, seq: Sequence) -> list:
        out = list(seq)
        for i in range(len(out) - 1, 0, -1):
            j = int(self.u() * (i + 1))
            out[i], out[j] = out[j], out[i]
        return out
