"""Checkpoint evaluation: restore a trained model and export its predicted ages.

    python -m spinejax.evaluate --workdir=DIR [--checkpoint=best|latest|STEP] [--splits=train,validation,test]
        [--records_dir=PATH] [--eligibility_csv=PATH]

Reads DIR/config.json and DIR/run.json (written by spinejax.main) for the model, its age head and the
plan hash of the records it was trained on; records of another plan are refused. Every record of each
split is predicted, eligible or not (the association analysis needs people with conditions). Writes:

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
import ml_collections
import numpy as np
import pandas as pd
from absl import app, flags, logging

from spinejax import age_metrics, checkpointing, distributed, inference, input_pipeline, losses, steps, train

SPLITS = ("train", "validation", "test")


def load_run(workdir) -> tuple[ml_collections.ConfigDict, dict, losses.AgeHead]:
    """(config, run facts, age head) of the run in `workdir`."""
    workdir = Path(workdir)
    for name in ("config.json", "run.json"):
        if not (workdir / name).is_file():
            raise FileNotFoundError(f"{workdir / name}: missing; is {workdir} a spinejax.main workdir?")
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    run = json.loads((workdir / "run.json").read_text())
    head = run["head"]
    head = losses.AgeHead(**{**head, "bin_centers_years": tuple(head["bin_centers_years"])})
    return config, run, head


def restore(workdir, checkpoint: str = "best"):
    """(state, mesh, step) of the chosen checkpoint: 'best' (lowest validation MAE), 'latest' or a step number."""
    config, run, head = load_run(workdir)
    manager = checkpointing.manager(workdir, keep=max(1, config.keep_checkpoints), read_only=True)
    if checkpoint == "best":
        step = checkpointing.best_step(manager) or manager.latest_step()
    elif checkpoint == "latest":
        step = manager.latest_step()
    else:
        step = int(checkpoint)
        if step not in manager.all_steps():
            raise ValueError(f"{workdir}/checkpoints has no step {step} (has {manager.all_steps()})")
    if step is None:
        raise FileNotFoundError(f"{workdir}/checkpoints: no checkpoint to evaluate")
    mesh = distributed.data_mesh()
    state, sharding = train.build_state(config, head, tuple(run["grid"]), run["total_steps"], mesh)
    state = checkpointing.restore(manager, step, checkpointing.abstract_like(state, sharding))
    return state, mesh, step, sharding


def evaluate(workdir, checkpoint: str = "best", splits=SPLITS, records_dir: str | None = None,
             eligibility_csv: str | None = None) -> dict:
    """Predicts every record of `splits`, writes the tables (module docstring), returns metrics.json's content."""
    workdir = Path(workdir)
    config, run, _ = load_run(workdir)
    state, mesh, step, sharding = restore(workdir, checkpoint)
    _, predict_step = steps.jit_steps(mesh, sharding)
    records_dir = records_dir or config.data.records_dir
    eligibility_csv = config.data.eligibility_csv if eligibility_csv is None else eligibility_csv
    global_batch = config.batch_size
    out_dir = workdir / "predictions"
    report = {"checkpoint_step": step, "plan_hash": run["plan_hash"], "region": run["region"],
              "records_dir": str(records_dir), "splits": {}}
    index = pd.read_csv(Path(records_dir) / "index.csv", dtype=str, keep_default_na=False)
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
        if jax.process_index() == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            table.to_csv(out_dir / f"{split}.csv", index=False)
        m = report["splits"][split]["all"]
        print(f"{split}: {m['n']} records, MAE {m['mae']:.2f} y, RMSE {m['rmse']:.2f}, R2 {m['r2']:.3f}, "
              f"r {m['pearson_r']:.3f} (uncorrected; checkpoint step {step})", flush=True)
    if jax.process_index() == 0:
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
    evaluate(f.workdir, f.checkpoint, tuple(f.splits), f.records_dir, f.eligibility_csv)


if __name__ == "__main__":
    define_flags()
    app.run(main)
