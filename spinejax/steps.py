"""Train state, optimizer and the jit-compiled train and predict steps (pure functions of arrays).

Data parallelism is jit over sharded inputs: the batch is split over the mesh's 'data' axis and the state
is replicated, so XLA inserts the cross-device sums. Every batch mean (the loss, and batch norm's
statistics) is a mean over the *global* batch, which makes a step on N devices the same update as on one
device with the same global batch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from spinejax import losses


class TrainState(train_state.TrainState):
    """Parameters, optimizer state and step (flax's TrainState) plus batch-norm statistics and the dropout key."""

    batch_stats: Any = None
    dropout_key: jax.Array = None
    head: losses.AgeHead = struct.field(pytree_node=False, default=None)


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then cosine decay to 0 at `total_steps`."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(total_steps, warmup + 1))


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """AdamW with warm-up and cosine decay and global-norm clipping; no weight decay on biases or BN scales."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.adamw(learning_rate_schedule(config, total_steps), b1=config.b1, b2=config.b2,
                    weight_decay=config.weight_decay, mask=decay_mask))


def create_train_state(model: nn.Module, head: losses.AgeHead, tx, input_shape, seed: int) -> TrainState:
    """Fresh state; input_shape is one example's [slices, rows, cols, 1]."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables["batch_stats"], dropout_key=dropout_key, head=head)


def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One optimizer step on a global batch.

    batch: volume [batch, slices, rows, cols, 1] float16 or float32 (the model casts it), age [batch] years,
    weight [batch] (1 real, 0 pad).
    Returns the new state and metrics (loss, absolute error sum, weight sum, gradient norm, finite flag).
    A step whose loss or gradients are not finite leaves the state unchanged and reports finite=0; the loop
    stops on it.
    """
    dropout_key = jax.random.fold_in(state.dropout_key, state.step)
    weight = batch["weight"]

    def loss_fn(params):
        output, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, batch["volume"], train=True,
            rngs={"dropout": dropout_key}, mutable=["batch_stats"])
        per_example = losses.per_example_loss(output, batch["age"], state.head)
        loss = jnp.sum(per_example * weight) / jnp.maximum(jnp.sum(weight), 1.0)
        return loss, (output, updates["batch_stats"])

    (loss, (output, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    stepped = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), stepped, state)
    error = jnp.abs(losses.predicted_age(output, state.head) - batch["age"])
    metrics = {"loss": loss, "abs_error_sum": jnp.sum(error * weight), "weight_sum": jnp.sum(weight),
               "grad_norm": grad_norm, "finite": finite.astype(jnp.float32)}
    return new_state, metrics


def predict_step(state: TrainState, volume: jnp.ndarray) -> jnp.ndarray:
    """[batch, slices, rows, cols, 1] -> [batch] predicted age in years (inference mode: running BN stats)."""
    output = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, volume, train=False)
    return losses.predicted_age(output, state.head)


def jit_steps(mesh, state_sharding):
    """The steps compiled for `mesh`: (train_step, predict_step), state donated, batches split over 'data'."""
    data = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    train = jax.jit(train_step, in_shardings=(state_sharding, data), out_shardings=(state_sharding, replicated),
                    donate_argnums=(0,))
    predict = jax.jit(predict_step, in_shardings=(state_sharding, data), out_shardings=data)
    return train, predict
