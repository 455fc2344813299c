"""Eligibility over cohort draws and UMAP seeds: does the method hold on any draw, not only on one?

    python -m data_prep.normal.robustness [--draws=1,2,3,4] [--seeds=0,1,2,3,4] [--subjects=17394]
        [--work=DIR] [--out=runs.csv] [--config=configs/eligibility.py] [--config.consensus_runs=1 ...]

For each draw (a reports-only synthetic cohort, so its truth is known) and each seed (config.seed), runs
normal_spines.find_normal_spines on the draw's features and scores the ineligible set against the planted
non-age-related spines: precision, recall, recall per kind and the share of normal spines made ineligible.
Per draw it also reports stability as the share of people whose eligibility is not the same under every
seed (flips), beside the mean Jaccard index of the eligible sets against the first seed's.

Prints one line per run and a summary per draw; writes every run to --out (CSV) when given. numpy's SIMD
kernels change the numerics the way another CPU would: run it again with NPY_DISABLE_CPU_FEATURES set to
compare kernel paths (the README lists the value for AVX-512 machines).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from absl import app, flags
from ml_collections import config_flags

from configs import eligibility as eligibility_config
from data_prep.normal import eligibility, normal_spines
from data_prep.phantom import synthesize

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("draws", ["1", "2", "3", "4"], "Cohort seeds (synthetic draws).")
    flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Eligibility seeds (config.seed) per draw.")
    flags.DEFINE_integer("subjects", 17394, "People per draw (the paper had 17,394).")
    flags.DEFINE_string("work", None, "Folder for the cohorts (default: a temporary folder; kept when given).")
    flags.DEFINE_string("out", None, "CSV of every run.")
    config_flags.DEFINE_config_file("config", eligibility_config.__file__, "Eligibility config.")


def score(ineligible: np.ndarray, kinds: np.ndarray) -> dict:
    """Precision and recall of `ineligible` [n] bool for the planted kinds [n] ('' = normal), per kind too."""
    abnormal = kinds != ""
    hits = int((ineligible & abnormal).sum())
    out = {"precision": hits / max(int(ineligible.sum()), 1), "recall": hits / max(int(abnormal.sum()), 1),
           "normal_ineligible_share": float(ineligible[~abnormal].mean()), "ineligible": int(ineligible.sum()),
           "abnormal": int(abnormal.sum())}
    out.update({f"recall_{k}": float(ineligible[kinds == k].mean()) for k in sorted(set(kinds) - {""})})
    return out


def main(argv: list[str]) -> None:
    del argv
    work = Path(FLAGS.work or tempfile.mkdtemp(prefix="spinejax-robustness-"))
    config = FLAGS.config
    kernels = os.environ.get("NPY_DISABLE_CPU_FEATURES", "") and "reduced SIMD" or "default SIMD"
    rows = []
    for draw in (int(d) for d in FLAGS.draws):
        cohort = work / f"cohort{draw}_{FLAGS.subjects}"
        synthesize.synthesize(cohort, synthesize.CohortSpec(subjects=FLAGS.subjects, seed=draw, reports_only=True),
                              progress=False)
        table = eligibility.read_table(cohort, config)
        features, ages = eligibility.usable_features(table, config)
        truth = pd.read_json(cohort / "ground_truth.json", typ="series")["series"]
        kind_of = {s["series_id"]: s["abnormal_kind"] for s in truth}
        kinds = table.rows["series_id"].map(kind_of).to_numpy()
        eligible_by_seed = []
        for seed in (int(s) for s in FLAGS.seeds):
            config.seed = seed
            start = time.perf_counter()
            found = normal_spines.find_normal_spines(features.to_numpy(np.float32), ages, config,
                                                      list(features.columns))
            eligible_by_seed.append(found.eligible)
            row = {"kernels": kernels, "draw": draw, "seed": seed, "seconds": time.perf_counter() - start,
                   **score(~found.eligible, kinds)}
            rows.append(row)
            print(f"draw {draw} seed {seed}: precision {row['precision']:.3f} recall {row['recall']:.3f} "
                  f"normal made ineligible {row['normal_ineligible_share']:.2%} ({row['seconds']:.0f} s)", flush=True)
        stack = np.stack(eligible_by_seed)
        flips = float((stack.any(axis=0) != stack.all(axis=0)).mean())
        jaccard = np.mean([(stack[0] & e).sum() / max((stack[0] | e).sum(), 1) for e in stack[1:]]) if len(
            stack) > 1 else 1.0
        for row in rows[-len(stack):]:
            row.update({"draw_flip_share": flips, "draw_mean_jaccard": float(jaccard)})
        print(f"draw {draw}: {flips:.2%} of people change eligibility between seeds (mean Jaccard {jaccard:.3f})")
    frame = pd.DataFrame(rows)
    print(f"over {len(frame)} runs ({kernels}): precision {frame['precision'].min():.3f}-{frame['precision'].max():.3f}"
          f", recall {frame['recall'].min():.3f}-{frame['recall'].max():.3f}, normal made ineligible at most "
          f"{frame['normal_ineligible_share'].max():.2%}, flips at most {frame['draw_flip_share'].max():.2%}")
    if FLAGS.out:
        frame.to_csv(FLAGS.out, index=False)


if __name__ == "__main__":
    define_flags()
    app.run(main)
