"""Shared fixtures: one small synthetic cohort written once per test session."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from data_prep import synthesize
from data_prep.phantom import population

# A small cohort that still holds every kind of case: abnormal spines, rescans, follow-ups, NIfTI.
TEST_SPEC = synthesize.CohortSpec(
    subjects=36,
    seed=7,
    nifti_share=0.3,
    population=dataclasses.replace(population.PopulationParams(), abnormal_fraction=0.3,
                                   rescan_fraction=0.1, followup_fraction=0.1),
)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "cohort"
    synthesize.synthesize(out, TEST_SPEC, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def truth(cohort):
    return json.loads((cohort / "ground_truth.json").read_text())


@pytest.fixture(scope="session")
def reports(cohort):
    return pd.read_csv(cohort / "reports.csv")
