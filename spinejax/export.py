"""Export a trained run as a model bundle (spinejax.bundle): everything needed to predict on another machine.

    python -m spinejax.export --workdir=W --out=BUNDLE [--checkpoint=best]

Run spinejax.evaluate on W first (its validation predictions calibrate the intervals) and, for the bias
correction, analysis.report.
"""

from absl import app, flags, logging

from spinejax import bundle
from spinejax.errors import one_line_errors


def define_flags():
    flags.DEFINE_string("workdir", None, "a trained and evaluated spinejax.main workdir")
    flags.DEFINE_string("out", None, "bundle folder to write")
    flags.DEFINE_string("checkpoint", "best", "'best' (lowest validation MAE), 'latest' or a step")
    flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    facts = bundle.export(f.workdir, f.out, f.checkpoint)
    widths = facts["interval"]["half_width_years"]
    shown = ", ".join(f"{float(k):.0%} +-{v:.2f} y" if v is not None else f"{float(k):.0%} none (too few validation "
                      "records)" for k, v in widths.items())
    correction = facts["bias_correction"]
    print(f"bundle of {facts['region']} checkpoint step {facts['checkpoint_step']} -> {f.out}; bias correction "
          f"{correction['method']}{' (' + correction['reason'] + ')' if 'reason' in correction else ''}; intervals "
          f"{shown}")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
