"""Checkpoint evaluation: restore a trained model and export its predicted ages.

    python -m spinejax.evaluate --workdir=DIR [--checkpoint=best|latest|STEP] [--splits=train,validation,test]
        [--records_dir=PATH] [--eligibility_csv=PATH] [--out=FOLDER]

Reads DIR/config.json and DIR/run.json (written by spinejax.main) for the model, its age head and the
plan hash of the records it was trained on; records of another plan are refused. Every record of each
split is predicted, eligible or not (the association analysis needs people with conditions). Writes, into
DIR/predictions for the best checkpoint on the run's own records (what analysis.report reads), else into
--out or DIR/predictions-<checkpoint>-<records> (never over another evaluation):

    DIR/predictions/<split>.csv   series_key, subject_key, split, region, site, sex, age, predicted_age,
                                  eligible ('' when no eligibility table), checkpoint_step; one row per record
    DIR/predictions/metrics.json  uncorrected MAE, RMSE, R2, Pearson r per split: all, eligible, ineligible,
                                  and per site; plus the checkpoint step, plan hash and record counts

Multi-process runs use the same flags as spinejax.main (--coordinator ...); process 0 writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from absl import app, flags, logging

from spinejax import age_metrics, distributed, inference, input_pipeline, steps
from spinejax import workdir as workdir_format
from spinejax.errors import InputError, one_line_errors

SPLITS = ("train", "validation", "test")


def evaluate(workdir, checkpoint: str = "best", splits=SPLITS, records_dir: str | None = None,
             eligibility_csv: str | None = None, out: str | None = None) -> dict:
    """Predicts every record of `splits`, writes the tables (module docstring) into `out` (default:
    spinejax.workdir.evaluation_folder), returns metrics.json's content. A folder holds one evaluation (a
    checkpoint selector on one set of records): running it again refreshes it whole (the step may have moved
    as the run trained on); a folder of another selector's or other records' predictions, or of files evaluate
    did not write, is refused."""
    workdir = Path(workdir)
    config, run, _ = workdir_format.load_run(workdir)
    records_dir = str(Path(records_dir or config.data.records_dir).resolve())
    out_dir = Path(out) if out else workdir_format.evaluation_folder(workdir, checkpoint, records_dir,
                                                                    config.data.records_dir)
    previous = out_dir / "metrics.json"
    if previous.is_file():
        try:
            done = json.loads(previous.read_text())
        except json.JSONDecodeError:
            raise InputError(f"{previous} is not an evaluation's metrics.json: give another --out") from None
        theirs = (str(Path(done.get("records_dir", "")).resolve()), done.get("checkpoint", "best"))
        if theirs != (records_dir, checkpoint):
            raise InputError(f"{out_dir} holds the predictions of checkpoint {theirs[1]!r} on {theirs[0]}: give "
                             "another --out (an evaluation never replaces another)")
        ours = {"metrics.json", *(f"{s}.csv" for s in SPLITS)}
        if any(p.name not in ours for p in out_dir.iterdir()):
            raise InputError(f"{out_dir} holds files spinejax.evaluate did not write: give another --out")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir} exists and is not a spinejax.evaluate folder: give another --out")
    state, mesh, step, sharding = workdir_format.restore(workdir, checkpoint)
    _, predict_step = steps.jit_steps(mesh, sharding)
    eligibility_csv = config.data.eligibility_csv if eligibility_csv is None else eligibility_csv
    global_batch = config.batch_size
    report = {"checkpoint_step": step, "checkpoint": checkpoint, "plan_hash": run["plan_hash"],
              "region": run["region"], "records_dir": records_dir, "splits": {}}
    index = pd.read_csv(Path(records_dir) / "index.csv", dtype=str, keep_default_na=False)
    tables = {}
    for split in splits:
        selection = input_pipeline.select(records_dir, run["region"], split, plan_hash=run["plan_hash"],
                                          eligibility_csv=eligibility_csv)
        expected = int(((index.region == run["region"]) & (index.split == split)).sum())
        if len(selection.rows) != expected:
            raise RuntimeError(f"{split}: {len(selection.rows)} records selected, index.csv lists {expected}")
        predicted = inference.predict(predict_step, state, selection, mesh, global_batch)
        table = selection.rows[["series_key", "subject_key", "split", "region", "site", "sex", "age"]].copy()
        table["predicted_age"] = np.round(predicted, 3)
        table["eligible"] = selection.rows["eligible"] if "eligible" in selection.rows else ""
        table["checkpoint_step"] = step
        report["splits"][split] = split_metrics(table)
        tables[split] = table
        m = report["splits"][split]["all"]
        print(f"{split}: {m['n']} records, MAE {m['mae']:.2f} y, RMSE {m['rmse']:.2f}, R2 {m['r2']:.3f}, "
              f"r {m['pearson_r']:.3f} (uncorrected; checkpoint step {step})", flush=True)
    if jax.process_index() == 0:  # the earlier run of this evaluation is replaced whole, never mixed with this one
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", *(f"{s}.csv" for s in SPLITS)):
            (out_dir / name).unlink(missing_ok=True)
        for split, table in tables.items():
            table.to_csv(out_dir / f"{split}.csv", index=False)
        (out_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def split_metrics(table: pd.DataFrame) -> dict:
    """Uncorrected accuracy of one split's predictions: all, eligible and ineligible, and per site."""
    groups = {"all": table}
    if table["eligible"].astype(str).isin(["True", "False"]).all():
        eligible = table["eligible"].astype(str) == "True"
        groups.update({"eligible": table[eligible], "ineligible": table[~eligible]})
    for site, rows in table.groupby("site"):
        groups[f"site={site}"] = rows
    return {name: age_metrics.age_metrics(rows["predicted_age"].to_numpy(), rows["age"].astype(float).to_numpy())
            for name, rows in groups.items()}


def define_flags():
    flags.DEFINE_string("workdir", None, "a spinejax.main workdir")
    flags.DEFINE_string("checkpoint", "best", "'best' (lowest validation MAE), 'latest' or a step")
    flags.DEFINE_list("splits", list(SPLITS), "splits to predict")
    flags.DEFINE_string("records_dir", None, "records to predict (default: the run's)")
    flags.DEFINE_string("eligibility_csv", None, "eligibility table marking who is eligible (default: the run's)")
    flags.DEFINE_string("out", None, "output folder (default: DIR/predictions for the best checkpoint on the run's "
                        "records, else DIR/predictions-<checkpoint>-<records>)")
    flags.DEFINE_string("coordinator", "", "multi-process runs: HOST:PORT of process 0, or 'auto'")
    flags.DEFINE_integer("num_processes", 1, "multi-process runs: number of processes")
    flags.DEFINE_integer("process_id", 0, "multi-process runs: this process's index")
    flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:  # orbax and grain log every step at INFO
        logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    distributed.initialize(f.coordinator, f.num_processes, f.process_id)
    evaluate(f.workdir, f.checkpoint, tuple(f.splits), f.records_dir, f.eligibility_csv, f.out)


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
