"""Training: it learns, resumes exactly after a kill, stops on NaN, and data parallelism changes nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pandas as pd
import pytest

from configs import default
from spinejax import checkpointing, input_pipeline, train
from tests import processes


def _config(training_records, **changes):
    config = default.get_config("cpu")
    config.data.records_dir = str(training_records)
    config.data.region = "lumbar"
    config.data.eligibility_csv = ""
    config.data.eligible_only = False
    config.update_from_flattened_dict(changes)
    return config


# A very small network and schedule for the tests about mechanics rather than accuracy.
TINY = {"model.channels": (8, 16), "model.pools": ((2, 2, 2), (1, 2, 2)), "model.head_channels": 8,
        "batch_size": 8, "num_train_steps": 24, "checkpoint_every": 4, "eval_every": 1000, "log_every": 5,
        "optimizer.warmup_steps": 5}


def _flags(config) -> list[str]:
    """The config as --config.key=value overrides of configs/default.py:cpu."""
    base = train.flatten(default.get_config("cpu").to_dict())
    return [f"--config.{key}={_as_flag(value)}" for key, value in train.flatten(config.to_dict()).items()
            if value != base[key]]


def _as_flag(value):
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_as_flag(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def _main(config, workdir, *extra) -> list[str]:
    return [sys.executable, "-m", "spinejax.main", "--config=configs/default.py:cpu", f"--workdir={workdir}",
            *_flags(config), *extra]


def _saved_params(workdir, step=None) -> dict:
    manager = checkpointing.manager(workdir, keep=2, read_only=True)
    step = manager.latest_step() if step is None else step
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    flat = train.flatten({"params": state["params"], "batch_stats": state["batch_stats"]}, separator="/")
    return {name: np.asarray(value) for name, value in flat.items()}


def test_training_learns_age_and_writes_its_logs(learned_run, training_records):
    workdir, config, summary = learned_run
    _, validation = train.selections(config)
    train_ages = input_pipeline.select(training_records, "lumbar", "train").rows["age"]
    baseline = np.mean(np.abs(validation.rows["age"] - train_ages.mean()))
    assert summary["step"] == 160 and summary["val_n"] == len(validation.rows) >= 30
    assert summary["val_mae"] < 0.65 * baseline, (summary, baseline)
    assert summary["val_pearson_r"] > 0.6
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["kind"] == "eval"] == [80, 160]
    assert [m["step"] for m in lines if m["kind"] == "train"] == list(range(20, 161, 20))
    assert lines[-1]["val_mae"] == pytest.approx(summary["val_mae"])
    run = json.loads((workdir / "run.json").read_text())
    assert run["plan_hash"] == json.loads((training_records / "manifest.json").read_text())["plan_hash"]
    assert run["conv"] == "onednn"  # one CPU device, float32, the library built by ./run.sh setup
    assert run["head"]["mean_years"] == pytest.approx(train_ages.mean())
    assert json.loads((workdir / "config.json").read_text())["model"]["channels"] == list(config.model.channels)
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    evaluations = [(m["val_mae"], m["step"]) for m in lines if m["kind"] == "eval"]
    assert summary["best_step"] == min(evaluations)[1]  # the lower validation MAE, whichever step it was


def test_a_killed_or_preempted_run_resumes_to_exactly_the_same_parameters(training_records, tmp_path):
    config = _config(training_records, **TINY, **{"data.worker_count": 2})
    straight, interrupted, preempted = tmp_path / "straight", tmp_path / "interrupted", tmp_path / "preempted"
    processes.run(_main(config, straight))
    # SIGTERM (a scheduler's preemption): the run saves where it is and exits cleanly, then resumes.
    assert processes.stop_when(_main(config, preempted), preempted / "checkpoints", "*/commit_success.txt", 1) == 0
    stopped_at = checkpointing.manager(preempted, keep=2, read_only=True).latest_step()
    assert stopped_at is not None and 4 <= stopped_at < 24
    assert not (preempted / "summary.json").exists()  # not finished: nothing may read it as a trained model
    processes.run(_main(config, preempted))
    resumed = _saved_params(preempted)
    processes.kill_when(_main(config, interrupted), interrupted / "checkpoints", "*/commit_success.txt", 1)
    resumed_from = checkpointing.manager(interrupted, keep=2, read_only=True).latest_step()
    assert resumed_from is not None and resumed_from < 24
    processes.run(_main(config, interrupted))
    a, b = _saved_params(straight), _saved_params(interrupted)
    assert a.keys() == b.keys() == resumed.keys() and len(a) > 10
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        np.testing.assert_array_equal(a[name], resumed[name], err_msg=name)
    # The metrics log holds each logged step (every 5, and every checkpoint) once, whatever was redone.
    steps = [json.loads(line)["step"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == sorted(set(range(5, 25, 5)) | set(range(4, 25, 4)))


def _lumbar_series(training_records) -> pd.DataFrame:
    """series_key, subject_key of each lumbar record: the rows of an eligibility table."""
    index = pd.read_csv(training_records / "index.csv", dtype=str)
    return index[index.region == "lumbar"][["series_key", "subject_key"]].drop_duplicates()


def test_resuming_under_another_config_or_selection_is_refused_or_retrained(training_records, tmp_path):
    table = _lumbar_series(training_records)
    table["eligible"] = True
    eligibility_csv = tmp_path / "eligibility.csv"
    table.to_csv(eligibility_csv, index=False)
    workdir = tmp_path / "run"
    config = _config(training_records, **{**TINY, "num_train_steps": 4,
                                          "data.eligibility_csv": str(eligibility_csv), "data.eligible_only": True})
    train.train_and_evaluate(config, workdir)
    assert train.train_and_evaluate(config, workdir)  # finished: returns its summary
    assert not train.inputs_changed(workdir, config)
    all_records = json.loads((workdir / "run.json").read_text())["train_records"]
    table["eligible"] = [i % 5 != 0 for i in range(len(table))]  # eligibility re-run with another result
    table.to_csv(eligibility_csv, index=False)
    assert train.inputs_changed(workdir, config)  # the finished model is stale
    with pytest.raises(ValueError, match="another selection of records"):
        train.train_and_evaluate(config, workdir)
    # With retrain_if_inputs_changed (./run.sh, the ablation), the stale run is cleared and trained again on
    # the records selected now; a file spinejax did not write stays.
    (workdir / "notes.txt").write_text("the site's own note")
    (workdir / "predictions").mkdir()
    (workdir / "predictions" / "metrics.json").write_text("{}")  # the old model's evaluation
    train.train_and_evaluate(config, workdir, retrain_if_inputs_changed=True)
    run = json.loads((workdir / "run.json").read_text())
    assert run["train_records"] < all_records and not train.inputs_changed(workdir, config)
    assert checkpointing.manager(workdir, keep=2, read_only=True).all_steps()[-1] == 4
    assert len(list((workdir / "tensorboard").iterdir())) == 1  # the old run's event file went with it
    assert (workdir / "notes.txt").read_text() == "the site's own note"
    # The old evaluation stays, older than the new model: ./run.sh and the ablation evaluate again.
    assert (workdir / "predictions" / "metrics.json").stat().st_mtime < (workdir / "summary.json").stat().st_mtime
    # Records rebuilt with other content under the same keys (a fixed row) move the records' build fingerprint;
    # a run.json written before records_build existed is judged by its selection alone.
    assert run["records_build"] == json.loads((training_records / "manifest.json").read_text())["build_fingerprint"]
    (workdir / "run.json").write_text(json.dumps({**run, "records_build": "another build"}))
    assert train.inputs_changed(workdir, config)
    (workdir / "run.json").write_text(json.dumps({k: v for k, v in run.items() if k != "records_build"}))
    assert not train.inputs_changed(workdir, config)
    config.loss.name = "l2"  # a changed config is never retrained over: another --workdir is wanted
    with pytest.raises(ValueError, match="loss.name"):
        train.train_and_evaluate(config, workdir, retrain_if_inputs_changed=True)


def test_clearing_a_run_removes_what_spinejax_main_wrote_and_follows_no_link(tmp_path):
    workdir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    (workdir / "checkpoints" / "100").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "events.out").write_text("not spinejax's")
    (workdir / "tensorboard").symlink_to(elsewhere, target_is_directory=True)
    for name in ("summary.json", "run.json", "metrics.jsonl", "config.json", "notes.txt"):
        (workdir / name).write_text("{}")
    train.clear_run(workdir)
    assert sorted(p.name for p in workdir.iterdir()) == ["config.json", "notes.txt"]
    assert (elsewhere / "events.out").read_text() == "not spinejax's"


def test_non_finite_loss_stops_the_run_and_keeps_only_finite_checkpoints(training_records, tmp_path):
    config = _config(training_records, **{**TINY, "checkpoint_every": 1, "log_every": 1,
                                     "optimizer.learning_rate": 1e30, "optimizer.warmup_steps": 0,
                                     "optimizer.grad_clip_norm": 1e30})
    with pytest.raises(train.NonFiniteError, match="not finite"):
        train.train_and_evaluate(config, tmp_path)
    manager = checkpointing.manager(tmp_path, keep=2, read_only=True)
    assert manager.latest_step() is not None
    for step in manager.all_steps():
        assert all(np.isfinite(v).all() for v in _saved_params(tmp_path, step).values())


def test_records_of_another_plan_are_refused(training_records, tmp_path):
    config = _config(training_records, **TINY, **{"data.plan_hash": "0123456789abcdef"})
    with pytest.raises(ValueError, match="rebuild the records"):
        train.train_and_evaluate(config, tmp_path)


def test_eligibility_restricts_training_and_validation(training_records, tmp_path):
    table = _lumbar_series(training_records)
    table["eligible"] = [i % 3 != 0 for i in range(len(table))]
    table.to_csv(tmp_path / "eligibility.csv", index=False)
    config = _config(training_records, **{"data.eligibility_csv": str(tmp_path / "eligibility.csv"),
                                          "data.eligible_only": True})
    train_rows, validation = train.selections(config)
    for selection in (train_rows, validation):
        assert selection.rows["eligible"].all()
        everyone = input_pipeline.select(training_records, "lumbar", selection.split)
        assert len(selection.rows) == everyone.rows["series_key"].map(
            dict(zip(table.series_key, table.eligible))).sum()
    table.iloc[1:].to_csv(tmp_path / "eligibility.csv", index=False)
    with pytest.raises(ValueError, match="not in the eligibility table"):
        train.selections(config)


DATA_PARALLEL_CHECK = """
import json
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from configs import default
from spinejax import losses, steps, train
assert jax.device_count() == 4
config = default.get_config("cpu")
head = losses.AgeHead(loss="l1", mean_years=50.0, sd_years=10.0)
rng = np.random.default_rng(0)
batch = {"volume": rng.normal(size=(8, 16, 32, 16, 1)).astype(np.float32),
         "age": rng.uniform(30, 80, 8).astype(np.float32), "weight": np.ones(8, np.float32)}
results = []
for devices in ([jax.devices()[0]], jax.devices()):
    mesh = Mesh(np.asarray(devices), ("data",))
    # The training loop's own state and steps (spinejax.train.build_state, spinejax.steps.jit_steps).
    state, state_sharding = train.build_state(config, head, (16, 32, 16), 10, mesh)
    train_step, predict_step = steps.jit_steps(mesh, state_sharding)
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    assert len(sharded["volume"].sharding.device_set) == len(devices)
    for _ in range(3):
        state, metrics = train_step(state, sharded)
    leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.batch_stats))]
    results.append((leaves, float(metrics["loss"]), np.asarray(predict_step(state, sharded["volume"]))))
(one, loss_one, pred_one), (four, loss_four, pred_four) = results
print(json.dumps({"max_param_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one, four)),
                  "max_param": max(float(np.max(np.abs(a))) for a in one),
                  "loss": [loss_one, loss_four], "max_pred_diff": float(np.max(np.abs(pred_one - pred_four)))}))
"""


def _env(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


def test_four_devices_make_the_same_update_as_one():
    out = subprocess.run([sys.executable, "-c", DATA_PARALLEL_CHECK], cwd=processes.REPO, env=_env(4),
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["loss"][0] == pytest.approx(result["loss"][1], rel=1e-5)
    assert result["max_param_diff"] < 1e-5 * max(1.0, result["max_param"])
    assert result["max_pred_diff"] < 1e-3  # years


def test_two_processes_train_together_and_agree(training_records, tmp_path):
    config = _config(training_records, **{**TINY, "num_train_steps": 12, "checkpoint_every": 6, "log_every": 3,
                                     "eval_every": 12})
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    workers = [subprocess.Popen(_main(config, tmp_path, f"--coordinator=localhost:{port}", "--num_processes=2",
                                      f"--process_id={i}"), cwd=processes.REPO, env=_env(2),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    prints = [next(line for line in out.splitlines() if "params sha256" in line) for out in outputs]
    assert prints[0].startswith("process 0/2: step 12") and prints[1].startswith("process 1/2: step 12")
    assert prints[0].split()[-1] == prints[1].split()[-1]
    run = json.loads((tmp_path / "run.json").read_text())
    assert (run["devices"], run["processes"]) == (4, 2) and run["conv"] == "depth_concat"  # XLA's, on 4 devices
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["kind"] == "train"] == [3, 6, 9, 12]  # written once, by process 0
    assert checkpointing.manager(tmp_path, keep=2, read_only=True).all_steps() == [6, 12]


def test_a_workdir_checkpointed_by_the_old_input_pipeline_is_refused_on_resume(tmp_path):
    # grain's DataLoader saved another iterator state than the dataset API restores: say so, never crash later.
    from spinejax import input_pipeline, train

    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps({"selection_sha256": "x"}))  # before input_version existed: the DataLoader
    with pytest.raises(ValueError, match="another input pipeline"):
        train._check_same_input_version(run_json)
    run_json.write_text(json.dumps({"input_version": input_pipeline.INPUT_VERSION}))
    train._check_same_input_version(run_json)
