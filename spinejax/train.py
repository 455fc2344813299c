"""The training loop: records in, checkpoints and metrics out.

train_and_evaluate(config, workdir) trains the model of `config` on the train split of
config.data.records_dir, evaluates on the validation split every config.eval_every steps, and keeps orbax
checkpoints in WORKDIR/checkpoints. A workdir that already holds a checkpoint is resumed from it, with the
input iterator where it was, unless the config or the records it reads changed: a changed config is refused;
changed records (rebuilt, another eligibility.csv) are refused too, or, with retrain_if_inputs_changed (what
./run.sh passes; analysis.ablation clears such a run itself), the run is cleared and trained again from step 0:
a finished model of other records is stale. Written to WORKDIR (by process 0): config.json (the config as
given), run.json (what the run resolved: plan hash, age head, data counts, fingerprints of the records it reads
and of their build, steps, devices), metrics.jsonl, tensorboard/, and summary.json at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import signal
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from spinejax import age_metrics, checkpointing, conv, distributed, inference, input_pipeline, losses, models, steps
from spinejax.errors import InputError
from spinejax.metric_writer import MetricWriter

# Config keys a resumed run may change: they do not alter what is computed (model.conv: how, not what).
# data.worker_count is not one: the batches do not depend on it (input_pipeline.train_loader), but the saved
# iterator state has the shape of the worker layout it was saved from.
RESUMABLE_CHANGES = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "data.worker_buffer_size",
                     "model.conv")

# Config keys added after runs were saved, with the value that computes what those runs computed: a saved
# config.json without one reads as holding it (resuming, comparing an ablation's seeds).
ADDED_KEYS = {"model.pooling": "mean"}


class NonFiniteError(RuntimeError):
    """The loss or the gradients stopped being finite; the last good checkpoint is kept."""


def selections(config) -> tuple[input_pipeline.Selection, input_pipeline.Selection]:
    """Train and validation records of the config. Validation follows the training population (eligible
    subjects when training is restricted to them) but never the data-size fraction."""
    data = config.data
    if not data.records_dir:
        raise InputError("config.data.records_dir is not set: pass --config.data.records_dir=RECORDS_DIR (the folder "
                         "data_prep.build_records wrote)")
    if data.eligible_only and not data.eligibility_csv:
        raise InputError("config.data.eligible_only trains on normal spines only, which needs "
                         "--config.data.eligibility_csv=ELIGIBILITY_DIR/eligibility.csv (data_prep.eligibility's "
                         "table); or set --config.data.eligible_only=False to train on every record")
    train = input_pipeline.select(data.records_dir, data.region, "train", plan_hash=data.plan_hash,
                                  eligibility_csv=data.eligibility_csv, eligible_only=data.eligible_only,
                                  fraction=data.fraction, subset_seed=data.subset_seed)
    validation = input_pipeline.select(data.records_dir, data.region, "validation", plan_hash=train.plan_hash,
                                       eligibility_csv=data.eligibility_csv, eligible_only=data.eligible_only)
    return train, validation


def build_state(config, head: losses.AgeHead, grid, total_steps: int, mesh):
    """(replicated fresh TrainState, its sharding) for `config` on `mesh`."""
    model = models.build(config.model, head.outputs)
    tx = steps.make_optimizer(config.optimizer, total_steps)
    replicated = NamedSharding(mesh, P())
    state = jax.jit(lambda: steps.create_train_state(model, head, tx, (*grid, 1), config.seed),
                    out_shardings=replicated)()
    return state, jax.tree.map(lambda _: replicated, state)


def params_fingerprint(state) -> str:
    """sha256 of the parameters' bytes (as this process holds them): equal on every host of one run."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state.params):
        digest.update(np.asarray(leaf.addressable_data(0)).tobytes())
    return digest.hexdigest()[:16]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, *, retrain_if_inputs_changed: bool = False
                       ) -> dict:
    """Trains (or resumes) the run of `config` in `workdir`; returns the last validation metrics.
    retrain_if_inputs_changed: a workdir trained on other records than `config` selects now is cleared
    (clear_run) and trained from step 0 instead of refused."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    is_writer = jax.process_index() == 0
    mesh = distributed.data_mesh()
    if config.batch_size % jax.device_count():
        raise ValueError(f"batch_size {config.batch_size} does not split over {jax.device_count()} devices")
    train_rows, val_rows = selections(config)
    epoch_records = len(train_rows.rows)
    if config.data.schedule_on_full_data and config.data.fraction < 1:
        epoch_records = len(input_pipeline.select(
            config.data.records_dir, config.data.region, "train", plan_hash=train_rows.plan_hash,
            eligibility_csv=config.data.eligibility_csv, eligible_only=config.data.eligible_only).rows)
    steps_per_epoch = max(1, epoch_records // config.batch_size)
    total_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
    head = losses.make_head(config.loss, train_rows.rows["age"].to_numpy())
    checkpoints = checkpointing.manager(workdir, config.keep_checkpoints)
    start = checkpoints.latest_step() or 0
    inputs = inputs_of(train_rows, val_rows)
    if start:  # before compiling anything: a wrong workdir should fail fast, a finished one return at once
        _check_resumable(workdir / "config.json", config)
    if start and retrain_if_inputs_changed and _differ(saved_inputs(workdir), inputs):
        # A model of other records is stale, finished or not: its outputs go, and it trains from step 0. Every
        # process has read run.json before process 0 removes it.
        distributed.barrier("spinejax_inputs_checked")
        if is_writer:
            print(f"{workdir}: trained on other records than it reads now (records rebuilt, or eligibility or "
                  "the data subset changed); training again from step 0", flush=True)
        checkpoints.close()
        if is_writer:
            clear_run(workdir)
        distributed.barrier("spinejax_run_cleared")
        checkpoints = checkpointing.manager(workdir, config.keep_checkpoints)
        start = 0
    if start:
        _check_same_inputs(workdir, inputs)
        if start >= total_steps and (workdir / "summary.json").is_file():
            print(f"{workdir}: already trained to step {start} of {total_steps}; nothing to do", flush=True)
            return json.loads((workdir / "summary.json").read_text())
        _check_same_input_version(workdir / "run.json")
    state, state_sharding = build_state(config, head, train_rows.grid, total_steps, mesh)
    train_step, predict_step = steps.jit_steps(mesh, state_sharding)

    iterator = iter(input_pipeline.train_loader(
        train_rows, local_batch=config.batch_size // jax.process_count(), seed=config.seed,
        augment_config=config.augment, worker_count=config.data.worker_count,
        worker_buffer_size=config.data.worker_buffer_size))
    if start:
        state = checkpointing.restore(checkpoints, start, checkpointing.abstract_like(state, state_sharding),
                                      iterator)
    run_facts = {"plan_hash": train_rows.plan_hash, "region": train_rows.region,
                 "grid": list(train_rows.grid), "head": dataclasses.asdict(head), "total_steps": total_steps,
                 "steps_per_epoch": steps_per_epoch, "train_records": len(train_rows.rows),
                 "validation_records": len(val_rows.rows), **inputs, "devices": jax.device_count(),
                 "processes": jax.process_count(), "platform": jax.devices()[0].platform,
                 "input_version": input_pipeline.INPUT_VERSION,
                 "conv": conv.resolve(config.model.conv, dtype=jnp.dtype(config.model.dtype)), "jax": jax.__version__}
    if is_writer:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
        (workdir / "run.json").write_text(json.dumps(run_facts, indent=2) + "\n")
    writer = MetricWriter(workdir, is_writer, resume_step=start)
    writer.console(f"training {config.data.region} on {len(train_rows.rows)} records ({steps_per_epoch} steps/epoch)"
                   f", validating on {len(val_rows.rows)}; {total_steps} steps of {config.batch_size} on "
                   f"{jax.device_count()} {run_facts['platform']} device(s), {jax.process_count()} process(es)"
                   + (f"; resumed at step {start}" if start else ""))

    preemption = _Preemption(checkpoints)
    pending, last_eval, timer = [], {}, _Throughput(config.batch_size)
    try:
        for step in range(start + 1, total_steps + 1):
            batch = distributed.global_batch(mesh, _device_part(next(iterator)))
            state, metrics = train_step(state, batch)
            pending.append(metrics)
            timer.step_done(first=(step == start + 1))
            evaluate_now = step % config.eval_every == 0 or step == total_steps
            save_now = evaluate_now or step % config.checkpoint_every == 0
            stopping = preemption.reached(step)
            if pending and (step % config.log_every == 0 or save_now or stopping):
                _log_train(writer, step, total_steps, pending, timer)
                pending = []
            if evaluate_now:
                predicted = inference.predict(predict_step, state, val_rows, mesh, config.batch_size)
                last_eval = {f"val_{k}": v for k, v in
                             age_metrics.age_metrics(predicted, val_rows.rows["age"].to_numpy()).items()}
                writer.write(step, last_eval, "eval")
                writer.console(f"step {step}: validation MAE {last_eval['val_mae']:.2f} y, "
                               f"R2 {last_eval['val_r2']:.3f}, r {last_eval['val_pearson_r']:.3f} "
                               f"(n={last_eval['val_n']})")
            if save_now or stopping:
                checkpointing.save(checkpoints, step, state, iterator,
                                   metrics={k: float(v) for k, v in last_eval.items()} if evaluate_now else None)
            if stopping:
                writer.console(f"preempted: saved step {step}; run again to resume")
                break
    finally:
        checkpoints.wait_until_finished()
        iterator.close()  # stops grain's threads and worker processes now, not at interpreter exit
        preemption.release()
        writer.close()
    print(f"process {jax.process_index()}/{jax.process_count()}: step {int(state.step)}, "
          f"params sha256 {params_fingerprint(state)}", flush=True)
    summary = {"step": int(state.step), "total_steps": total_steps, **last_eval,
               "best_step": checkpointing.best_step(checkpoints)}
    if is_writer and int(state.step) == total_steps:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _device_part(local: dict) -> dict:
    return {k: local[k] for k in ("volume", "age", "weight")}


def _log_train(writer: MetricWriter, step: int, total_steps: int, pending: list, timer) -> None:
    values = jax.device_get(pending)
    if min(m["finite"] for m in values) < 1:
        bad = step - len(values) + 1 + next(i for i, m in enumerate(values) if m["finite"] < 1)
        raise NonFiniteError(f"loss or gradients not finite at step {bad} (loss {values[-1]['loss']}); "
                             "no update was applied from that step on and the last good checkpoint is kept. "
                             "Lower optimizer.learning_rate or check the input records.")
    weight = sum(float(m["weight_sum"]) for m in values)
    metrics = {"loss": float(np.mean([m["loss"] for m in values])),
               "mae": sum(float(m["abs_error_sum"]) for m in values) / max(weight, 1.0),
               "grad_norm": float(np.mean([m["grad_norm"] for m in values])),
               "samples_per_second": timer.rate()}
    writer.write(step, metrics, "train")
    writer.console(f"step {step}/{total_steps}: loss {metrics['loss']:.4f}, train MAE {metrics['mae']:.2f} y, "
                   f"{metrics['samples_per_second']:.1f} samples/s, ETA {timer.eta(step, total_steps)}")


class _Throughput:
    """Samples per second over steps after the first (which includes compilation)."""

    def __init__(self, batch_size: int):
        self.batch_size, self.start, self.steps = batch_size, None, 0

    def step_done(self, first: bool) -> None:
        if first:
            self.start, self.steps = None, 0
        elif self.start is None:
            self.start = time.perf_counter()
        else:
            self.steps += 1

    def rate(self) -> float:
        if self.start is None or self.steps == 0:
            return float("nan")
        return self.steps * self.batch_size / (time.perf_counter() - self.start)

    def eta(self, step: int, total: int) -> str:
        rate = self.rate()
        if not np.isfinite(rate):
            return "?"
        seconds = int((total - step) * self.batch_size / rate)
        return f"{seconds // 60}m{seconds % 60:02d}s"


class _Preemption:
    """Whether to save and stop now: SIGTERM in a single process; jax's preemption sync point (which every
    host reaches at the same step) in a multi-process run, where jax.distributed handles the signal."""

    def __init__(self, checkpoints):
        self._checkpoints = checkpoints
        self._event = threading.Event()
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())

    def reached(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self._event.is_set()
        return self._checkpoints.reached_preemption(step)

    def release(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _check_resumable(saved_path: Path, config) -> None:
    """Refuses to resume a workdir under a config that changes what is computed."""
    if not saved_path.is_file():
        return
    saved = {**ADDED_KEYS, **flatten(json.loads(saved_path.read_text()))}
    now = {**ADDED_KEYS, **flatten(json.loads(config.to_json_best_effort()))}
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise ValueError(f"{saved_path.parent} holds a run of another config (differs in {', '.join(changed)}); "
                         "use a new --workdir or the same config")


def selection_fingerprint(train: input_pipeline.Selection, validation: input_pipeline.Selection) -> str:
    """sha256 of which records train and validate (keys and regions): it moves when eligibility.csv, the
    records or the subset change, so a resumed run is known to read what it started on."""
    digest = hashlib.sha256()
    for selection in (train, validation):
        rows = selection.rows[["series_key", "region"]].sort_values(["series_key", "region"])
        digest.update(f"{selection.split}:{selection.plan_hash}\n".encode())
        digest.update(rows.to_csv(index=False).encode())
    return digest.hexdigest()


def inputs_of(train: input_pipeline.Selection, validation: input_pipeline.Selection) -> dict:
    """What a run reads, as run.json keeps it: which records train and validate (`selection_sha256`) and the
    records build they come from (`records_build`, the manifest's fingerprint of every input, plan, secret and
    code: it moves when a row is fixed and the records are rebuilt, even under the same keys)."""
    return {"selection_sha256": selection_fingerprint(train, validation),
            "records_build": input_pipeline.read_manifest(Path(train.records_dir)).get("build_fingerprint")}


def saved_inputs(workdir) -> dict | None:
    """inputs_of the run in WORKDIR as its run.json recorded them; None without run.json."""
    run_json = Path(workdir) / "run.json"
    if not run_json.is_file():
        return None
    run = json.loads(run_json.read_text())
    return {key: run.get(key) for key in ("selection_sha256", "records_build")}


def _differ(saved: dict | None, now: dict) -> bool:
    """Whether saved inputs differ from `now`; a key the saved run.json lacks (written before it existed) is not
    compared."""
    return saved is not None and any(saved.get(k) is not None and saved[k] != now[k] for k in now)


def inputs_changed(workdir, config) -> bool:
    """True when WORKDIR holds a run of other records than `config` reads now: a finished one is stale.
    spinejax.main refuses to resume such a run, or trains it again with --retrain_if_inputs_changed."""
    return _differ(saved_inputs(workdir), inputs_of(*selections(config)))


# What train_and_evaluate writes in a workdir, in the order a retrain removes them: summary.json first, so a
# clearing cut short never looks finished, run.json last, so what is left is still known to be stale.
# predictions/ (spinejax.evaluate's) stays: it is older than the new summary.json, so ./run.sh and the ablation
# evaluate again.
RUN_OUTPUTS = ("summary.json", "metrics.jsonl", "tensorboard", "checkpoints", "run.json")


def clear_run(workdir) -> None:
    """Removes WORKDIR's RUN_OUTPUTS (what spinejax.main wrote), so the run trains again from step 0; config.json
    and anything else in WORKDIR stay. A link is removed, never followed."""
    for name in RUN_OUTPUTS:
        path = Path(workdir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _check_same_inputs(workdir: Path, inputs: dict) -> None:
    """Refuses to resume a workdir whose training or validation records are no longer the same."""
    if _differ(saved_inputs(workdir), inputs):
        raise ValueError(f"{workdir} was trained on another selection of records (eligibility.csv, the "
                         "records or the data subset changed since); use a new --workdir, or pass "
                         "--retrain_if_inputs_changed to train this one again from step 0")


def _check_same_input_version(run_json: Path) -> None:
    """Refuses to resume a workdir whose saved input iterator another input pipeline wrote (input_pipeline's
    INPUT_VERSION; run.json without one is version 1, grain's DataLoader): its state cannot be restored."""
    if not run_json.is_file():
        return
    saved = json.loads(run_json.read_text()).get("input_version", 1)
    if saved != input_pipeline.INPUT_VERSION:
        raise ValueError(f"{run_json.parent} was checkpointed by another input pipeline (version {saved}, this "
                         f"code writes {input_pipeline.INPUT_VERSION}) and cannot resume here; use a new --workdir, or "
                         "delete this one to retrain")


def flatten(tree: dict, separator: str = ".", prefix: str = "") -> dict:
    """Nested dicts -> {'a.b.c': leaf} (joined with `separator`)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, separator, f"{prefix}{key}{separator}"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
