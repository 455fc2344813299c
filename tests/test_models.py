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


def test_masked_pooling_reads_the_spine_only():
    """A spine in a taller grid (more zero rows below it, a multiple of the network's stride) is the same spine:
    the masked poolings give the same output, and the SFCN's mean over the grid does not (the background's
    features dilute it). Then each pooling of a feature map small enough to work out by hand."""
    config = default.get_config("cpu")
    rng = np.random.default_rng(3)
    spine = np.zeros((2, 16, 96, 48, 1), np.float32)
    spine[:, 5:11, 8:56, 12:36] = rng.normal(size=(2, 6, 48, 24, 1))  # 40 rows clear: the network's reach
    taller = np.concatenate([spine, np.zeros((2, 16, 64, 48, 1), np.float32)], axis=2)
    outputs = {}
    for pooling in ("mean", "masked_mean", "masked_rows"):
        config.model.pooling = pooling
        model = models.build(config.model, 1)
        variables = model.init(jax.random.PRNGKey(0), spine, train=False)
        variables = {k: variables[k] for k in ("params", "batch_stats")}  # not Grad-CAM's perturbations
        # Freshly initialised, every layer maps zeros to zeros (no biases, identity batch norm): beyond the
        # convolutions' reach from the spine, the extra rows are zeros, as the padding was.
        if pooling == "masked_rows":  # the head reads each row: the taller grid's extra rows get zero weights
            kernel = np.asarray(variables["params"]["Dense_0"]["kernel"])
            assert kernel.shape == (6 * 32, 1)  # 96 rows / 16 (stem 2, pools 2, 2, 2) x 32 channels
            longer_kernel = np.concatenate([kernel, np.zeros((4 * 32, 1), np.float32)])
            taller_variables = {**variables, "params": {**variables["params"], "Dense_0": {
                **variables["params"]["Dense_0"], "kernel": longer_kernel}}}
            outputs[pooling] = (model.apply(variables, spine, train=False),
                                model.apply(taller_variables, taller, train=False))
            continue
        outputs[pooling] = (model.apply(variables, spine, train=False), model.apply(variables, taller, train=False))
    np.testing.assert_allclose(*outputs["masked_mean"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(*outputs["masked_rows"], rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(outputs["mean"][0]) - np.asarray(outputs["mean"][1])).max() > 1e-3
    # By hand: one slice of 2 rows x 2 columns, one channel, the top right voxel outside the mask.
    features = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 1, 2, 2, 1)
    inside = np.array([1.0, 0.0, 1.0, 1.0], np.float32).reshape(1, 1, 2, 2, 1)
    np.testing.assert_allclose(models.pool_features(features, inside, "mean"), [[2.5]])
    np.testing.assert_allclose(models.pool_features(features, inside, "masked_mean"), [[8.0 / 3.0]], rtol=1e-6)
    np.testing.assert_allclose(models.pool_features(features, inside, "masked_rows"), [[1.0, 3.5]])
    with pytest.raises(ValueError, match="unknown model.pooling"):
        models.pool_features(features, inside, "max")
