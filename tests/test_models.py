"""The age model's own pieces against independent references: pooling by reshape against flax's max_pool,
space-to-depth against a loop over voxels, and the network's shapes and inference mode."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import default
from spinejax import models


@pytest.mark.parametrize("shape, window", [((2, 7, 9, 5, 3), (2, 2, 2)), ((1, 6, 8, 4, 2), (1, 2, 2)),
                                           ((3, 5, 5, 5, 1), (1, 1, 1))])
def test_max_pool_by_reshape_equals_flax_max_pool_and_its_gradient(shape, window):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ours = lambda v: models.max_pool(v, window)
    theirs = lambda v: nn.max_pool(v, window, strides=window, padding="VALID")
    np.testing.assert_array_equal(ours(x), theirs(x))
    np.testing.assert_allclose(jax.grad(lambda v: (ours(v) ** 2).sum())(x),
                               jax.grad(lambda v: (theirs(v) ** 2).sum())(x), rtol=1e-6)


def test_space_to_depth_moves_each_block_into_channels():
    x = np.random.default_rng(1).normal(size=(2, 4, 6, 5, 3)).astype(np.float32)  # odd edge: dropped, as pooling
    out = np.asarray(models.space_to_depth(x, (2, 2, 2)))
    assert out.shape == (2, 2, 3, 2, 24)
    for b, i, j, k in np.ndindex(2, 2, 3, 2):
        block = x[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, 2 * k:2 * k + 2]  # [2, 2, 2, 3]
        np.testing.assert_array_equal(out[b, i, j, k], block.reshape(-1))


def test_the_cpu_preset_network_shapes_and_inference_mode():
    config = default.get_config("cpu")
    model = models.build(config.model, 1)
    volume = np.random.default_rng(2).normal(size=(2, 16, 192, 48, 1)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), volume, train=False)
    out, features = model.apply(variables, volume, train=False, return_features=True)
    assert out.shape == (2, 1) and out.dtype == np.float32 and features.shape[-1] == config.model.head_channels
    again = model.apply(variables, volume, train=False)
    np.testing.assert_array_equal(out, again)  # inference: running statistics, no dropout
    _, updates = model.apply(variables, volume, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.PRNGKey(1)})
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), updates["batch_stats"],
                                         variables["batch_stats"]))
    assert max(moved) > 0  # training updates the batch-norm statistics
