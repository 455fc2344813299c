"""A training workdir, read back: the one reader of what spinejax.main wrote (config.json, run.json and the
orbax checkpoints); evaluation, Grad-CAM and the bundle export go through it.

    W/config.json     the config as given (paths absolute)
    W/run.json        what the run resolved: plan hash, region, grid, age head, counts, devices
    W/checkpoints/    orbax steps (spinejax/checkpointing.py); the best by validation MAE is kept
    W/summary.json    the last validation metrics, when training finished
    W/predictions/    spinejax.evaluate's tables of the run's own records
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import ml_collections

from spinejax import checkpointing, distributed, losses, train
from spinejax.errors import InputError


def load_run(workdir) -> tuple[ml_collections.ConfigDict, dict, losses.AgeHead]:
    """(config, run facts, age head) of the run in `workdir`."""
    workdir = Path(workdir)
    for name in ("config.json", "run.json"):
        if not (workdir / name).is_file():
            raise InputError(f"{workdir / name}: missing; is {workdir} a spinejax.main workdir?")
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    run = json.loads((workdir / "run.json").read_text())
    head = run["head"]
    head = losses.AgeHead(**{**head, "bin_centers_years": tuple(head["bin_centers_years"])})
    return config, run, head


def restore(workdir, checkpoint: str = "best"):
    """(state, mesh, step, state sharding) of the chosen checkpoint: 'best' (lowest validation MAE), 'latest'
    or a step number."""
    config, run, head = load_run(workdir)
    manager = checkpointing.manager(workdir, keep=max(1, config.keep_checkpoints), read_only=True)
    if checkpoint == "best":
        step = checkpointing.best_step(manager) or manager.latest_step()
    elif checkpoint == "latest":
        step = manager.latest_step()
    else:
        step = int(checkpoint) if str(checkpoint).isdigit() else None
        if step not in manager.all_steps():
            raise InputError(f"{workdir}/checkpoints has no checkpoint {checkpoint!r} (has steps "
                             f"{manager.all_steps()}, or 'best', 'latest')")
    if step is None:
        raise InputError(f"{workdir}/checkpoints: no checkpoint to evaluate")
    mesh = distributed.data_mesh()
    state, sharding = train.build_state(config, head, tuple(run["grid"]), run["total_steps"], mesh)
    state = checkpointing.restore(manager, step, checkpointing.abstract_like(state, sharding))
    return state, mesh, step, sharding


def evaluation_folder(workdir: Path, checkpoint: str, records_dir: str, own_records: str) -> Path:
    """Where an evaluation goes by default: W/predictions for the best checkpoint on the run's own records
    (what the report reads), else W/predictions-<checkpoint>-<records> so nothing of the run's is replaced."""
    if checkpoint == "best" and Path(records_dir).resolve() == Path(own_records).resolve():
        return workdir / "predictions"
    tag = hashlib.sha256(str(Path(records_dir).resolve()).encode()).hexdigest()[:8]
    return workdir / f"predictions-{checkpoint}-{tag}"
