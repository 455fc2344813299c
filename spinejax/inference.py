"""Predicted ages of every record of a selection, on any number of devices and processes."""

from __future__ import annotations

import jax
import numpy as np

from spinejax import distributed, input_pipeline


def predict(predict_step, state, selection: input_pipeline.Selection, mesh, global_batch: int,
            worker_count: int = 0) -> np.ndarray:
    """Predicted age (years) of every record of `selection`, in its row order: [n] float64, on every process."""
    count = len(selection.rows)
    loader = input_pipeline.eval_loader(selection, global_batch=global_batch, process_count=jax.process_count(),
                                        process_index=jax.process_index(), worker_count=worker_count)
    layout = input_pipeline.eval_layout(count, global_batch, jax.process_count(), jax.process_index())
    outputs, seen = [], []
    for local in loader:
        batch = distributed.global_batch(mesh, {"volume": local["volume"]})
        outputs.append(distributed.gather(predict_step(state, batch["volume"])))
        seen.append(local["index"])
    if not np.array_equal(np.concatenate(seen), layout):
        raise RuntimeError("evaluation input came back out of order")
    return np.concatenate(outputs)[:count].astype(np.float64)
