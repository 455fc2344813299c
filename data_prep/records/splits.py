"""Train/validation/test split by subject: the site's own, or deterministic from the subject key.

By default a subject's split depends only on its key (a keyed hash) and the fractions: the key's own
SHA-256 mapped to [0, 1) is compared with the cumulative fractions. Adding people to an archive never moves
anyone already there, and all series of one person share one split (people have repeat scans).

A site controls the split in either of two ways (configs/records.py):
- a split file: a CSV of `subject_id,split` naming every subject of reports.csv exactly once, with split one
  of train, validation, test (`read_split_file`);
- held-out sites (`test_sites`): every subject of those sites is test (external validation), the others are
  split between train and validation in the ratio of the fractions. A subject scanned at a held-out site
  and another is refused, since the subject would be on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from spinejax.errors import InputError

SPLITS = ("train", "validation", "test")


def split_of(subject_key: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """'train', 'validation' or 'test' for `subject_key` under `fractions` (summing to 1)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, not {fractions}")
    u = int.from_bytes(hashlib.sha256(subject_key.encode()).digest()[:8], "big") / 2.0**64
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def read_split_file(path: Path) -> dict[str, str]:
    """subject id (as written, stripped) -> split, from a CSV with columns subject_id and split.

    Raises InputError (naming lines, never ids) for a missing file or column, a split outside SPLITS, or a
    subject listed twice."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        raise InputError(f"split file {path} cannot be read as UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not {"subject_id", "split"} <= {f.strip() for f in reader.fieldnames}:
        raise InputError(f"split file {path}: expected the columns subject_id and split")
    out, first_line = {}, {}
    for row in reader:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        line = reader.line_num
        if row["split"] not in SPLITS:
            raise InputError(f"split file {path}, line {line}: split must be one of {', '.join(SPLITS)}")
        if not row["subject_id"]:
            raise InputError(f"split file {path}, line {line}: subject_id is blank")
        if row["subject_id"] in out:
            raise InputError(f"split file {path}, line {line}: the subject of line {first_line[row['subject_id']]} "
                             "again (each subject once, in one split)")
        out[row["subject_id"]], first_line[row["subject_id"]] = row["split"], line
    return out


def assign(subjects: dict[str, tuple[str, str]], fractions: tuple[float, float, float], split_file: str = "",
           test_sites: tuple[str, ...] = ()) -> dict[str, str]:
    """subject id -> split for every subject. subjects: subject id -> (subject key, site as given).

    Without a split file or test sites: `split_of` each key. Raises InputError when the split file misses
    subjects, or a subject has series at a held-out site and elsewhere."""
    if split_file and test_sites:
        raise InputError("give either a split file or test sites, not both")
    if split_file:
        given = read_split_file(Path(split_file))
        missing = [s for s in subjects if s not in given]
        if missing:
            raise InputError(f"split file {split_file} lacks {len(missing)} of the {len(subjects)} subjects of "
                             "reports.csv: every subject needs a split")
        return {s: given[s] for s in subjects}
    if test_sites:
        train, validation = fractions[0], fractions[1]
        within = (train / (train + validation), validation / (train + validation), 0.0)
        return {s: "test" if site in test_sites else split_of(key, within) for s, (key, site) in subjects.items()}
    return {s: split_of(key, tuple(fractions)) for s, (key, _) in subjects.items()}
