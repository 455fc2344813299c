"""Train/validation/test split by subject: deterministic from the subject key, stable as subjects are added.

A subject's split depends only on its key (a keyed hash) and the fractions: the key's own SHA-256 mapped
to [0, 1) is compared with the cumulative fractions. Adding people to an archive never moves anyone
already there, and all series of one person share one split (people have repeat scans).
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")


def split_of(subject_key: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """'train', 'validation' or 'test' for `subject_key` under `fractions` (summing to 1)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, not {fractions}")
    u = int.from_bytes(hashlib.sha256(subject_key.encode()).digest()[:8], "big") / 2.0**64
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"
