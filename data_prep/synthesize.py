"""Command line of the synthetic cohort (data_prep.phantom.synthesize): spine phantoms as DICOM and NIfTI.

    python -m data_prep.synthesize --out=DIR --subjects=N --seed=S [--workers=W] [--nifti_share=0.2]
        [--reports_only] [--effects=smoking:3,physical_work:2.5]
"""

import dataclasses
from pathlib import Path

from absl import app, flags

from data_prep.phantom import population
from data_prep.phantom.synthesize import CohortSpec, synthesize
from spinejax.errors import InputError, one_line_errors

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_string("out", None, "Cohort folder to write.")
    flags.DEFINE_integer("subjects", 600, "Number of people.")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives the same bytes.")
    flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")
    flags.DEFINE_float("nifti_share", 0.2, "Share of series written as NIfTI instead of DICOM.")
    flags.DEFINE_bool("overwrite", False, "Replace DIR if it holds a different cohort.")
    flags.DEFINE_bool("reports_only", False, "Write reports.csv and ground_truth.json only (no images).")
    default = ",".join(f"{name}:{years:g}" for name, years in population.PopulationParams().lifestyle_effects)
    flags.DEFINE_string("effects", default, "Planted effects on spine age, FACTOR:YEARS,...; a factor not named "
                        "has none (a null). Factors: " + ", ".join(c for c, _, _ in population.LIFESTYLE) + ".")


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.out:
        raise app.UsageError("--out=DIR is required")
    try:
        effects = population.parse_effects(FLAGS.effects)
    except ValueError as error:
        raise InputError(str(error)) from None
    spec = CohortSpec(subjects=FLAGS.subjects, seed=FLAGS.seed, nifti_share=FLAGS.nifti_share,
                      reports_only=FLAGS.reports_only,
                      population=dataclasses.replace(population.PopulationParams(), lifestyle_effects=effects))
    summary = synthesize(Path(FLAGS.out), spec, FLAGS.workers, FLAGS.overwrite)
    if summary["skipped"]:
        print(f"{FLAGS.out}: cohort already complete with these settings; nothing to do")
        return
    floor = summary["noise_floor"]
    print(f"wrote {summary['series']} series of {FLAGS.subjects} subjects to {FLAGS.out} in "
          f"{summary['seconds']:.1f} s ({summary['subjects_per_minute']:.0f} subjects/min); "
          f"noise floor MAE {floor['bayes_mae']:.2f} years")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
