"""Who is in a synthetic cohort: ages, sex, site, lifestyle, hidden biological spine age, repeat scans.

The biological spine age is the hidden truth every later stage is judged against:

    bio_age = age + sum(planted lifestyle effects) + N(0, individual_sd^2)      [years]

Images are drawn from bio_age only (never from age), so no predictor can beat the noise floor: the
error of the best predictor of age that knows bio_age exactly (`noise_floor`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import stats

SITES = ("site_A", "site_B", "site_C", "site_D")

# Lifestyle answers: (column, prevalence in women, prevalence in men). Physically demanding work is more
# common in men, as in real cohorts, which is why the association analysis adjusts for sex.
LIFESTYLE = (
    ("smoking", 0.18, 0.24),
    ("physical_work", 0.18, 0.38),
    ("coffee", 0.62, 0.62),
    ("left_handed", 0.10, 0.12),
)


@dataclasses.dataclass(frozen=True)
class PopulationParams:
    """Parameters of the synthetic population; all are written to ground_truth.json."""

    age_min: float = 25.0
    age_max: float = 84.0
    age_mean: float = 53.0  # a spine-MRI referral population, skewed to middle age
    age_sd: float = 14.0
    female_fraction: float = 0.52
    site_weights: tuple[float, ...] = (0.35, 0.30, 0.20, 0.15)
    # Planted effects on biological spine age, years. coffee and left_handed are nulls (0).
    lifestyle_effects: tuple[tuple[str, float], ...] = (
        ("smoking", 3.0),
        ("physical_work", 2.5),
        ("coffee", 0.0),
        ("left_handed", 0.0),
    )
    individual_sd: float = 4.75  # years; tuned so the noise floor is near the paper's MAE of 3.7
    lifestyle_missing: float = 0.02  # share of unanswered lifestyle questions (blank cells)
    abnormal_fraction: float = 0.06  # non-age-related pathology (eligibility must find it)
    abnormal_kinds: tuple[str, ...] = ("multiple_fractures", "focal_stenosis", "spondylolisthesis")
    rescan_fraction: float = 0.02  # a second sagittal series in the same study (same age)
    followup_fraction: float = 0.03  # a second study 1 to 4 years later


def parse_effects(text: str) -> tuple[tuple[str, float], ...]:
    """`smoking:3.0,physical_work:2.5` -> the planted lifestyle effects (years), every LIFESTYLE factor in order.

    A factor not named is a null (0 years). Raises ValueError on an unknown (misspelt) or repeated factor or a
    value that is not a finite number, so a typo can never plant nothing silently."""
    known = [column for column, _, _ in LIFESTYLE]
    given = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition(":")
        name = name.strip()
        if name not in known:
            raise ValueError(f"--effects: unknown factor {name!r}; the synthetic cohort's factors are "
                             f"{', '.join(known)}")
        if name in given:
            raise ValueError(f"--effects: {name} is given twice")
        try:
            years = float(value)
        except ValueError:
            years = float("nan")
        if not sep or not np.isfinite(years):
            raise ValueError(f"--effects: {item!r} is not FACTOR:YEARS (a number of years, e.g. smoking:3.0)")
        given[name] = years
    return tuple((name, given.get(name, 0.0)) for name in known)


def _truncated_normal(rng: np.random.Generator, n: int, p: PopulationParams) -> np.ndarray:
    a, b = (p.age_min - p.age_mean) / p.age_sd, (p.age_max - p.age_mean) / p.age_sd
    return stats.truncnorm.rvs(a, b, loc=p.age_mean, scale=p.age_sd, size=n, random_state=rng)


def sample_subjects(n: int, rng: np.random.Generator, p: PopulationParams) -> pd.DataFrame:
    """Draws `n` subjects: one row each, index 0..n-1.

    Columns: age (years at first scan, float), sex ('F'/'M'), site, lifestyle columns (0/1, NaN when
    unanswered), lifestyle_shift (years), individual_shift (years), abnormal (bool), abnormal_kind (str,
    '' for normal spines).
    """
    age = _truncated_normal(rng, n, p)
    sex = np.where(rng.random(n) < p.female_fraction, "F", "M")
    site = rng.choice(np.array(SITES), size=n, p=np.asarray(p.site_weights) / np.sum(p.site_weights))
    frame = pd.DataFrame({"age": np.round(age, 2), "sex": sex, "site": site})
    effects = dict(p.lifestyle_effects)
    shift = np.zeros(n)
    for column, prev_f, prev_m in LIFESTYLE:
        answer = (rng.random(n) < np.where(sex == "F", prev_f, prev_m)).astype(float)
        shift += effects.get(column, 0.0) * answer  # the truth uses the real exposure, answered or not
        answer[rng.random(n) < p.lifestyle_missing] = np.nan
        frame[column] = answer
    frame["lifestyle_shift"] = shift
    frame["individual_shift"] = rng.normal(0.0, p.individual_sd, n)
    abnormal = rng.random(n) < p.abnormal_fraction
    frame["abnormal"] = abnormal
    kinds = rng.choice(np.array(p.abnormal_kinds), size=n)
    frame["abnormal_kind"] = np.where(abnormal, kinds, "")
    return frame


def bio_age(age: np.ndarray, lifestyle_shift: np.ndarray, individual_shift: np.ndarray) -> np.ndarray:
    """Biological spine age, years: chronological age plus planted and individual shifts."""
    return age + lifestyle_shift + individual_shift


def plan_scans(subjects: pd.DataFrame, rng: np.random.Generator, p: PopulationParams) -> pd.DataFrame:
    """One row per series: subject (index into `subjects`), scan number, age at scan, same-study flag.

    Most people have one series; some have a rescan in the same study and some a follow-up study 1-4
    years later (age and biological age both advance), as in real archives.
    """
    rows = []
    for subject in subjects.itertuples():
        rows.append((subject.Index, 0, subject.age, 0))
        u = rng.random()
        if u < p.rescan_fraction:
            rows.append((subject.Index, 1, subject.age, 0))
        elif u < p.rescan_fraction + p.followup_fraction:
            later = min(subject.age + rng.uniform(1.0, 4.0), p.age_max + 0.99)
            rows.append((subject.Index, 1, round(later, 2), 1))
    return pd.DataFrame(rows, columns=["subject", "scan", "age", "study"])


def noise_floor(p: PopulationParams, n: int = 400_000, seed: int = 0) -> dict[str, float]:
    """Best achievable mean absolute error (years) of any age predictor on this population.

    A predictor that knows each person's bio_age exactly still cannot know age: the best it can do is
    the median of p(age | bio_age), from the age prior and the mixture of lifestyle shifts. Computed by
    Monte Carlo on `n` draws from the same generator, on a 0.1-year grid.

    Returns {'bayes_mae': floor, 'bio_as_age_mae': MAE of predicting age by bio_age itself}.
    """
    rng = np.random.default_rng(seed)
    subjects = sample_subjects(n, rng, dataclasses.replace(p, lifestyle_missing=0.0))
    age = subjects["age"].to_numpy()
    bio = bio_age(age, subjects["lifestyle_shift"].to_numpy(), subjects["individual_shift"].to_numpy())
    # Posterior of age given bio on a grid: prior(age) * sum_k pi_k N(bio - age - shift_k; 0, sd).
    grid = np.arange(p.age_min, p.age_max + 0.05, 0.1)
    a, b = (p.age_min - p.age_mean) / p.age_sd, (p.age_max - p.age_mean) / p.age_sd
    prior = stats.truncnorm.pdf(grid, a, b, loc=p.age_mean, scale=p.age_sd)
    shifts, weights = np.unique(subjects["lifestyle_shift"].to_numpy(), return_counts=True)
    weights = weights / weights.sum()
    bio_grid = np.arange(np.floor(bio.min()), np.ceil(bio.max()) + 0.05, 0.1)
    like = sum(
        w * stats.norm.pdf(bio_grid[:, None] - grid[None, :] - s, scale=p.individual_sd)
        for s, w in zip(shifts, weights)
    )
    posterior = like * prior[None, :]
    cdf = np.cumsum(posterior, axis=1)
    cdf /= cdf[:, -1:]
    median = grid[np.argmax(cdf >= 0.5, axis=1)]
    predicted = np.interp(bio, bio_grid, median)
    return {
        "bayes_mae": float(np.mean(np.abs(predicted - age))),
        "bio_as_age_mae": float(np.mean(np.abs(bio - age))),
    }
