"""Shared fixtures: one small synthetic cohort written once per test session."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from configs import records as records_config
from data_prep.phantom import population, synthesize
from data_prep.records import build_records

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
def small_cohort(tmp_path_factory):
    """Six people, DICOM and NIfTI: for tests that build records several times."""
    out = tmp_path_factory.mktemp("small") / "cohort"
    synthesize.synthesize(out, synthesize.CohortSpec(subjects=6, seed=4, nifti_share=0.3), workers=2,
                          progress=False)
    return out


@pytest.fixture(scope="session")
def truth(cohort):
    return json.loads((cohort / "ground_truth.json").read_text())


@pytest.fixture(scope="session")
def reports(cohort):
    return pd.read_csv(cohort / "reports.csv")


TRAINING_RECORDS_SECRET = b"training-records-secret-0123"


@pytest.fixture(scope="session")
def training_records_secret() -> bytes:
    """The key the training records' pseudonymous ids were made with."""
    return TRAINING_RECORDS_SECRET


@pytest.fixture(scope="session")
def training_records(tmp_path_factory):
    """Lumbar records of 200 synthetic people split 60/20/20 (validation and test large enough for a steady MAE)."""
    root = tmp_path_factory.mktemp("training")
    synthesize.synthesize(root / "cohort", synthesize.CohortSpec(subjects=200, seed=21), workers=2, progress=False)
    config = records_config.get_config()
    config.update_from_flattened_dict({"workers": 2, "regions": ("lumbar",), "split_fractions": (0.6, 0.2, 0.2),
                                       "shards_per_split": 2})
    build_records.build(root / "cohort", root / "records", config, TRAINING_RECORDS_SECRET, progress=False)
    return root / "records"


@pytest.fixture(scope="session")
def learned_run(training_records, tmp_path_factory):
    """(workdir, config, summary) of the CPU preset trained for 160 steps on the lumbar training records."""
    from configs import default
    from spinejax import train

    workdir = tmp_path_factory.mktemp("learned")
    config = default.get_config("cpu")
    config.update_from_flattened_dict({
        "data.records_dir": str(training_records), "data.region": "lumbar", "data.eligibility_csv": "",
        "data.eligible_only": False, "num_train_steps": 160, "eval_every": 80, "checkpoint_every": 80, "log_every": 20,
        "keep_checkpoints": 1, "optimizer.warmup_steps": 20})
    return workdir, config, train.train_and_evaluate(config, workdir)


@pytest.fixture(scope="session")
def evaluated(learned_run):
    """(workdir, metrics) of the learned run's best checkpoint evaluated on every split (W/predictions)."""
    from spinejax import evaluate

    workdir = learned_run[0]
    return workdir, evaluate.evaluate(workdir, "best")
