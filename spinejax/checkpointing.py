"""orbax checkpoints of a run: train state and the grain iterator state in one step directory.

WORKDIR/checkpoints/<step>/{state, data} holds the TrainState (parameters, optimizer, batch norm, step,
dropout key) and each process's input iterator position, so a resumed run continues with exactly the
batches the uninterrupted run would have seen. Kept: the last `keep` checkpoints and the one with the best
validation MAE (saved with each evaluation as its metrics).
"""

from __future__ import annotations

from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = "val_mae"


def manager(workdir, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    """CheckpointManager of WORKDIR/checkpoints keeping the last `keep` steps and the best by validation MAE."""
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(keep),
        checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], reverse=True, n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    # best_fn also makes orbax write each step's metrics, which BestN and best_step read back.
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=lambda m: m[BEST_METRIC],
                                           best_mode="min", create=not read_only, read_only=read_only)
    return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options,
                                 item_names=("state", "data"))


def save(checkpoints: ocp.CheckpointManager, step: int, state, iterator, metrics: dict | None = None) -> None:
    """Starts an asynchronous save of `state` and `iterator` at `step` (metrics: floats, with BEST_METRIC
    when the step was evaluated)."""
    checkpoints.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   data=grain.checkpoint.CheckpointSave(iterator)),
                     metrics=metrics, force=True)


def restore(checkpoints: ocp.CheckpointManager, step: int, abstract_state, iterator=None):
    """The state saved at `step`, laid out like `abstract_state` (shapes, dtypes, shardings); the iterator,
    when given, is moved to its saved position."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    return checkpoints.restore(step, args=ocp.args.Composite(**items))["state"]


def best_step(checkpoints: ocp.CheckpointManager) -> int | None:
    """The kept step with the lowest validation MAE, or None when no kept step was evaluated."""
    scored = []
    for step in checkpoints.all_steps():
        metrics = checkpoints.metrics(step)
        if metrics and BEST_METRIC in metrics:
            scored.append((metrics[BEST_METRIC], step))
    return min(scored)[1] if scored else None


def abstract_like(state, sharding):
    """ShapeDtypeStructs of `state` placed with `sharding` (what orbax restores into)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, sharding)
