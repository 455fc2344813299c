"""Times the eligibility step at the paper's scale (17,394 people, about 18,000 series) on this machine.

    python -m data_prep.normal.benchmark [--subjects=17394] [--work=DIR]

Writes a reports-only synthetic cohort (no images) and prints seconds per stage: reading and features,
UMAP, HDBSCAN, the threshold rule, and the whole CLI step with its files and pictures.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from configs import eligibility as eligibility_config
from data_prep.normal import eligibility, normal_spines
from data_prep.phantom import synthesize

FLAGS = flags.FLAGS
def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_integer("subjects", 17394, "People in the benchmark cohort (the paper had 17,394).")
    flags.DEFINE_string("work", None, "Folder for the cohort and outputs (default: a temporary folder).")


def main(argv: list[str]) -> None:
    del argv
    work = Path(FLAGS.work or tempfile.mkdtemp(prefix="spinejax-eligibility-"))
    cohort = work / "cohort"
    synthesize.synthesize(cohort, synthesize.CohortSpec(subjects=FLAGS.subjects, seed=0, reports_only=True),
                          progress=False)
    config = eligibility_config.get_config()
    times = {}
    start = time.perf_counter()
    table = eligibility.read_table(cohort, config)
    features, ages = eligibility.usable_features(table, config)
    features = features.to_numpy(np.float32)
    times["read + features"] = time.perf_counter() - start
    start = time.perf_counter()
    embedding = normal_spines.embed(features, config)
    times["UMAP (Canberra)"] = time.perf_counter() - start
    start = time.perf_counter()
    labels, _ = normal_spines.cluster(embedding, config)
    times["HDBSCAN"] = time.perf_counter() - start
    start = time.perf_counter()
    normal_spines.cluster_table(labels, ages, config)
    times["threshold rule"] = time.perf_counter() - start
    start = time.perf_counter()
    eligibility.run(cohort, work / "eligibility", config, b"benchmark-secret-not-for-real-data")
    times["whole CLI step (again, with files and pictures)"] = time.perf_counter() - start
    print(f"{len(table.rows)} series of {FLAGS.subjects} people, {features.shape[1]} features, "
          f"{len(np.unique(features, axis=0))} distinct profiles")
    for stage, seconds in times.items():
        print(f"  {stage:50s} {seconds:7.1f} s")


if __name__ == "__main__":
    define_flags()
    app.run(main)
