"""Spine ages of new scans with a model bundle: a folder in, predictions.csv, QC pictures and index.html out.

    python -m spinejax.predict --model=BUNDLE --input=FOLDER --out=DIR [--level=0.9]
    spinejax-predict --model=BUNDLE --input=FOLDER --out=DIR          (installed by pip install .)

FOLDER has the cohort layout (dicom/ and/or nifti/, masks/; the reports table optional: where it gives the
age, the spine age gap is reported too). The same command runs on CPU and GPU. spinejax/predictor.py says
what each output holds.
"""

from absl import app, flags, logging

from spinejax import predictor
from spinejax.errors import one_line_errors
from spinejax.scans import walk


def define_flags():
    flags.DEFINE_string("model", None, "a model bundle (spinejax.export)")
    flags.DEFINE_string("input", None, "folder of scans and masks in the cohort layout")
    flags.DEFINE_string("out", None, "folder to write")
    flags.DEFINE_float("level", 0.9, "coverage of the prediction interval (0.8, 0.9 or 0.95)")
    flags.DEFINE_integer("batch_size", 0, "scans per batch (0: the training run's batch)")
    flags.mark_flags_as_required(["model", "input", "out"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    result = predictor.predict_folder(f.model, f.input, f.out, f.level, f.batch_size)
    table = result["table"]
    ok = table[table["status"] == "ok"]
    per = f" ({result['seconds'] / len(table):.2f} s per series)" if len(table) else ""
    print(f"{len(table)} series: {len(ok)} predicted, {len(table) - len(ok)} refused; {len(result['failures'])} "
          f"files in no series; {result['seconds']:.1f} s{per} -> {f.out}/predictions.csv, {f.out}/index.html")
    for row in table[table["status"] != "ok"].itertuples():
        print(f"refused: {walk.printable(row.series_id)}: [{row.code}] {row.reason}")
    for row in ok[ok["qc_flags"].fillna("") != ""].itertuples():
        print(f"check: {walk.printable(row.series_id)}: {row.qc_flags}")
    for r in result["rejected"]:
        print(f"reports table line {r.line}: not used [{r.code}] (its series gets no age)")
    for warning in result["warnings"]:
        print(f"warning: {warning}")


def console():
    """The `spinejax-predict` command (pyproject.toml [project.scripts])."""
    define_flags()
    app.run(one_line_errors(main))


if __name__ == "__main__":
    console()
