"""Fake identifying data for synthetic patients: names, MRNs, dates, accession numbers.

These fields exist so that de-identification is tested on realistic input: no value made here may reach
any output of data_prep.build_records.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

_FIRST_F = ("MARIA", "ANNA", "LINDA", "SARA", "ELENA", "JUDITH", "NORA", "HELEN", "IRIS", "ROSA", "GRACE",
            "LEILA", "MEI", "OLGA", "PRIYA", "AMINA", "CLARA", "DIANA", "EVA", "FATIMA")
_FIRST_M = ("JOHN", "PETER", "DAVID", "OMAR", "LUCAS", "HENRY", "IVAN", "KENJI", "MARCO", "PAUL", "RAVI",
            "SAMUEL", "TOMAS", "VICTOR", "WEI", "YUSUF", "ANDRES", "BRUNO", "CARL", "DANIEL")
_LAST = ("SMITH", "GARCIA", "MULLER", "ROSSI", "NOVAK", "TANAKA", "KOWALSKI", "SILVA", "COHEN", "HANSEN",
         "OKAFOR", "LEFEBVRE", "PETROV", "NGUYEN", "SINGH", "JANSSEN", "MORENO", "LINDQVIST", "HAMADA",
         "OCONNOR", "BAKER", "DUBOIS", "FISCHER", "KIM", "LOPEZ", "MENDES", "NAKAMURA", "QUINN", "RAHMAN",
         "STEIN")
STUDY_EPOCH = dt.date(2014, 1, 1)


def patient_names(rng: np.random.Generator, sex: np.ndarray) -> list[str]:
    """DICOM person names 'LAST^FIRST' for each entry of `sex` ('F'/'M')."""
    last = rng.choice(np.array(_LAST), len(sex))
    first_f, first_m = rng.choice(np.array(_FIRST_F), len(sex)), rng.choice(np.array(_FIRST_M), len(sex))
    return [f"{ln}^{ff if s == 'F' else fm}" for ln, ff, fm, s in zip(last, first_f, first_m, sex)]


def unique_numbers(rng: np.random.Generator, n: int, digits: int, prefix: str) -> list[str]:
    """`n` distinct identifiers such as 'MRN0412345' (prefix + zero-padded digits)."""
    values = rng.choice(10**digits, size=n, replace=False)
    return [f"{prefix}{v:0{digits}d}" for v in values]


def study_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Days after STUDY_EPOCH of each person's first study (2014 to 2023)."""
    return rng.integers(0, 3650, n)


def date_string(days_after_epoch: int) -> str:
    return (STUDY_EPOCH + dt.timedelta(days=int(days_after_epoch))).strftime("%Y%m%d")


def age_between(birth_day: int, study_day_: int) -> float:
    """Age in years between two day numbers (365.25-day years)."""
    return (study_day_ - birth_day) / 365.25
